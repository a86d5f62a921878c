# A simulated signal as a driver (the CSV replay is in firmware/drivers/replay.py).
import math

from firmware.drivers import Driver
from firmware.hal import ConfigError

# Plausible indoor signals: (base, daily swing, noise) per kind.
SIGNALS = {
    "temperature": (21.0, 3.0, 0.05),
    "humidity": (45.0, 10.0, 0.3),
    "pressure": (1013.0, 4.0, 0.05),
    "voltage": (1.65, 0.5, 0.01),
}


class Signal:
    """base + swing * sin(2*pi*t/period) + bounded pseudo-random noise, rounded to 2 decimals."""

    def __init__(self, kind, seed, period_s=600):
        if kind not in SIGNALS:
            raise ConfigError("unknown simulated signal " + repr(kind) + "; known: " + ", ".join(sorted(SIGNALS)))
        self.base, self.swing, self.noise = SIGNALS[kind]
        self.period_ms = int(period_s * 1000)
        self._state = (seed * 2654435761 + 1) & 0x7FFFFFFF or 1

    def read(self, now_ms):
        # xorshift keeps the noise deterministic per seed.
        x = self._state
        x ^= (x << 13) & 0x7FFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0x7FFFFFFF
        self._state = x
        noise = (x / 0x7FFFFFFF - 0.5) * 2 * self.noise
        phase = (now_ms % self.period_ms) / self.period_ms
        return round(self.base + self.swing * math.sin(2 * math.pi * phase) + noise, 2)


class SignalDriver(Driver):
    channels = ("value",)

    def __init__(self, signal, clock):
        super().__init__()
        self.signal = signal
        self.clock = clock  # epoch milliseconds, so the daily shape follows the time of day

    def measure(self, now):
        self.values[0] = self.signal.read(self.clock())
        return True
