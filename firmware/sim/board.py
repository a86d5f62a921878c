# The simulated board of the MicroPython unix port: a real (optionally accelerated) clock, no radio,
# and emulated chips that follow simulated signals. Used by `fieldlink simulate`, the tests and the
# benchmarks. Its start-up half, which makes the sources and chips a config asks for, is
# firmware/sim/wiring.py, unloaded once the node runs.
import time

from firmware.errors import ConfigError
from firmware.hal import Board


class SimBoard(Board):
    name = "sim"

    def __init__(self, trace_path=None, duration_s=None, time_scale=1, faults=()):
        # faults: (kind, start_ms, end_ms) in device time since this boot (firmware/sim/faults.py)
        if time_scale < 1:
            raise ConfigError("--time-scale must be at least 1")
        self.faults = faults
        self._trace = open(trace_path, "ab") if trace_path else None
        self.time_scale = time_scale
        self._start_ticks = time.ticks_ms()
        self._start_ms = time.time_ns() // 1000000
        self.duration_ms = int(duration_s * 1000) if duration_s else None
        self.animated = []  # (emulated chip, signal) pairs, moved along before each measurement

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
        if poller is None or self.faults and self.fault("freeze"):
            time.sleep_ms(ms)
        else:
            poller.ipoll(ms)

    def running(self):
        return self.duration_ms is None or self._elapsed() < self.duration_ms

    def connect_network(self, wifi):
        return not (self.faults and self.fault("cut"))  # the unix port is on the network but in a cut

    def fault(self, kind):
        """True while a fault of this kind is on; a power fault stays on once its time has come."""
        now = self._elapsed()
        for name, start, end in self.faults:
            if name == kind and start <= now and (end < 0 or now < end):
                return True
        return False

    def write(self, f, data):
        if self.faults and self.fault("power"):
            from firmware.sim.faults import power_off

            power_off(f, data)
        f.write(data)

    def before_measure(self, now_ms):
        """Move the emulated chips along their signals, as the world outside a real chip would."""
        for chip, signal in self.animated:
            chip.set_temperature(signal.read(now_ms))

    def trace(self, payload):
        if self._trace:
            self._trace.write(payload + b"\n")
            self._trace.flush()
