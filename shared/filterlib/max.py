# max over a sliding window (see shared/filters.py).
from shared.filterlib.min import Min


class Max(Min):
    largest = True


make = Max
