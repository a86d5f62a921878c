# A timer firing every period, the base of throttle_average and heartbeat.
from shared.filters import Filter, ticks_add, ticks_diff


class _Periodic(Filter):
    """A timer firing every period from the first time the filter sees the clock."""

    timed = True

    def __init__(self, period_ms):
        self.period = period_ms
        self.next = 0
        self.started = False

    def _start(self, now):
        if not self.started:
            self.started = True
            self.next = ticks_add(now, self.period)

    def _due(self, now):
        self._start(now)
        if ticks_diff(now, self.next) < 0:
            return False
        self.next = ticks_add(self.next, self.period)
        if ticks_diff(now, self.next) >= 0:  # missed beats (a long stall): realign instead of bursting
            self.next = ticks_add(now, self.period)
        return True
