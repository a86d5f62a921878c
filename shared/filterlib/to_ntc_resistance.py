# to_ntc_resistance: a temperature (degrees C) to an NTC's resistance (see docs/filters.md).
import math

from shared.filters import NAN, Filter


class ToNtcResistance(Filter):
    """ESPHome's ToNTCResistanceFilter: the Steinhart-Hart equation solved for R (Cardano);
    non-finite input gives NaN. With c = 0 (a b_constant calibration) ESPHome's formula divides by
    zero and gives NaN; here it is the equation's own limit, R = exp((1/T - a) / b)."""

    def __init__(self, a, b, c):
        self.a = a
        self.b = b
        self.c = c

    def process(self, value, now):
        if value - value != 0.0:
            return NAN
        t = value + 273.15
        if t == 0.0:
            return NAN
        try:
            if self.c == 0.0:
                return math.exp((1 / t - self.a) / self.b)
            y = (self.a - 1 / t) / (2 * self.c)
            x = math.sqrt((self.b / (3 * self.c)) ** 3 + y * y)
            return math.exp(_cbrt(x - y) - _cbrt(x + y))
        except (ValueError, OverflowError, ZeroDivisionError):
            return NAN


def _cbrt(v):
    return v ** (1 / 3.0) if v >= 0 else NAN  # C pow() of a negative base and 1/3 is NaN


make = ToNtcResistance
