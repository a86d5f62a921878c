# round_to_multiple_of: the nearest multiple, ties to the even one (see docs/filters.md).
from shared.filterlib._rounding import remainder
from shared.filters import Filter


class RoundToMultiple(Filter):
    """ESPHome's RoundMultipleFilter: value - remainderf(value, multiple) for finite values (exact,
    whatever the size of value / multiple); NaN and the infinities pass unchanged."""

    def __init__(self, multiple):
        self.multiple = multiple

    def process(self, value, now):
        if value - value != 0.0:
            return value
        return value - remainder(value, self.multiple)


make = RoundToMultiple
