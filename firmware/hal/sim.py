# The simulated board for the MicroPython unix port: a real clock, no radio, sensors that produce
# plausible signals or replay raw readings from a CSV file. Used by `fieldlink simulate` and the tests.
import math
import sys
import time

from firmware.hal import ConfigError

# Plausible indoor signals: (base, daily swing, noise) per kind.
_SIGNALS = {
    "temperature": (21.0, 3.0, 0.05),
    "humidity": (45.0, 10.0, 0.3),
    "pressure": (1013.0, 4.0, 0.05),
}


class SimulatedSensor:
    """A signal: base + swing * sin(2*pi*t/period) + bounded pseudo-random noise, 2 decimals."""

    def __init__(self, kind, seed, period_s=600):
        if kind not in _SIGNALS:
            raise ConfigError("unknown simulated signal " + repr(kind) + "; known: "
                              + ", ".join(sorted(_SIGNALS)))
        self.base, self.swing, self.noise = _SIGNALS[kind]
        self.period_ms = period_s * 1000
        self._state = (seed * 2654435761 + 1) & 0x7FFFFFFF or 1

    def read(self, now_ms):
        # xorshift keeps the noise deterministic per seed and allocation-free.
        x = self._state
        x ^= (x << 13) & 0x7FFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0x7FFFFFFF
        self._state = x
        noise = (x / 0x7FFFFFFF - 0.5) * 2 * self.noise
        phase = (now_ms % self.period_ms) / self.period_ms
        return round(self.base + self.swing * math.sin(2 * math.pi * phase) + noise, 2)


class ReplaySource:
    """Raw readings from a CSV file: a header of sensor names, then one row per sampling tick.
    An empty cell is a failed read (NaN)."""

    def __init__(self, path):
        try:
            self._file = open(path)
        except OSError as exc:
            raise ConfigError("cannot open replay file " + repr(path) + ": " + str(exc))
        header = self._file.readline().strip()
        if not header:
            raise ConfigError("replay file " + repr(path) + " has no header row")
        self.names = [name.strip() for name in header.split(",")]
        self.row = None
        self.line = 1
        self.exhausted = False

    def advance(self):
        """Read the next row; False when the file is exhausted."""
        while True:
            text = self._file.readline()
            self.line += 1
            if not text:
                self.exhausted = True
                self._file.close()
                return False
            text = text.strip()
            if text:
                break
        cells = text.split(",")
        if len(cells) != len(self.names):
            print("replay: line", self.line, "has", len(cells), "cells, expected", len(self.names),
                  "; skipped")
            return self.advance()
        row = []
        for cell in cells:
            cell = cell.strip()
            try:
                row.append(float(cell) if cell else math.nan)
            except ValueError:
                print("replay: line", self.line, "cell", repr(cell), "is not a number; read as NaN")
                row.append(math.nan)
        self.row = row
        return True


class ReplayedSensor:
    def __init__(self, source, column):
        self.source = source
        self.column = column

    def read(self, now_ms):
        return self.source.row[self.column]


class SimBoard:
    name = "sim"

    def __init__(self, replay_path=None, trace_path=None, duration_s=None):
        self.replay = ReplaySource(replay_path) if replay_path else None
        self._trace = open(trace_path, "ab") if trace_path else None
        self.duration_ms = int(duration_s * 1000) if duration_s else None
        self._start = time.ticks_ms()

    def now_ms(self):
        return time.time_ns() // 1000000

    def ticks_ms(self):
        return time.ticks_ms()

    async def connect_network(self, config):
        return True  # the unix port is always on the network

    def sensors(self, config):
        """A list of (name, sensor) from the config, or from the replay file's header."""
        if self.replay:
            return [(name, ReplayedSensor(self.replay, i)) for i, name in enumerate(self.replay.names)]
        result = []
        for i, spec in enumerate(config.get("sensors") or []):
            kind = spec.get("signal") or spec.get("name")
            result.append((spec["name"], SimulatedSensor(kind, seed=spec.get("seed", i + 1),
                                                          period_s=spec.get("period_s", 600))))
        return result

    def before_sample(self):
        """Advance replay sources; False when the run is over (replay exhausted or duration reached)."""
        if self.duration_ms is not None and time.ticks_diff(time.ticks_ms(), self._start) >= self.duration_ms:
            return False
        if self.replay:
            return self.replay.advance()
        return True

    def trace(self, payload):
        if self._trace:
            self._trace.write(payload + b"\n")
            self._trace.flush()

    def feed_watchdog(self):
        pass

    def read_file(self, path):
        with open(path, "rb") as f:
            return f.read()

    def fatal(self, message):
        print("fatal:", message)
        sys.exit(2)
