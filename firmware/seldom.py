# What the node runs now and then, besides its status (firmware/health.py): the clock's anchor (once
# per boot), a batch made before the clock was known (given its time when it goes), the end of an
# early-crash count (once per boot), stopping, the heap report of --stats-every. firmware/app.py loads
# this module for each use and drops it again (app.seldom), so that its code is not in RAM between
# uses; only its names stay interned. Making the node is firmware/assemble.py, alike.
import json
import os
import time

# The bundle's config files that the node itself writes (firmware/config.py reads them at start-up): the
# last config that ran five minutes (or to a clean stop) without an error, and a later one on trial.
LAST_GOOD = "config.last-good.json"
TRYING = "config.trying.json"


def anchor(node, epoch):
    """The clock is known: this boot's batches made before it can have their time (the epoch ms at
    boot, batcher.boot_ms). Kept on flash too, for a reboot (firmware/config.py: boot_spool reads it
    back), and traced."""
    spool = node.spool
    boot_ms = spool.anchors[epoch] = node.batcher.boot_ms
    with open(spool.folder + "/anchors", "a") as f:
        f.write(str(epoch) + " " + str(boot_ms) + "\n")
    node.board.trace(('{"anchor":' + str(epoch) + ',"boot_ms":' + str(boot_ms) + "}").encode())


def timed(publisher, payload, k):
    """A batch made before the clock was known (t0 = -1 - ms since its boot; k: the comma before
    "t0") with its true time from its boot's anchor; None while this boot's clock is unknown (it
    waits), or for a batch of an earlier boot that never knew it: refused, counted (unsynced) and
    taken out of the spool, never sent with a made-up time."""
    spool = publisher.spool
    seq = int(payload[13:k])
    end = payload.find(b",", k + 6)
    boot = spool.seq >> 20
    epoch = min(seq >> 20, boot)  # this boot's later epochs share its anchor
    boot_ms = spool.anchors.get(epoch)
    if boot_ms is None:
        if epoch < boot:
            spool.acked((seq,), ())
            publisher.unsynced += 1
        else:
            publisher._held = payload  # asked again each turn: not loaded again until the clock is known
        return None
    return payload[: k + 6] + str(boot_ms - 1 - int(payload[k + 6 : end])).encode() + payload[end:]


def stable(node):
    """Five minutes up (or a clean stop): this boot did not end early, the count of those starts
    again; a config being tried (TRYING) that the node runs without an error has
    worked and becomes the last good one."""
    path = node._boot_file  # <bundle>/boot
    with open(path, "w") as f:
        f.write(str(node.boot_count) + " 0")
    node._boot_file = None
    if node.config_error is None:  # neither safe mode nor the fallback: config.json is running
        try:
            os.rename(path[:-4] + TRYING, path[:-4] + LAST_GOOD)
        except OSError:
            pass  # no new config was being tried


def stop(publisher, wait):
    """The publisher announces "offline" (retained), waits for its PUBACK with wait(ms), and
    disconnects."""
    from firmware.mqtt import UP

    client = publisher.client
    if client.state == UP:
        try:
            client.publish(publisher.status_topic, publisher.status(False), 1, True)
            while client.inflight:
                wait(20)
                client.step()
        except Exception:  # MQTTError: the will says offline for us
            pass
        client.disconnect()


def print_heap(node, alloc, free):
    """The heap report of --stats-every (the unix port's benchmarks): the heap after a collection,
    measured by the caller before this module was loaded, and the spool's counts."""
    spool = node.spool
    report = {
        "alloc": alloc,
        "free": free,
        "device_s": time.ticks_diff(node.board.ticks_ms(), node.batcher.boot_ticks) // 1000,
        "queued": spool.queued,
        "dropped": spool.dropped,
        "writes": spool.writes,
    }
    print("heap:", json.dumps(report))
