"""Invariants of the filters, checked by hypothesis on CPython (the vectors in tests/dual run on both)."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.filter_config import build_chain

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
maybe_nan = st.one_of(finite, st.just(math.nan))


@given(st.lists(maybe_nan, min_size=1, max_size=60), st.integers(1, 12), st.integers(1, 12))
def test_median_lies_within_its_windows_min_and_max(values: list[float], window: int, every: int) -> None:
    chain = build_chain([{"median": {"window_size": window, "send_every": every, "send_first_at": 1}}])
    for i, value in enumerate(values):
        out = chain.process(value, i)
        if out is None:
            continue
        current = [v for v in values[max(0, i - window + 1) : i + 1] if not math.isnan(v)]
        if not current:
            assert math.isnan(out)
        else:
            assert min(current) <= out <= max(current)


@given(st.lists(maybe_nan, max_size=50), finite, finite, st.booleans())
def test_clamp_never_exceeds_its_bounds(values: list[float], a: float, b: float, ignore: bool) -> None:
    low, high = min(a, b), max(a, b)
    chain = build_chain([{"clamp": {"min_value": low, "max_value": high, "ignore_out_of_range": ignore}}])
    for value in values:
        out = chain.process(value, 0)
        if out is None:
            assert ignore and not low <= value <= high
        else:  # NaN too: ESPHome's !(NaN >= min) makes it the bound
            assert low <= out <= high
            if low <= value <= high:
                assert out == value


@settings(max_examples=200)
@given(st.lists(st.integers(0, 5000), max_size=80), st.integers(1, 2000))
def test_throttle_never_passes_two_values_closer_than_its_period(gaps: list[int], period: int) -> None:
    chain = build_chain([{"throttle": period}])
    now, passed = 0, []
    for gap in gaps:
        now += gap
        if chain.process(1.0, now) is not None:
            passed.append(now)
    assert all(b - a >= period for a, b in itertools.pairwise(passed))
    if gaps:
        assert passed[0] == gaps[0]  # the first value always passes


@given(st.lists(finite, min_size=1, max_size=40), st.floats(0.01, 1.0))
def test_ema_stays_within_the_range_of_its_inputs(values: list[float], alpha: float) -> None:
    chain = build_chain([{"exponential_moving_average": {"alpha": alpha, "send_every": 1}}])
    for i, value in enumerate(values):
        out = chain.process(value, i)
        assert out is not None
        low, high = min(values[: i + 1]), max(values[: i + 1])
        slack = 1e-6 * max(1.0, abs(low), abs(high))  # rounding of alpha * x + (1 - alpha) * acc
        assert low - slack <= out <= high + slack


@given(st.lists(finite, min_size=1, max_size=40), st.floats(0.0, 100.0, allow_nan=False))
def test_delta_passes_only_changes_of_more_than_delta(values: list[float], delta: float) -> None:
    chain = build_chain([{"delta": delta}])
    passed = [v for v in values if chain.process(v, 0) is not None]
    assert passed[0] == values[0]
    assert all(abs(b - a) > delta for a, b in itertools.pairwise(passed))  # ESPHome: strictly above
