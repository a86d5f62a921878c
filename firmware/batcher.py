# Readings accumulate in preallocated arrays and leave as one encoded batch, by count or by age.
#
# Time (docs/reliability.md, "Time"): a reading's time is the batch's t0 plus its offset in ticks, so
# a batch is monotonic whatever the clock does. Across batches t0 is the clock's time, but never at or
# before the previous batch's last reading: a clock stepped back (an NTP correction) costs the gap
# between two batches until real time catches up, and never reorders or repeats a timestamp. Within a
# batch a sensor's readings are at least 1 ms apart (a sensor sampled twice in one millisecond moves
# the second by 1 ms), so (device, sensor, ms) names one reading. Before the board knows the time
# (now_ms 0), a batch's t0 is -1 - (ms since boot): the publisher gives it its true time once the
# clock is known (boot_ms, the epoch ms at boot_ticks, found at the first reading with a clock).
from shared import protocol


class Batcher:
    # Made by firmware/assemble.py: batcher() (start-up code, not kept in RAM).

    def __len__(self):
        return self._count

    def add(self, sensor_index, value, now_ms, now_ticks, ticks_diff):
        """Add one reading (now_ms: the clock's epoch ms, 0 while unknown); True when the batch is full."""
        last = self._last
        if self._count == 0:
            self._t0_ticks = now_ticks
            since_boot = ticks_diff(now_ticks, self.boot_ticks)
            if now_ms:
                if not self.boot_ms:
                    self.boot_ms = now_ms - since_boot
                    if self._rel_end >= 0:  # batches before the clock: they end before this one
                        self._end = max(self._end, self.boot_ms + self._rel_end)
                self._t0_ms = max(now_ms, self._end + 1)
            else:
                self._t0_ms = -1 - max(since_boot, self._rel_end + 1)
            for i in range(len(last)):
                last[i] = -1
        i = self._count
        offset = ticks_diff(now_ticks, self._t0_ticks)
        if offset <= last[sensor_index]:
            offset = last[sensor_index] + 1
        last[sensor_index] = offset
        self._offsets[i] = offset
        self._indexes[i] = sensor_index
        self._values[i] = value
        self._count = i + 1
        return self._count >= self.max_readings

    def due(self, now_ticks, ticks_diff):
        """True when the batch has readings and is old enough to send."""
        return self._count > 0 and ticks_diff(now_ticks, self._t0_ticks) >= self.max_age_ms

    def _rows(self):
        for i in range(self._count):
            yield self._offsets[i], self._indexes[i], self._values[i]

    def encode(self):
        """The batch encoded; None if it is empty. The batch stays until done(): a batch that could
        not be kept (no room in the heap for the spool's write) is tried again, not lost."""
        if not self._count:
            return None
        t0 = self._t0_ms
        # What done() will set, worked out here: on a 32-bit board these are big integers, which
        # allocate, and done() must not fail once the spool holds the batch.
        self._next = t0 + max(self._last) if t0 >= 0 else -1 - t0 + max(self._last)
        self._next_seq = self.seq + 1
        return protocol.encode_batch(self.seq, t0, self.sensor_names, self._rows())

    def done(self):
        """The encoded batch is kept: clear it; the next batch takes the next sequence. Allocates
        nothing."""
        if self._t0_ms >= 0:
            self._end = self._next
        else:
            self._rel_end = self._next
        self.seq = self._next_seq
        self._count = 0
