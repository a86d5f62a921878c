# to_ntc_temperature: an NTC's resistance (ohms) to a temperature in degrees C (see docs/filters.md).
import math

from shared.filters import INF, NAN, Filter


class ToNtcTemperature(Filter):
    """ESPHome's ToNTCTemperatureFilter: 1 / (a + b ln R + c (ln R)^3) - 273.15; non-finite input
    gives NaN, and so does a negative resistance; 0 takes ln 0 = -inf, as C's log does."""

    def __init__(self, a, b, c):
        self.a = a
        self.b = b
        self.c = c

    def process(self, value, now):
        if value - value != 0.0 or value < 0.0:
            return NAN
        lr = -INF if value == 0.0 else math.log(value)
        v = self.a + self.b * lr + self.c * lr * lr * lr
        if v == 0.0:
            return INF
        return 1.0 / v - 273.15


make = ToNtcTemperature
