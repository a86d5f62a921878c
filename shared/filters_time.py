# Filters that depend on time (see shared/filters.py): throttle, throttle_average, heartbeat,
# debounce, timeout.
from shared.filters import NAN, Filter

try:
    from time import ticks_add as _ticks_add
    from time import ticks_diff as _ticks_diff
except ImportError:  # CPython: ticks are plain integers

    def _ticks_diff(a, b):
        return a - b

    def _ticks_add(a, b):
        return a + b


def _isnan(value):
    return value != value


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


class ThrottleAverage(_Periodic):
    def __init__(self, period_ms):
        super().__init__(period_ms)
        self.total = 0.0
        self.n = 0
        self.have_nan = False

    def process(self, value, now):
        self._start(now)
        if _isnan(value):
            self.have_nan = True
        else:
            self.total += value
            self.n += 1
        return None

    def poll(self, now):
        if not self._due(now):
            return None
        result = None
        if self.n:
            result = self.total / self.n
            self.total = 0.0
            self.n = 0
        elif self.have_nan:
            result = NAN
        self.have_nan = False
        return result


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
        self.deadline = _ticks_add(now, self.period)
        return None

    def poll(self, now):
        if self.pending and _ticks_diff(now, self.deadline) >= 0:
            self.pending = False
            return self.last
        return None


class Timeout(Filter):
    timed = True

    def __init__(self, period_ms, value):
        self.period = period_ms
        self.value = NAN if value is None else value
        self.armed = False
        self.deadline = 0

    def process(self, value, now):
        self.armed = True
        self.deadline = _ticks_add(now, self.period)
        return value

    def poll(self, now):
        if self.armed and _ticks_diff(now, self.deadline) >= 0:
            self.armed = False
            return self.value
        return None
