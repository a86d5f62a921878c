# exponential moving average (see shared/filters.py).
from shared.filters import Filter, isnan


class ExponentialMovingAverage(Filter):
    def __init__(self, alpha, send_every, send_first_at):
        self.alpha = alpha
        self.keep = 1.0 - alpha
        self.accumulator = 0.0
        self.first = True
        self.send_every = send_every
        self.send_at = send_every - send_first_at

    def process(self, value, now):
        if not isnan(value):
            if self.first:
                self.accumulator = value
                self.first = False
            else:
                self.accumulator = self.alpha * value + self.keep * self.accumulator
        self.send_at += 1
        if self.send_at < self.send_every:
            return None
        self.send_at = 0
        return value if isnan(value) else self.accumulator


make = ExponentialMovingAverage
