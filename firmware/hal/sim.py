# The simulated board for the MicroPython unix port: a real (optionally accelerated) clock, no radio,
# and sensors that are simulated signals, replayed CSV rows, or real drivers talking to emulated chips
# on simulated buses. Used by `fieldlink simulate`, the tests and the benchmarks. Making the drivers a
# config asks for is in firmware/hal/simsetup.py, which is unloaded once the node runs.
import time

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
        self.seeds = 0  # simulated sensors made so far: each gets its own noise
        self.chips = None  # emulated buses and chips, loaded when a config asks for them

    # --- time: scaled by time_scale, so minutes of device time pass in seconds -------------------
    def _elapsed(self):
        return time.ticks_diff(time.ticks_ms(), self._start_ticks) * self.time_scale

    def now_ms(self):
        return self._start_ms + self._elapsed()

    def ticks_ms(self):
        return time.ticks_add(self._start_ticks, self._elapsed())

    def wait_ms(self, ms, poller=None):
        """Up to ms of device time; the poller (the MQTT socket) ends the wait when it is ready."""
        ms //= self.time_scale
        if poller is None:
            time.sleep_ms(ms)
        else:
            poller.ipoll(ms)

    def running(self):
        return self.duration_ms is None or self._elapsed() < self.duration_ms

    def connect_network(self, wifi):
        return True  # the unix port is always on the network

    # --- sensors -------------------------------------------------------------------------------------
    def sensor_specs(self, config):
        from firmware.hal.simsetup import sensor_specs

        return sensor_specs(self, config)

    def driver_for(self, spec, config, where):
        from firmware.hal.simsetup import driver_for

        return driver_for(self, spec, config, where)

    def before_measure(self, now_ms):
        if self.chips is not None:
            self.chips.animate(now_ms)

    def trace(self, payload):
        if self._trace:
            self._trace.write(payload + b"\n")
            self._trace.flush()
