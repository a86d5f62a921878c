# C's roundf() and remainderf() for the rounding filters, and ESPHome's value_list_matches_any() for
# filter_out and throttle_with_priority. Python's round() rounds half to even (MicroPython's differs
# again) and math.remainder is missing on MicroPython, so both are written out here, exactly.
import math

from shared.filters import INF

_NEG_INF = -INF  # made once: negating INF per sample would allocate a float


def roundf(x):
    """C roundf(): to the nearest integer, halves away from zero; NaN and infinities unchanged."""
    if not _NEG_INF < x < INF:
        return x
    if x >= 0:
        r = math.floor(x)  # x - floor(x) is exact, so a half is seen as a half
        return float(r + 1) if x - r >= 0.5 else float(r)
    r = math.ceil(x)
    return float(r - 1) if r - x >= 0.5 else float(r)


def remainder(x, p):
    """IEEE remainder (C remainderf()): x - n*p for the integer n nearest x/p, ties to even n. Exact
    for every finite x and p != 0, however large x/p is (fdlibm's e_remainder.c)."""
    p = abs(p)
    if p <= 8.98846567431158e307:  # 2p is finite: bring x into [0, 2p) first, exactly
        x0 = x
        x = math.fmod(x, p + p)
    else:
        x0 = x
    negative = x0 < 0
    x = abs(x)
    half = 0.5 * p
    if half == 0.0 or half * 2 != p:  # p so small that halving it loses bits
        if x + x > p:
            x -= p
            if x + x >= p:
                x -= p
    elif x > half:
        x -= p
        if x >= half:
            x -= p
    return -x if negative else x


def matches(value, scale, targets, nan):
    """ESPHome's value_list_matches_any(): does value equal one of the targets (each already
    roundf(target * scale)) once rounded to the sensor's accuracy decimals, or is it NaN and NaN
    listed?"""
    if value != value:
        return nan
    r = roundf(value * scale)
    for t in targets:
        if r == t:
            return True
    return False
