# round: to a number of decimals, halves away from zero (see docs/filters.md).
from shared.filterlib._rounding import roundf
from shared.filters import Filter


class Round(Filter):
    """ESPHome's RoundFilter: roundf(value * 10^decimals) / 10^decimals for finite values; NaN and
    the infinities pass unchanged. A value so large that the scaled form overflows becomes
    +-inf, as roundf(inf) / 10^decimals does in ESPHome."""

    def __init__(self, decimals):
        self.scale = 10.0**decimals

    def process(self, value, now):
        if value - value != 0.0:  # NaN or an infinity: unchanged
            return value
        return roundf(value * self.scale) / self.scale


make = Round
