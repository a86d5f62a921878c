# timeout: a value (NaN by default, or the last one) once nothing came for a period (see docs/filters.md).
from shared.filters import NAN, Filter, ticks_add, ticks_diff


class Timeout(Filter):
    """ESPHome's TimeoutFilterConfigured / TimeoutFilterLast: every value passes and restarts the
    period; once a period passes without one, the configured value (NaN by default), or with
    value "last" the last value received, goes out once."""

    timed = True

    def __init__(self, period_ms, value):
        self.period = period_ms
        self.last = value == "last"
        self.value = NAN if value is None or self.last else value
        self.armed = False
        self.deadline = 0

    def process(self, value, now):
        self.armed = True
        self.deadline = ticks_add(now, self.period)
        if self.last:
            self.value = value
        return value

    def poll(self, now):
        if self.armed and ticks_diff(now, self.deadline) >= 0:
            self.armed = False
            return self.value
        return None


make = Timeout
