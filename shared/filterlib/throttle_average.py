# throttle_average: the mean of each period, emitted on the clock (see shared/filters.py).
from shared.filterlib._periodic import _Periodic
from shared.filters import NAN, isnan


class ThrottleAverage(_Periodic):
    def __init__(self, period_ms):
        super().__init__(period_ms)
        self.total = 0.0
        self.n = 0
        self.have_nan = False

    def process(self, value, now):
        self._start(now)
        if isnan(value):
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


make = ThrottleAverage
