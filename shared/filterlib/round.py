# round: to a number of decimals, half away from zero (see shared/filters.py).
import math

from shared.filters import INF, Filter

_NEG_INF = -INF  # made once: negating INF in process() would allocate a float per sample


def _round_half_away(x):
    # ESPHome's roundf(); Python's round() rounds half to even, and MicroPython's differs again.
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


class Round(Filter):
    def __init__(self, decimals):
        self.scale = 10.0**decimals

    def process(self, value, now):
        if not _NEG_INF < value < INF:  # NaN and the infinities pass unchanged
            return value
        scaled = value * self.scale
        if not _NEG_INF < scaled < INF:  # too large to have decimals: already as round as it gets
            return value
        return _round_half_away(scaled) / self.scale


make = Round
