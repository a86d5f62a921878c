# delta: pass only changes of at least delta (absolute or percent) (see shared/filters.py).
from shared.filters import NAN, Filter, isnan


class Delta(Filter):
    def __init__(self, delta, percentage):
        self.delta = delta
        self.percentage = percentage
        self.current = delta
        self.last = NAN

    def process(self, value, now):
        if isnan(value):
            if isnan(self.last):
                return None
            self.last = value
            return value
        if isnan(self.last) or abs(value - self.last) >= self.current:
            if self.percentage:
                self.current = abs(value * self.delta)
            self.last = value
            return value
        return None


make = Delta
