# skip_initial: drop the first values (see shared/filters.py).
from shared.filters import Filter


class SkipInitial(Filter):
    def __init__(self, count):
        self.remaining = count

    def process(self, value, now):
        if self.remaining > 0:
            self.remaining -= 1
            return None
        return value


make = SkipInitial
