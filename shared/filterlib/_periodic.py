# A timer firing every period, the base of throttle_average and heartbeat.
from shared.filters import Filter, ticks_add, ticks_diff


class _Periodic(Filter):
    """A timer firing every period from the first time the filter sees the clock. After a stalled
    loop it fires once (no burst of missed beats) and keeps its phase: the next beat is the next
    point of the original grid (start + k * period), not now + period."""

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
        late = ticks_diff(now, self.next)
        if late < 0:
            return False
        self.next = ticks_add(self.next, (late // self.period + 1) * self.period)
        return True
