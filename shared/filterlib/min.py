# min over a sliding window (max is the same with largest = True) (see shared/filters.py).
from shared.filterlib._window import _Window
from shared.filters import NAN


class Min(_Window):
    largest = False

    def compute(self):
        n = self._finite_into_scratch()
        if n == 0:
            return NAN
        scratch = self.scratch
        best = scratch[0]
        for i in range(1, n):
            if (scratch[i] > best) if self.largest else (scratch[i] < best):
                best = scratch[i]
        return best


make = Min
