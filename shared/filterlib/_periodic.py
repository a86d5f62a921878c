# A timer firing every period, the base of throttle_average and heartbeat.
from shared.filters import Filter

try:
    from time import ticks_add as _ticks_add
    from time import ticks_diff as _ticks_diff
except ImportError:  # CPython: ticks are plain integers

    def _ticks_diff(a, b):
        return a - b

    def _ticks_add(a, b):
        return a + b


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
            self.next = _ticks_add(now, self.period)

    def _due(self, now):
        self._start(now)
        if _ticks_diff(now, self.next) < 0:
            return False
        self.next = _ticks_add(self.next, self.period)
        if _ticks_diff(now, self.next) >= 0:  # missed beats (a long stall): realign instead of bursting
            self.next = _ticks_add(now, self.period)
        return True
