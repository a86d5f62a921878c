# calibrate_linear, compiled: one line, or segments for the exact method (see docs/filters.md).
from shared.filters import NAN, Filter


class Linear(Filter):
    """ESPHome's calibrate_linear_compute(): the first segment [slope, bias, upper_x] whose upper_x
    is unbounded (null) or above the value gives value * slope + bias (NaN reaches the unbounded
    last segment and stays NaN)."""

    def __init__(self, segments):
        self.segments = [(s[0], s[1], s[2]) for s in segments]

    def process(self, value, now):
        for slope, bias, upper in self.segments:
            if upper is None or value < upper:
                return value * slope + bias
        return NAN


make = Linear
