# median over a sliding window (see shared/filters.py).
from shared.filterlib._window import _Window
from shared.filters import NAN


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
