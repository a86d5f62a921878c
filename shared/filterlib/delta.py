# delta: pass only values that differ enough from the last one passed (see docs/filters.md).
from shared.filters import INF, Filter, isnan


class Delta(Filter):
    """ESPHome's DeltaFilter: the first value (or any value while the last passed is NaN) passes;
    after it a value passes only if min < |value - last| <= max, strictly above min, where each
    bound is absolute or a fraction of |last| (percentage). NaN never passes after a number
    (|NaN - last| > min is false)."""

    def __init__(self, min_value, min_percentage, max_value=None, max_percentage=False):
        self.min = min_value
        self.min_pct = min_percentage
        self.max = INF if max_value is None else max_value
        self.max_pct = max_percentage
        self.last = float("nan")

    def process(self, value, now):
        last = self.last
        if isnan(last):
            self.last = value
            return value
        low = abs(last * self.min) if self.min_pct else self.min
        high = abs(last * self.max) if self.max_pct else self.max
        d = abs(value - last)
        if d > low and d <= high:
            self.last = value
            return value
        return None


make = Delta
