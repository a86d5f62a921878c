"""The messages the load generator sends, built with the node's own encoder (shared/protocol.py).

A point's identity in InfluxDB is (device, sensor, timestamp in ms): two readings of one device and
sensor at the same millisecond would overwrite each other and the count would come up short. Every
message here therefore stamps its readings uniquely per device:

- 1 reading per message: message k of a device reads sensor k % 3 at `base + k * 1000` ms;
- 60 readings per message (20 ticks of 3 sensors, the node's usual batch, about 1 KB): message k
  starts at `base + k * 20,000` ms, ticks 1,000 ms apart;
- live messages are stamped with the wall clock (ticks 1 ms apart, the newest reading "now"), never
  earlier than 1 ms after the device's previous reading.
"""

from __future__ import annotations

import time

from shared.protocol import encode_batch

SENSORS = ["temperature", "humidity", "pressure"]
# The sensor a latency probe reads: the poller asks InfluxDB for this series only.
PROBE = "probe"
PROBE_SENSORS = [*SENSORS, PROBE]
TICK_MS = 1000


def _value(device: int, k: int, tick: int, sensor: int) -> float:
    return round(15 + ((device * 17 + k * 7 + tick * 13 + sensor * 31) % 2000) * 0.01, 2)


def ticks(shape: int) -> int:
    """Ticks (of 3 sensors) in a message of `shape` readings; 1 reading is a tick of one sensor."""
    if shape == 1:
        return 1
    if shape % len(SENSORS):
        raise ValueError(f"readings per message must be 1 or a multiple of {len(SENSORS)}, not {shape}")
    return shape // len(SENSORS)


def span_ms(shape: int) -> int:
    """Milliseconds of device time one message covers in a fill."""
    return ticks(shape) * TICK_MS


def fill_message(device: int, k: int, shape: int, base_ms: int) -> bytes:
    """Message k (0-based) of device number `device`, stamped from `base_ms` on."""
    if shape == 1:
        sensor = k % len(SENSORS)
        return encode_batch(k + 1, base_ms + k * TICK_MS, [SENSORS[sensor]], [(0, 0, _value(device, k, 0, sensor))])
    readings = [
        (tick * TICK_MS, s, _value(device, k, tick, s)) for tick in range(ticks(shape)) for s in range(len(SENSORS))
    ]
    return encode_batch(k + 1, base_ms + k * span_ms(shape), SENSORS, readings)


class LiveStamper:
    """Wall-clock stamps for one device's live messages: the newest reading is now, ticks 1 ms apart,
    and never a millisecond used before."""

    def __init__(self) -> None:
        self.next_ms = 0  # the earliest millisecond not used yet

    def message(self, device: int, k: int, shape: int, probe: bool) -> tuple[bytes, int]:
        """(payload, newest timestamp in ms). A probe message reads the probe sensor at its newest tick
        instead of the last sensor there (1 reading: instead of the one sensor)."""
        n = ticks(shape)
        newest = max(int(time.time() * 1000), self.next_ms + n - 1)
        t0 = newest - (n - 1)
        self.next_ms = newest + 1
        if shape == 1:
            sensor = k % len(SENSORS)
            name = PROBE if probe else SENSORS[sensor]
            return encode_batch(k + 1, t0, [name], [(0, 0, _value(device, k, 0, sensor))]), newest
        readings = [(tick, s, _value(device, k, tick, s)) for tick in range(n) for s in range(len(SENSORS))]
        if probe:
            readings[-1] = (n - 1, len(SENSORS), readings[-1][2])
            return encode_batch(k + 1, t0, PROBE_SENSORS, readings), newest
        return encode_batch(k + 1, t0, SENSORS, readings), newest
