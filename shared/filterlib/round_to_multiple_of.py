# round_to_multiple_of: the nearest multiple, ties to even (see shared/filters.py).
import math

from shared.filters import INF, Filter

_NEG_INF = -INF  # made once: negating INF in process() would allocate a float per sample


class RoundToMultiple(Filter):
    def __init__(self, multiple):
        self.multiple = multiple

    def process(self, value, now):
        if not _NEG_INF < value < INF:  # NaN and the infinities pass unchanged
            return value
        # value - remainderf(value, multiple): the nearest multiple, ties to the even one.
        q = value / self.multiple
        if not _NEG_INF < q < INF:  # a multiple this small of a value this large: nothing to round
            return value
        n = math.floor(q + 0.5)
        if n - q == 0.5 and n % 2:
            n -= 1
        return n * self.multiple


make = RoundToMultiple
