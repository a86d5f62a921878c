# filter_out: drop given values (NaN too, if asked) (see shared/filters.py).
from shared.filters import Filter, isnan


class FilterOut(Filter):
    def __init__(self, values, nan):
        self.values = values
        self.nan = nan  # drop NaN too

    def process(self, value, now):
        if isnan(value):
            return None if self.nan else value
        for v in self.values:
            if value == v:
                return None
        return value


make = FilterOut
