# calibrate_polynomial, compiled to its coefficients (see docs/filters.md).
from shared.filters import Filter


class Polynomial(Filter):
    """ESPHome's calibrate_polynomial_compute(): the sum of c[i] * x^i, powers built by repeated
    multiplication in that order (not Horner's scheme), so an infinite input gives what ESPHome
    gives: inf * 0 is NaN, and terms of opposite infinite signs make NaN."""

    def __init__(self, coefficients):
        self.coefficients = coefficients  # c0 + c1 x + c2 x^2 ...

    def process(self, value, now):
        result = 0.0
        x = 1.0
        for c in self.coefficients:
            result += x * c
            x *= value
        return result


make = Polynomial
