# Filters that transform or drop single values (see shared/filters.py).
import math

from shared.filters import INF, NAN, Filter


def _isnan(value):
    return value != value


def _round_half_away(x):
    # ESPHome's roundf(); Python's round() rounds half to even, and MicroPython's differs again.
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


class Offset(Filter):
    def __init__(self, offset):
        self.offset = offset

    def process(self, value, now):
        return value + self.offset


class Multiply(Filter):
    def __init__(self, factor):
        self.factor = factor

    def process(self, value, now):
        return value * self.factor


class Linear(Filter):
    """value * slope + bias, or piecewise: a list of [slope, bias, upper_x], the last unbounded
    (upper_x null)."""

    def __init__(self, segments):
        self.segments = [(s[0], s[1], INF if s[2] is None else s[2]) for s in segments]

    def process(self, value, now):
        segments = self.segments
        for i in range(len(segments)):
            slope, bias, upper = segments[i]
            if value < upper or i == len(segments) - 1:
                return value * slope + bias
        return NAN  # NaN compares false everywhere; unreachable for numbers


class Polynomial(Filter):
    def __init__(self, coefficients):
        self.coefficients = coefficients  # c0 + c1 x + c2 x^2 ...

    def process(self, value, now):
        c = self.coefficients
        result = 0.0
        for i in range(len(c) - 1, -1, -1):  # Horner
            result = result * value + c[i]
        return result


class Clamp(Filter):
    def __init__(self, low, high, ignore_out_of_range):
        self.low = -INF if low is None else low
        self.high = INF if high is None else high
        self.ignore = ignore_out_of_range

    def process(self, value, now):
        if _isnan(value):
            return value
        if value < self.low:
            return None if self.ignore else self.low
        if value > self.high:
            return None if self.ignore else self.high
        return value


class Round(Filter):
    def __init__(self, decimals):
        self.scale = 10.0 ** decimals

    def process(self, value, now):
        if _isnan(value) or value in (INF, -INF):
            return value
        return _round_half_away(value * self.scale) / self.scale


class RoundToMultiple(Filter):
    def __init__(self, multiple):
        self.multiple = multiple

    def process(self, value, now):
        if _isnan(value) or value in (INF, -INF):
            return value
        # value - remainderf(value, multiple): the nearest multiple, ties to the even one.
        q = value / self.multiple
        n = math.floor(q + 0.5)
        if n - q == 0.5 and n % 2:
            n -= 1
        return n * self.multiple


class FilterOut(Filter):
    def __init__(self, values, nan):
        self.values = values
        self.nan = nan  # drop NaN too

    def process(self, value, now):
        if _isnan(value):
            return None if self.nan else value
        for v in self.values:
            if value == v:
                return None
        return value


class SkipInitial(Filter):
    def __init__(self, count):
        self.remaining = count

    def process(self, value, now):
        if self.remaining > 0:
            self.remaining -= 1
            return None
        return value


class Delta(Filter):
    def __init__(self, delta, percentage):
        self.delta = delta
        self.percentage = percentage
        self.current = delta
        self.last = NAN

    def process(self, value, now):
        if _isnan(value):
            if _isnan(self.last):
                return None
            self.last = value
            return value
        if _isnan(self.last) or abs(value - self.last) >= self.current:
            if self.percentage:
                self.current = abs(value * self.delta)
            self.last = value
            return value
        return None
