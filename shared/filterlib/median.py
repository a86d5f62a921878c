# median over a sliding window (see shared/filters.py).
from shared.filters import NAN
from shared.filterlib._window import _Window


class Median(_Window):
    def compute(self):
        n = self._sorted_scratch()
        if n == 0:
            return NAN
        mid = n // 2
        if n % 2:
            return self.scratch[mid]
        return (self.scratch[mid] + self.scratch[mid - 1]) / 2


make = Median
