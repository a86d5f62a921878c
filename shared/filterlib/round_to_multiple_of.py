# round_to_multiple_of: the nearest multiple, ties to even (see shared/filters.py).
import math

from shared.filters import INF, Filter, isnan


class RoundToMultiple(Filter):
    def __init__(self, multiple):
        self.multiple = multiple

    def process(self, value, now):
        if isnan(value) or value in (INF, -INF):
            return value
        # value - remainderf(value, multiple): the nearest multiple, ties to the even one.
        q = value / self.multiple
        if q in (INF, -INF):  # a multiple this small of a value this large: nothing to round
            return value
        n = math.floor(q + 0.5)
        if n - q == 0.5 and n % 2:
            n -= 1
        return n * self.multiple


make = RoundToMultiple
