# calibrate_polynomial, compiled to its coefficients (see shared/filters.py).
from shared.filters import Filter


class Polynomial(Filter):
    def __init__(self, coefficients):
        self.coefficients = coefficients  # c0 + c1 x + c2 x^2 ...

    def process(self, value, now):
        c = self.coefficients
        result = 0.0
        for i in range(len(c) - 1, -1, -1):  # Horner
            result = result * value + c[i]
        return result


make = Polynomial
