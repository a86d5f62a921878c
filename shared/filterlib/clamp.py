# clamp: bounds, or drop what is out of range (see docs/filters.md).
from shared.filters import Filter


class Clamp(Filter):
    """ESPHome's ClampFilter: with a bound set, a value that is not within it (NaN included, since
    !(NaN >= min)) becomes the bound, or is dropped with ignore_out_of_range. An unset bound (null)
    checks nothing."""

    def __init__(self, low, high, ignore_out_of_range):
        self.low = low
        self.high = high
        self.ignore = ignore_out_of_range

    def process(self, value, now):
        if self.low is not None and not value >= self.low:
            return None if self.ignore else self.low
        if self.high is not None and not value <= self.high:
            return None if self.ignore else self.high
        return value


make = Clamp
