# round: to a number of decimals, halves away from zero (see docs/filters.md).
import math

from shared.filters import INF, Filter

_NEG_INF = -INF  # made once: negating INF per sample would allocate a float


# C's roundf(), which filter_out and throttle_with_priority use too. Python's round() rounds half to
# even (MicroPython's differs again), so it is written out here, exactly.
def roundf(x):
    """C roundf(): to the nearest integer, halves away from zero; NaN and infinities unchanged."""
    if not _NEG_INF < x < INF:
        return x
    if x >= 0:
        r = math.floor(x)  # x - floor(x) is exact, so a half is seen as a half
        return float(r + 1) if x - r >= 0.5 else float(r)
    r = math.ceil(x)
    return float(r - 1) if r - x >= 0.5 else float(r)


class Round(Filter):
    """ESPHome's RoundFilter: roundf(value * 10^decimals) / 10^decimals for finite values; NaN and
    the infinities pass unchanged. A value so large that the scaled form overflows becomes
    +-inf, as roundf(inf) / 10^decimals does in ESPHome."""

    def __init__(self, decimals):
        self.scale = 10.0**decimals

    def process(self, value, now):
        if value - value != 0.0:  # NaN or an infinity: unchanged
            return value
        return roundf(value * self.scale) / self.scale


make = Round
