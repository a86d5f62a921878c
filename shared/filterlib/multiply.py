# multiply: value * factor (see shared/filters.py).
from shared.filters import Filter


class Multiply(Filter):
    def __init__(self, factor):
        self.factor = factor

    def process(self, value, now):
        return value * self.factor


make = Multiply
