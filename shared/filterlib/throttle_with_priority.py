# throttle_with_priority: throttle, but listed values pass at once (see docs/filters.md).
from shared.filterlib.filter_out import matches
from shared.filterlib.round import roundf
from shared.filters import Filter, ticks_diff


class ThrottleWithPriority(Filter):
    """ESPHome's ThrottleWithPriorityFilter: a value passes if none passed yet, if the last passed
    at least period ago, or if it matches a prioritized value (compared as filter_out compares);
    every value that passes restarts the period."""

    def __init__(self, period_ms, values, nan, decimals=0):
        self.period = period_ms
        self.scale = 10.0**decimals
        self.targets = [roundf(v * self.scale) for v in values]
        self.nan = nan
        self.last = 0
        self.started = False

    def process(self, value, now):
        if (
            not self.started
            or ticks_diff(now, self.last) >= self.period
            or matches(value, self.scale, self.targets, self.nan)
        ):
            self.started = True
            self.last = now
            return value
        return None


make = ThrottleWithPriority
