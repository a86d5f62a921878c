# The node's status with its health (docs/protocol.md), made every minute and on connecting:
# firmware/app.py loads this module for each status and drops it again (app.seldom), so that its code
# is not in RAM between; only its names stay interned.
import gc
import time

from shared import protocol


def status(node, online):
    """The status payload with the node's health (docs/protocol.md); "t" once the clock is known."""
    board = node.board
    gc.collect()
    health = {
        "uptime_s": uptime(node) // 1000,
        "heap_free": gc.mem_free(),
        "heap_largest": largest(),
        "reset_cause": board.reset_cause,
        "boot_count": node.boot_count,
        "fw": node.fw,
    }
    rssi = board.rssi()
    if rssi is not None:
        health["rssi_dbm"] = rssi
    t = board.now_ms()
    health["ntp"] = "synced" if t else "unsynced"
    return protocol.encode_status(online, counters(node), node.config_error, node.cert_id, t, health)


def counters(node):
    """The node's counts (the status's `counters`)."""
    driver_errors = 0
    for group in node.groups:
        driver_errors += group.driver.errors
    spool = node.spool
    publisher = node.publisher
    return {
        "dropped": spool.dropped,
        "read_errors": node.read_errors,
        "driver_errors": driver_errors,
        "reconnects": publisher.reconnects,
        "queued": spool.queued,
        "queued_bytes": spool.bytes,
        "refused": spool.refused,
        "resent": spool.resent,
        "bad_acks": publisher.bad_acks + publisher.client.skipped,
        "unsynced": publisher.unsynced,
        "oom": node.oom,
        "loop_errors": node.loop_errors,
    }


def uptime(node):
    """ms since boot, from the ticks since the last status: a minute or so apart, so never wrapped."""
    now = node.board.ticks_ms()
    node._up_ms += time.ticks_diff(now, node._up_ticks)
    node._up_ticks = now
    return node._up_ms


def largest():
    """The largest block the heap can give now, found by trying, a collection after each try."""
    low, high = 0, gc.mem_free()
    while high - low > 64:
        middle = (low + high) // 2
        try:
            bytearray(middle)
            low = middle
        except MemoryError:
            high = middle
        gc.collect()
    return low
