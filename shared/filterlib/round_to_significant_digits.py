# round_to_significant_digits (see docs/filters.md).
import math

from shared.filterlib.round import roundf
from shared.filters import Filter


def ilog10(a):
    """floor(log10(a)) for a finite a > 0, exactly (log10 alone can be one off next to a power)."""
    e = int(math.floor(math.log10(a)))
    if e > -300 and e < 300:
        if 10.0**e > a:
            e -= 1
        elif 10.0 ** (e + 1) <= a:
            e += 1
    return e


class RoundSignificant(Filter):
    """ESPHome's RoundSignificantDigitsFilter: 0 stays 0; otherwise, with
    factor = 10^(digits - 1 - ilog10(|value|)), roundf(value * factor) / factor. NaN and the
    infinities pass unchanged."""

    def __init__(self, digits):
        self.digits = digits

    def process(self, value, now):
        if value - value != 0.0:
            return value
        if value == 0.0:
            return 0.0
        e = self.digits - 1 - ilog10(abs(value))
        if e > 300:  # tiny values: 10^e alone would overflow, so scale in two steps
            half = e // 2
            a = 10.0**half
            b = 10.0 ** (e - half)
            return roundf(value * a * b) / b / a
        factor = 10.0**e
        return roundf(value * factor) / factor


make = RoundSignificant
