# Runs under MicroPython (unix port): what the node's spool (firmware/spool.py) costs the flash, at the
# default rates, on littlefs itself. The spool runs over a VfsLfs2 filesystem (the ESP32 port's, with its
# default geometry: 4096-byte blocks, 32-byte reads and programs) on a RAM block device that counts
# every erase and program, for one simulated hour of the default device config: three simulated
# sensors at 1000 ms, batches of up to 60 readings or 5 s (15 readings each), sent as they are made.
# Two hours are measured: the service acknowledging each batch at once, and the service away (nothing
# acknowledged, the spool growing). Prints one JSON line.
#   MICROPYPATH=.frozen:<repo or .mpy folder> micropython tools/bench/mp_spool_wear.py
import json
import sys

import vfs

# This script's folder holds a firmware.py of its own (the bench): the node's package comes first.
sys.path[:] = [p for p in sys.path if not p.endswith("bench")]

from firmware.assemble import batcher as Batcher
from firmware.config import _DEFAULTS, boot_spool, new_spool
from firmware.sim.wiring import signal

BLOCK = 4096


class CountingFlash:
    """A RAM block device with littlefs's extended interface, counting erases and programs."""

    def __init__(self, blocks):
        self.data = bytearray(blocks * BLOCK)
        self.erases = self.programs = self.programmed = 0

    def readblocks(self, n, buf, offset=0):
        at = n * BLOCK + offset
        buf[:] = self.data[at : at + len(buf)]

    def writeblocks(self, n, buf, offset=None):
        if offset is None:  # the simple interface: erase, then program the whole block
            offset = 0
            self.erases += 1
        at = n * BLOCK + offset
        self.data[at : at + len(buf)] = buf
        self.programs += 1
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // BLOCK
        if op == 5:
            return BLOCK
        if op == 6:
            self.erases += 1
            return 0
        return 0


class Clock:
    now = 0

    def ticks_diff(self, a, b):
        return a - b


def hour(acked):
    flash = CountingFlash(256)  # 1 MiB of littlefs: room for the default spool's hour
    vfs.VfsLfs2.mkfs(flash)
    vfs.mount(vfs.VfsLfs2(flash), "/flash")
    limits = _DEFAULTS["spool"]
    spool = new_spool("/flash/spool", limits["max_bytes"], limits["segment_bytes"], limits["window"], 20000, Clock())
    names = ["temperature", "humidity", "pressure"]
    batcher = Batcher(names, _DEFAULTS["batch"]["max_readings"], _DEFAULTS["batch"]["max_age_ms"])
    batcher.seq = boot_spool(spool)
    sources = [signal(name, i + 1, None) for i, name in enumerate(names)]
    flash.erases = flash.programs = flash.programmed = 0
    made = payload_bytes = 0
    t0 = 1795311729000
    for second in range(3600):
        now = t0 + second * 1000
        for i in range(3):
            full = batcher.add(i, sources[i].read(now), now, second * 1000, lambda a, b: a - b)
        if full or batcher.due(second * 1000 + 1000, lambda a, b: a - b):
            payload = batcher.encode()
            spool.append(payload, batcher.seq)
            batcher.done()
            made += 1
            payload_bytes += len(payload)
            if acked:  # sent, PUBACKed and acknowledged by the service before the next batch
                sent = spool.next()
                spool.sent(sent, second * 1000)
                spool.acked([spool._w[-1][0]], [])
    vfs.umount("/flash")
    return {
        "batches": made,
        "payload_bytes": payload_bytes,
        "record_writes": spool.writes,
        "spool_bytes_end": spool.bytes,
        "erases": flash.erases,
        "programs": flash.programs,
        "programmed_bytes": flash.programmed,
    }


print(json.dumps({"acknowledged": hour(True), "service_away": hour(False)}))
