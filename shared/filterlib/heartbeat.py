# heartbeat: repeat the last value every period (see shared/filters.py).
from shared.filterlib._periodic import _Periodic


class Heartbeat(_Periodic):
    def __init__(self, period_ms, optimistic):
        super().__init__(period_ms)
        self.optimistic = optimistic
        self.last = 0.0
        self.has_value = False

    def process(self, value, now):
        self._start(now)
        self.last = value
        self.has_value = True
        return value if self.optimistic else None

    def poll(self, now):
        if self._due(now) and self.has_value:
            return self.last
        return None


make = Heartbeat
