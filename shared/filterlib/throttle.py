# throttle: at most one value per period (see shared/filters.py).
from shared.filters import Filter, ticks_diff


class Throttle(Filter):
    def __init__(self, period_ms):
        self.period = period_ms
        self.last = 0
        self.started = False

    def process(self, value, now):
        if self.started and ticks_diff(now, self.last) < self.period:
            return None
        self.started = True
        self.last = now
        return value


make = Throttle
