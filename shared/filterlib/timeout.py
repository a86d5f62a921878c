# timeout: a value (NaN by default) once nothing came for a period (see shared/filters.py).
from shared.filters import NAN, Filter, ticks_add, ticks_diff


class Timeout(Filter):
    timed = True

    def __init__(self, period_ms, value):
        self.period = period_ms
        self.value = NAN if value is None else value
        self.armed = False
        self.deadline = 0

    def process(self, value, now):
        self.armed = True
        self.deadline = ticks_add(now, self.period)
        return value

    def poll(self, now):
        if self.armed and ticks_diff(now, self.deadline) >= 0:
            self.armed = False
            return self.value
        return None


make = Timeout
