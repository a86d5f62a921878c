# round: to a number of decimals, half away from zero (see shared/filters.py).
import math

from shared.filters import INF, Filter, isnan


def _round_half_away(x):
    # ESPHome's roundf(); Python's round() rounds half to even, and MicroPython's differs again.
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


class Round(Filter):
    def __init__(self, decimals):
        self.scale = 10.0 ** decimals

    def process(self, value, now):
        if isnan(value) or value in (INF, -INF):
            return value
        scaled = value * self.scale
        if scaled in (INF, -INF):  # too large to have decimals: already as round as it gets
            return value
        return _round_half_away(scaled) / self.scale


make = Round
