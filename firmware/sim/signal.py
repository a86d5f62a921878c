# A simulated signal: a driver of its own (sensor type "sim"), an ADC's input, or what an emulated
# chip measures. The kinds of signal are in firmware/sim/wiring.py, which makes them at start-up.
import math

from firmware.drivers import Driver


class Signal(Driver):
    """base + swing * sin(2*pi*t/period) + bounded pseudo-random noise, rounded to 2 decimals. As a
    driver, its one channel reads the signal at the clock's epoch milliseconds, so the daily shape
    follows the time of day."""

    channels = ("value",)

    def __init__(self, shape, seed, clock=None, period_s=600):
        super().__init__()
        self.base, self.swing, self.noise = shape
        self.period_ms = int(period_s * 1000)
        self._state = (seed * 2654435761 + 1) & 0x7FFFFFFF or 1
        self.clock = clock

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

    def measure(self, now):
        self.values[0] = self.read(self.clock())
        return True

    def read_uv(self):
        """As an ADC's input (machine.ADC.read_uv): the signal in volts, as microvolts."""
        return int(self.read(self.clock()) * 1000000)
