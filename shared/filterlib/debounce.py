# debounce: the last value once nothing new came for a period (see shared/filters.py).
from shared.filters import Filter, ticks_add, ticks_diff


class Debounce(Filter):
    timed = True

    def __init__(self, period_ms):
        self.period = period_ms
        self.pending = False
        self.deadline = 0
        self.last = 0.0

    def process(self, value, now):
        self.last = value
        self.pending = True
        self.deadline = ticks_add(now, self.period)
        return None

    def poll(self, now):
        if self.pending and ticks_diff(now, self.deadline) >= 0:
            self.pending = False
            return self.last
        return None


make = Debounce
