# throttle: at most one value per period (see shared/filters.py).
from shared.filters import Filter

try:
    from time import ticks_add as _ticks_add
    from time import ticks_diff as _ticks_diff
except ImportError:  # CPython: ticks are plain integers

    def _ticks_diff(a, b):
        return a - b

    def _ticks_add(a, b):
        return a + b


class Throttle(Filter):
    def __init__(self, period_ms):
        self.period = period_ms
        self.last = 0
        self.started = False

    def process(self, value, now):
        if self.started and _ticks_diff(now, self.last) < self.period:
            return None
        self.started = True
        self.last = now
        return value


make = Throttle
