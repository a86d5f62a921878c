# calibrate_linear, compiled: one line, or segments for the exact method (see shared/filters.py).
from shared.filters import INF, NAN, Filter


class Linear(Filter):
    """value * slope + bias, or piecewise: a list of [slope, bias, upper_x], the last unbounded
    (upper_x null)."""

    def __init__(self, segments):
        self.segments = [(s[0], s[1], INF if s[2] is None else s[2]) for s in segments]

    def process(self, value, now):
        segments = self.segments
        for i in range(len(segments)):
            slope, bias, upper = segments[i]
            if value < upper or i == len(segments) - 1:
                return value * slope + bias
        return NAN  # NaN compares false everywhere; unreachable for numbers


make = Linear
