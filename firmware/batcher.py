# Readings accumulate in preallocated arrays and leave as one encoded batch, by count or by age.
from array import array

from shared import protocol


class Batcher:
    def __init__(self, sensor_names, max_readings, max_age_ms):
        if not 0 < max_readings <= protocol.MAX_READINGS:
            raise ValueError("batch max_readings must be 1.." + str(protocol.MAX_READINGS))
        self.sensor_names = list(sensor_names)
        self.max_readings = max_readings
        self.max_age_ms = max_age_ms
        self._offsets = array("l", [0] * max_readings)
        self._indexes = bytearray(max_readings)
        self._values = array("d", [0.0] * max_readings)
        self._count = 0
        self._t0_ms = 0
        self._t0_ticks = 0
        self.seq = 0

    def __len__(self):
        return self._count

    def add(self, sensor_index, value, now_ms, now_ticks, ticks_diff):
        """Add one reading; return True when the batch is full."""
        if self._count == 0:
            self._t0_ms = now_ms
            self._t0_ticks = now_ticks
        i = self._count
        self._offsets[i] = ticks_diff(now_ticks, self._t0_ticks)
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

    def flush(self):
        """Encode and clear the batch; None if it is empty."""
        if not self._count:
            return None
        payload = protocol.encode_batch(self.seq, self._t0_ms, self.sensor_names, self._rows())
        self.seq += 1
        self._count = 0
        return payload
