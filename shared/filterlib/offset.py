# offset: value + offset (see shared/filters.py).
from shared.filters import Filter


class Offset(Filter):
    def __init__(self, offset):
        self.offset = offset

    def process(self, value, now):
        return value + self.offset


make = Offset
