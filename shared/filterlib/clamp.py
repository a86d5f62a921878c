# clamp: bounds, or drop what is out of range (see shared/filters.py).
from shared.filters import INF, Filter, isnan


class Clamp(Filter):
    def __init__(self, low, high, ignore_out_of_range):
        self.low = -INF if low is None else low
        self.high = INF if high is None else high
        self.ignore = ignore_out_of_range

    def process(self, value, now):
        if isnan(value):
            return value
        if value < self.low:
            return None if self.ignore else self.low
        if value > self.high:
            return None if self.ignore else self.high
        return value


make = Clamp
