# the mean of a sliding window (see shared/filters.py).
from shared.filterlib._window import _Window
from shared.filters import NAN


class MovingAverage(_Window):
    def compute(self):
        n = self._finite_into_scratch()
        if n == 0:
            return NAN
        total = 0.0
        for i in range(n):
            total += self.scratch[i]
        return total / n


make = MovingAverage
