# The simulated board for the MicroPython unix port: a real (optionally accelerated) clock, no radio,
# and sensors that are simulated signals, replayed CSV rows, or real drivers talking to emulated chips
# on simulated buses. Used by `fieldlink simulate`, the tests and the benchmarks.
import asyncio
import time

from firmware.drivers.sources import Signal, SignalDriver
from firmware.hal import Board, ConfigError


class SimBoard(Board):
    name = "sim"

    def __init__(self, replay_path=None, trace_path=None, duration_s=None, time_scale=1):
        if time_scale < 1:
            raise ConfigError("--time-scale must be at least 1")
        self.replay = None
        if replay_path:
            from firmware.drivers.replay import ReplayDriver

            self.replay = ReplayDriver(replay_path)
        self._trace = open(trace_path, "ab") if trace_path else None
        self.time_scale = time_scale
        self._start_ticks = time.ticks_ms()
        self._start_ms = time.time_ns() // 1000000
        self.duration_ms = int(duration_s * 1000) if duration_s else None
        self._drivers = {}
        self._chips = None  # emulated buses and chips, loaded when a config asks for them

    # --- time: scaled by time_scale, so minutes of device time pass in seconds -------------------
    def _elapsed(self):
        return time.ticks_diff(time.ticks_ms(), self._start_ticks) * self.time_scale

    def now_ms(self):
        return self._start_ms + self._elapsed()

    def ticks_ms(self):
        return time.ticks_add(self._start_ticks, self._elapsed())

    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(ms // self.time_scale)

    def running(self):
        return self.duration_ms is None or self._elapsed() < self.duration_ms

    async def connect_network(self, wifi):
        return True  # the unix port is always on the network

    # --- sensors -------------------------------------------------------------------------------------
    def sensor_specs(self, config):
        """With --replay, the CSV's columns are the sensors; a configured sensor of the same name lends
        them its filters and interval."""
        if not self.replay:
            return config.get("sensors")
        configured = {}
        for spec in config.get("sensors") or []:
            if isinstance(spec, dict):
                configured[spec.get("name")] = spec
        specs = []
        for column in self.replay.channels:
            spec = {"name": column, "type": "replay", "channel": column}
            base = configured.get(column)
            if base:
                for key in ("filters", "interval_ms"):
                    if key in base:
                        spec[key] = base[key]
            specs.append(spec)
        return specs

    def driver_for(self, spec, config, where):
        kind = spec.get("type", "sim")
        if kind == "replay":
            return self.replay
        seed = len(self._drivers) + 1
        if kind == "sim":
            self._drivers[("sim", seed)] = driver = SignalDriver(
                Signal(spec.get("signal") or spec.get("name"), spec.get("seed", seed), spec.get("period_s", 600)),
                self.now_ms)
            return driver
        if self._chips is None:
            from firmware.hal.simchips import SimChips

            self._chips = SimChips(self)
        return self._chips.driver_for(kind, spec, config, where, seed)

    def before_measure(self, now_ms):
        if self._chips is not None:
            self._chips.animate(now_ms)

    def trace(self, payload):
        if self._trace:
            self._trace.write(payload + b"\n")
            self._trace.flush()

