# round_to_multiple_of: the nearest multiple, ties to the even one (see docs/filters.md).
import math

from shared.filters import Filter


# C's remainderf(); MicroPython has no math.remainder.
def remainder(x, p):
    """IEEE remainder (C remainderf()): x - n*p for the integer n nearest x/p, ties to even n. Exact
    for every finite x and p != 0, however large x/p is (fdlibm's e_remainder.c)."""
    p = abs(p)
    if p <= 8.98846567431158e307:  # 2p is finite: bring x into [0, 2p) first, exactly
        x0 = x
        x = math.fmod(x, p + p)
    else:
        x0 = x
    negative = x0 < 0
    x = abs(x)
    half = 0.5 * p
    if half == 0.0 or half * 2 != p:  # p so small that halving it loses bits
        if x + x > p:
            x -= p
            if x + x >= p:
                x -= p
    elif x > half:
        x -= p
        if x >= half:
            x -= p
    return -x if negative else x


class RoundToMultiple(Filter):
    """ESPHome's RoundMultipleFilter: value - remainderf(value, multiple) for finite values (exact,
    whatever the size of value / multiple); NaN and the infinities pass unchanged."""

    def __init__(self, multiple):
        self.multiple = multiple

    def process(self, value, now):
        if value - value != 0.0:
            return value
        return value - remainder(value, self.multiple)


make = RoundToMultiple
