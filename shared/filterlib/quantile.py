# quantile over a sliding window (see shared/filters.py).
import math

from shared.filterlib._window import _Window
from shared.filters import NAN


class Quantile(_Window):
    def __init__(self, window_size, send_every, send_first_at, quantile):
        super().__init__(window_size, send_every, send_first_at)
        self.quantile = quantile

    def compute(self):
        n = self._sorted_scratch()
        if n == 0:
            return NAN
        position = math.ceil(n * self.quantile) - 1
        return self.scratch[position if position > 0 else 0]


make = Quantile
