# filter_out: drop given values, compared at the sensor's accuracy decimals (see docs/filters.md).
from shared.filterlib.round import roundf
from shared.filters import Filter


# ESPHome's value_list_matches_any(), which throttle_with_priority uses too.
def matches(value, scale, targets, nan):
    """ESPHome's value_list_matches_any(): does value equal one of the targets (each already
    roundf(target * scale)) once rounded to the sensor's accuracy decimals, or is it NaN and NaN
    listed?"""
    if value != value:
        return nan
    r = roundf(value * scale)
    for t in targets:
        if r == t:
            return True
    return False


class FilterOut(Filter):
    """ESPHome's FilterOutValueFilter: drop a value that equals a listed one once both are rounded
    to the sensor's accuracy decimals (roundf(x * 10^decimals)); NaN is dropped if NaN is listed."""

    def __init__(self, values, nan, decimals=0):
        self.scale = 10.0**decimals
        self.targets = [roundf(v * self.scale) for v in values]
        self.nan = nan

    def process(self, value, now):
        if matches(value, self.scale, self.targets, self.nan):
            return None
        return value


make = FilterOut
