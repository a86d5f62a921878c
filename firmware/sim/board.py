# The simulated board of the MicroPython unix port: a real (optionally accelerated) clock, no radio,
# and emulated chips that follow simulated signals. Used by `fieldlink simulate`, the tests and the
# benchmarks. Its start-up half, which makes the sources and chips a config asks for, is
# firmware/sim/wiring.py, unloaded once the node runs.
import time

from firmware.hal import Board


class SimBoard(Board):
    name = "sim"
    reset_cause = "power_on"  # a process that starts is a board powered on

    # Made by firmware/sim/wiring.py: make_board() (start-up code, unloaded once the node runs):
    #   faults: (kind, start_ms, end_ms) in device time since this boot (firmware/sim/faults.py; a
    #     step's third item is how far the clock jumps)
    #   no_ntp_ms: the clock is unknown (now_ms 0) for this long after boot, as on a board that has
    #     not reached an NTP server yet
    #   _trace, time_scale, _start_ticks, _start_ms, duration_ms, animated (the emulated chips and
    #     the signals they follow, moved along before each measurement)

    # --- time: scaled by time_scale, so minutes of device time pass in seconds -------------------
    def _elapsed(self):
        return time.ticks_diff(time.ticks_ms(), self._start_ticks) * self.time_scale

    def now_ms(self):
        elapsed = self._elapsed()
        if elapsed < self.no_ntp_ms:
            return 0
        now = self._start_ms + elapsed
        for kind, start, step in self.faults:
            if kind == "step" and start <= elapsed:
                now += step  # an NTP correction: the clock jumps (either way) and runs on from there
        return now

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

    def online(self, wifi=None):
        return not (self.faults and self.fault("cut"))  # the unix port is on the network but in a cut

    connect_network = online

    def rssi(self):
        return -55 - self._elapsed() // 1000 % 20  # a simulated radio: -55 to -74 dBm

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

    def log(self, *args):
        """print() with the board's time first: ISO 8601 (UTC, ms) once the clock is known, the time
        since boot (+S.mmm s) before. firmware/sim/wiring.py makes it the builtin print, so each line a
        simulated node logs carries its device time, as the service's and the broker's lines carry
        theirs."""
        try:
            ms = self.now_ms()
            if ms:
                t = time.gmtime(ms // 1000)
                stamp = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t[0], t[1], t[2], t[3], t[4], t[5], ms % 1000)
            else:
                ms = self._elapsed()
                stamp = "+%d.%03ds" % (ms // 1000, ms % 1000)
        except MemoryError:  # a line logged in a full heap must not fail for its stamp
            stamp = "?"
        self._print(stamp, *args)

    def trace(self, payload):
        if self._trace:
            self._trace.write(payload + b"\n")
            self._trace.flush()
