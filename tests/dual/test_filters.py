# Filter vectors with ESPHome's semantics, on both interpreters. Each vector feeds (time_ms, value)
# samples through a chain built from config and lists what comes out, as ESPHome's filter would.
from shared.filter_config import FilterConfigError, build_chain, parse_duration_ms
from tests.dual.helpers import raises

NAN = float("nan")
INF = float("inf")


def run(specs, samples, poll_every=None):
    """Feed (t, value) samples; with poll_every also poll the clock between samples. Returns outputs
    as (t, value) with NaN shown as the string 'nan' so that vectors compare by equality."""
    chain = build_chain(specs)
    out = []
    last_t = None
    for t, value in samples:
        if poll_every is not None and last_t is not None:
            tick = last_t + poll_every
            while tick < t:
                emitted = chain.poll(tick)
                if emitted is not None:
                    out.append((tick, emitted))
                tick += poll_every
        emitted = chain.process(value, t)
        if emitted is not None:
            out.append((t, emitted))
        if poll_every is not None:
            emitted = chain.poll(t)
            if emitted is not None:
                out.append((t, emitted))
        last_t = t
    return [(t, "nan" if v != v else v) for t, v in out]


def values(specs, inputs):
    return [v for _, v in run(specs, [(i * 1000, x) for i, x in enumerate(inputs)])]


def test_offset_and_multiply():
    assert values([{"offset": 2.5}], [1.0, -2.5, NAN]) == [3.5, 0.0, "nan"]
    assert values([{"multiply": 1.8}, {"offset": 32}], [0.0, 100.0, -40.0]) == [32.0, 212.0, -40.0]


def test_calibrate_linear_least_squares():
    # Points on y = 2x + 1 exactly, and a scattered set whose fit is y = 0.5x + 0.5 (by hand:
    # slope = (3*4 - 3*3) / (3*5 - 3*3), bias = (3 - 0.5*3) / 3).
    assert values([{"calibrate_linear": [[0.0, 1.0], [1.0, 3.0], [2.0, 5.0]]}], [3.0, -1.0]) == [7.0, -1.0]
    assert values([{"calibrate_linear": ["0 -> 0", "1 -> 2", "2 -> 1"]}], [4.0]) == [2.5]


def test_calibrate_linear_exact_is_piecewise():
    # ESPHome refuses exact datapoints whose x are not in ascending order (this vector listed them
    # unsorted before; see docs/filters.md).
    spec = [{"calibrate_linear": {"method": "exact", "datapoints": [[0, 0], [10, 100], [20, 120]]}}]
    # Below the first point the first segment extends, above the last the last one does.
    assert values(spec, [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 30.0]) == [
        -50.0,
        0.0,
        50.0,
        100.0,
        110.0,
        120.0,
        140.0,
    ]


def test_calibrate_polynomial():
    # Points on y = x^2 - 2x + 3 are fitted exactly by degree 2.
    spec = [
        {"calibrate_polynomial": {"degree": 2, "datapoints": [[0, 3], [1, 2], [2, 3], [3, 6]]}},
        {"round": 6},
    ]
    assert values(spec, [4.0, -1.0, 0.5]) == [11.0, 6.0, 2.25]


def test_clamp():
    # NaN is not within any bound: ESPHome's !(value >= min) makes it min (it passed unchanged here
    # before; see docs/filters.md).
    assert values([{"clamp": {"min_value": 0, "max_value": 100}}], [-5.0, 50.0, 150.0, NAN]) == [
        0.0,
        50.0,
        100.0,
        0.0,
    ]
    spec = [{"clamp": {"min_value": 0, "max_value": 100, "ignore_out_of_range": True}}]
    assert values(spec, [-5.0, 50.0, 150.0, 100.0]) == [50.0, 100.0]
    assert values([{"clamp": {"max_value": 1}}], [-1e9, 2.0]) == [-1e9, 1.0]


def test_round_is_half_away_from_zero():
    assert values([{"round": 1}], [2.25, -2.25, 2.35, 1.04, NAN]) == [2.3, -2.3, 2.4, 1.0, "nan"]
    assert values([{"round": 0}], [0.5, 1.5, 2.5, -0.5]) == [1.0, 2.0, 3.0, -1.0]


def test_rounding_a_value_whose_scaled_form_overflows():
    # round: ESPHome's roundf(value * 10^decimals) / 10^decimals is +-inf once the product overflows
    # (this vector expected the value unchanged before; see docs/filters.md).
    assert values([{"round": 2}], [1e307, -1e307]) == [INF, -INF]
    # round_to_multiple_of: value - remainderf(value, multiple) is exact, never overflows.
    assert values([{"round_to_multiple_of": 0.5}], [1.7e308, -1.7e308]) == [1.7e308, -1.7e308]


def test_round_to_multiple_of_ties_to_even_like_remainderf():
    assert values([{"round_to_multiple_of": 10}], [14.0, 15.0, 25.0, 26.0, -15.0]) == [
        10.0,
        20.0,
        20.0,
        30.0,
        -20.0,
    ]
    assert values([{"round_to_multiple_of": 0.5}, {"round": 3}], [1.2, 1.3, 1.74]) == [1.0, 1.5, 1.5]


def test_filter_out():
    assert values([{"filter_out": 85.0}], [20.0, 85.0, 21.0]) == [20.0, 21.0]
    assert values([{"filter_out": [85.0, "nan"]}], [85.0, NAN, 1.0]) == [1.0]
    assert values([{"filter_out": 85.0}], [NAN]) == ["nan"]


def test_skip_initial():
    assert values([{"skip_initial": 2}], [1.0, 2.0, 3.0, 4.0]) == [3.0, 4.0]


def test_median_sends_first_at_and_every():
    spec = [{"median": {"window_size": 3, "send_every": 2, "send_first_at": 1}}]
    # Outputs after samples 1, 3, 5: median of [5], of [5, 1, 9], of [9, 2, 7].
    assert values(spec, [5.0, 1.0, 9.0, 2.0, 7.0]) == [5.0, 5.0, 7.0]


def test_median_of_even_count_averages_and_skips_nan():
    spec = [{"median": {"window_size": 4, "send_every": 4, "send_first_at": 4}}]
    assert values(spec, [1.0, 4.0, 2.0, 10.0]) == [3.0]
    assert values(spec, [1.0, NAN, 2.0, 10.0]) == [2.0]
    assert values(spec, [NAN, NAN, NAN, NAN]) == ["nan"]


def test_quantile():
    spec = [{"quantile": {"window_size": 5, "send_every": 5, "send_first_at": 5, "quantile": 0.9}}]
    assert values(spec, [3.0, 1.0, 5.0, 4.0, 2.0]) == [5.0]  # ceil(5 * 0.9) - 1 = index 4
    spec[0]["quantile"]["quantile"] = 0.5
    assert values(spec, [3.0, 1.0, 5.0, 4.0, 2.0]) == [3.0]  # ceil(2.5) - 1 = index 2
    spec[0]["quantile"]["quantile"] = 0.0
    assert values(spec, [3.0, 1.0, NAN, 4.0, 2.0]) == [1.0]


def test_min_max_and_sliding_average():
    window = {"window_size": 3, "send_every": 3, "send_first_at": 3}
    data = [4.0, NAN, 2.0, 8.0, 6.0, 1.0]
    assert values([{"min": window}], data) == [2.0, 1.0]
    assert values([{"max": window}], data) == [4.0, 8.0]
    assert values([{"sliding_window_moving_average": window}], data) == [3.0, 5.0]


def test_sliding_average_defaults_send_first_value():
    # Defaults: window 15, send every 15, first at 1.
    out = values([{"sliding_window_moving_average": None}], [float(i) for i in range(1, 17)])
    assert out == [1.0, 9.0]  # after sample 1, then after sample 16: mean of the window 2..16


def test_exponential_moving_average():
    spec = [{"exponential_moving_average": {"alpha": 0.5, "send_every": 1}}]
    assert values(spec, [10.0, 20.0, 20.0, NAN, 0.0]) == [10.0, 15.0, 17.5, "nan", 8.75]
    spec = [{"exponential_moving_average": {"alpha": 0.5, "send_every": 2, "send_first_at": 2}}]
    assert values(spec, [10.0, 20.0, 20.0, 0.0]) == [15.0, 8.75]


def test_throttle():
    samples = [(0, 1.0), (400, 2.0), (999, 3.0), (1000, 4.0), (1500, 5.0), (2100, 6.0)]
    assert run([{"throttle": "1s"}], samples) == [(0, 1.0), (1000, 4.0), (2100, 6.0)]


def test_throttle_average_emits_on_the_clock():
    samples = [(0, 1.0), (300, 2.0), (600, 3.0), (900, NAN), (1200, 10.0), (2600, NAN)]
    # Period 1 s from the first sample: at 1000 the mean of 1, 2, 3; at 2000 the mean of 10;
    # at 3000 only a NaN came in, so NaN.
    out = run([{"throttle_average": "1s"}], samples + [(3100, 7.0)], poll_every=100)
    assert out == [(1000, 2.0), (2000, 10.0), (3000, "nan")]


def test_heartbeat_repeats_the_last_value():
    samples = [(0, 1.0), (1500, 2.0), (1600, 3.0), (4100, 4.0)]
    assert run([{"heartbeat": "1s"}], samples, poll_every=100) == [
        (1000, 1.0),
        (2000, 3.0),
        (3000, 3.0),
        (4000, 3.0),
    ]
    optimistic = run([{"heartbeat": {"period": "1s", "optimistic": True}}], samples[:2], poll_every=100)
    assert optimistic == [(0, 1.0), (1000, 1.0), (1500, 2.0)]


def test_debounce_waits_for_quiet():
    samples = [(0, 1.0), (200, 2.0), (400, 3.0), (2000, 4.0), (2100, 5.0), (5000, 6.0)]
    assert run([{"debounce": "500ms"}], samples, poll_every=100) == [(900, 3.0), (2600, 5.0)]


def test_timeout_sends_value_once_when_quiet():
    samples = [(0, 1.0), (500, 2.0), (3000, 3.0), (3200, 4.0)]
    assert run([{"timeout": {"time": "1s", "value": 0}}], samples, poll_every=100) == [
        (0, 1.0),
        (500, 2.0),
        (1500, 0.0),
        (3000, 3.0),
        (3200, 4.0),
    ]
    assert run([{"timeout": "1s"}], samples[:2] + [(2000, 5.0)], poll_every=100) == [
        (0, 1.0),
        (500, 2.0),
        (1500, "nan"),
        (2000, 5.0),
    ]


def test_delta_absolute_and_percent():
    # ESPHome passes a change strictly above delta (>= before, see docs/filters.md), and after a
    # number never a NaN (|NaN - last| > delta is false).
    assert values([{"delta": 1.0}], [10.0, 10.5, 11.0, 11.5, 10.2, 9.1, NAN, NAN, 8.0]) == [
        10.0,
        11.5,
        10.2,
        9.1,
        8.0,
    ]
    # Percent: the threshold is 10 % of the last value passed.
    assert values([{"delta": "10%"}], [100.0, 109.0, 110.0, 110.5, 121.0, 121.6]) == [100.0, 110.5, 121.6]


def test_or_passes_what_any_child_passes_once():
    spec = [{"or": [{"throttle": "10s"}, {"delta": 5.0}]}]
    samples = [(0, 20.0), (1000, 21.0), (2000, 30.0), (3000, 31.0), (11000, 31.5)]
    assert run(spec, samples) == [(0, 20.0), (2000, 30.0), (11000, 31.5)]


def test_chain_order_and_stop():
    spec = [
        {"filter_out": 0.0},
        {"multiply": 2},
        {"clamp": {"max_value": 10, "ignore_out_of_range": True}},
        {"round": 1},
    ]
    assert values(spec, [0.0, 1.26, 6.0, 4.0]) == [2.5, 8.0]


def test_timed_filter_output_goes_through_the_rest_of_the_chain():
    spec = [{"heartbeat": "1s"}, {"offset": 100}]
    assert run(spec, [(0, 1.0), (2100, 2.0)], poll_every=100) == [(1000, 101.0), (2000, 101.0)]


def test_windows_survive_ticks_wrapping():
    # Millisecond ticks wrap on a board; throttle compares by difference, which stays correct.
    chain = build_chain([{"throttle": 1000}])
    assert chain.process(1.0, 5) == 1.0
    assert chain.process(2.0, 500) is None
    assert chain.process(3.0, 1005) == 3.0


def test_durations():
    assert parse_duration_ms("500ms", "x") == 500
    assert parse_duration_ms("2s", "x") == 2000
    assert parse_duration_ms("1.5min", "x") == 90000
    assert parse_duration_ms("1h", "x") == 3600000
    assert parse_duration_ms(250, "x") == 250
    for bad in ("soon", "0s", -5, True, None, "5 parsecs"):
        raises(FilterConfigError, parse_duration_ms, bad, "x")


def test_config_errors_name_the_culprit():
    cases = [
        ([{"smooth": 3}], "filters[0] (smooth): unknown filter 'smooth'"),
        ([{"offset": "2"}], "filters[0] (offset): offset must be a number, got '2'"),
        (
            [{"round": 1}, {"median": {"window_size": 0}}],
            "filters[1] (median): window_size must be an integer from 1 to 256, got 0",
        ),
        (
            [{"median": {"window_size": 5, "send_every": 2, "send_first_at": 3}}],
            "filters[0] (median): send_first_at (3) cannot exceed send_every (2)",
        ),
        ([{"median": {"window": 5}}], "filters[0] (median): unknown parameter 'window'"),
        (
            [{"calibrate_linear": [[1, 2], [1, 3]]}],
            "filters[0] (calibrate_linear): needs at least two datapoints with different x",
        ),
        (
            [{"calibrate_polynomial": {"degree": 3, "datapoints": [[0, 1], [1, 2]]}}],
            "filters[0] (calibrate_polynomial): degree 3 needs at least 4 datapoints, got 2",
        ),
        (
            [{"clamp": {"min_value": 5, "max_value": 1}}],
            "filters[0] (clamp): min_value 5.0 is above max_value 1.0",
        ),
        ([{"throttle": "fast"}], "filters[0] (throttle): 'fast' is not a duration (use ms, s, min or h)"),
        ([{"or": [{"delta": -1}]}], "filters[0] (or) > or[0] (delta): delta must not be negative, got -1"),
        ([{"offset": 1, "multiply": 2}], "filters[0]: a filter is an object with one key, its name"),
        ({"offset": 1}, "filters: must be a list of filters"),
    ]
    for specs, message in cases:
        exc = raises(FilterConfigError, build_chain, specs)
        assert str(exc).startswith(message), str(exc)


def test_compiled_chains_are_checked_on_the_node():
    from shared.filterlib import from_compiled

    assert from_compiled([["offset", 1.5], ["or", [["throttle", 100], ["delta", 2.0, False]]]]).process(1.0, 0) == 2.5
    for bad in ([["value", 1]], [["Offset", 1]], [["time"]], [["smooth", 3]], [[]], ["offset"], [5]):
        assert str(raises(ValueError, from_compiled, bad)).startswith("filter 0: unknown")
    assert str(raises(ValueError, from_compiled, [["round", 1], ["median", 5]])).startswith("filter 1 (median):")
    raises(ValueError, from_compiled, {"offset": 1})


# --- The registry ---------------------------------------------------------------------------------


def test_every_registered_filter_has_a_runtime_module_and_a_spec():
    from shared.filter_config import spec_names
    from shared.filterlib import NAMES, runtime

    assert sorted(NAMES) == spec_names()
    assert len(set(NAMES)) == len(NAMES)
    for name in NAMES:
        if name != "or":
            assert callable(runtime(name).make), name


# --- ESPHome conformance at the edges (docs/filters.md says where each comes from) ---------------


def test_or_forwards_only_the_first_result_after_each_input():
    # Both children pass 1.0: one output. Then the heartbeat's beats: the first after an input that
    # produced nothing goes on, later ones are dropped until the next input (OrFilter::PhiNode).
    spec = [{"or": [{"offset": 1}, {"multiply": 10}]}]
    assert values(spec, [1.0, 2.0]) == [2.0, 3.0]
    spec = [{"or": [{"heartbeat": "1s"}, {"filter_out": 5}]}]
    samples = [(0, 5.0), (3500, 6.0), (3600, 5.0), (4100, 5.0)]
    assert run(spec, samples, poll_every=100) == [(1000, 5.0), (3500, 6.0), (4000, 5.0)]


def test_clamp_nan_and_infinities():
    spec = [{"clamp": {"min_value": -1, "max_value": 1}}]
    assert values(spec, [NAN, INF, -INF, 0.5]) == [-1.0, 1.0, -1.0, 0.5]
    # Only a max: NaN is not <= max, so it becomes max; -inf is within.
    assert values([{"clamp": {"max_value": 1}}], [NAN, -INF]) == [1.0, -INF]
    assert values([{"clamp": {"min_value": 0, "ignore_out_of_range": True}}], [NAN, INF, -1.0]) == [INF]


def test_calibrate_polynomial_with_infinite_input_is_a_power_sum():
    # x^2 - 2x + 3 (coefficients 3, -2, 1): +inf + -inf terms give NaN in ESPHome's power sum.
    spec = [{"calibrate_polynomial": {"degree": 2, "datapoints": [[0, 3], [1, 2], [2, 3], [3, 6]]}}]
    assert values(spec, [INF, -INF, NAN]) == ["nan", INF, "nan"]  # -inf: 3 + inf + inf
    # y = 2x (coefficients 0, 2): 0 * 1 + 2 * inf = inf.
    spec = [{"calibrate_polynomial": {"degree": 1, "datapoints": [[0, 0], [1, 2]]}}]
    assert values(spec, [INF, -INF]) == [INF, -INF]


def test_timer_phase_is_kept_after_a_stalled_loop():
    # Beats at 1000, 2000, ...; the loop stalls from 1200 to 4500: one beat at 4500, then 5000.
    chain = build_chain([{"heartbeat": "1s"}])
    assert chain.process(1.0, 0) is None
    assert chain.poll(1000) == 1.0
    assert chain.process(3.0, 1200) is None
    assert [chain.poll(t) for t in (4500, 4600, 4999, 5000, 5999, 6000)] == [3.0, None, None, 3.0, None, 3.0]
    chain = build_chain([{"throttle_average": "1s"}])
    chain.process(2.0, 0)
    chain.process(4.0, 900)
    assert chain.poll(3700) == 3.0  # late, once
    chain.process(10.0, 3800)
    assert chain.poll(3999) is None
    assert chain.poll(4000) == 10.0  # back on the grid of 1000s


def test_round_ties_and_overflow():
    assert values([{"round": 0}], [0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994]) == [1.0, 2.0, 3.0, -1.0, -3.0, 0.0]
    assert values([{"round": 2}], [1.005, 2.675, NAN, INF]) == [1.0, 2.68, "nan", INF]  # 1.005 is 1.00499...
    assert values([{"round": 10}], [1e300, -1e299]) == [INF, -INF]  # 1e310, -1e309 overflow
    assert values([{"round": 0}], [1e300, -1.7e308]) == [1e300, -1.7e308]
    assert values([{"round_to_multiple_of": 10}], [5.0, 15.0, -25.0, 35.0]) == [0.0, 20.0, -20.0, 40.0]
    assert values([{"round_to_multiple_of": 1e-300}], [1e10, 3.0]) == [1e10, 3.0]
    assert values([{"round_to_multiple_of": 0.25}], [3.1415, 1.618, INF, NAN]) == [3.25, 1.5, INF, "nan"]


def test_round_to_significant_digits():
    assert values([{"round_to_significant_digits": 2}], [3.14159, 157079.0, -0.001234, 0.0]) == [
        3.1,
        160000.0,
        -0.0012,
        0.0,
    ]
    assert values([{"round_to_significant_digits": 4}], [3.14159, 157079.0, 999.95, NAN]) == [
        3.142,
        157100.0,
        1000.0,
        "nan",
    ]


def test_filter_out_compares_at_accuracy_decimals():
    spec = [{"filter_out": [85.0, "nan"]}]
    # ESPHome's default accuracy is 0 decimals: 84.6 rounds to 85 and goes too.
    assert values(spec, [84.6, 84.4, NAN, 85.0]) == [84.4]
    chain = build_chain([{"filter_out": 85.0}], "filters", 1)
    assert [chain.process(v, 0) for v in (84.96, 84.94, 85.04)] == [None, 84.94, None]
    chain = build_chain([{"filter_out": 0.5}], "filters", 0)
    assert [chain.process(v, 0) for v in (0.7, 1.4, 1.5, -0.5)] == [None, None, 1.5, -0.5]


def test_delta_strictness_nan_and_bounds():
    assert values([{"delta": 0}], [1.0, 1.0, 1.0000001, 1.0000001]) == [1.0, 1.0000001]
    assert values([{"delta": 2.0}], [NAN, NAN, 5.0, 7.0, 7.5, NAN, 10.0]) == ["nan", "nan", 5.0, 7.5, 10.0]
    spec = [{"delta": {"min_value": 1, "max_value": 10}}]
    assert values(spec, [0.0, 0.5, 5.0, 20.0, 15.0, 25.0]) == [0.0, 5.0, 15.0, 25.0]
    spec = [{"delta": {"max_value": "50%"}}]  # min 0: a change above 0 and at most half the last
    assert values(spec, [10.0, 10.0, 14.0, 30.0, 21.0, 0.0]) == [10.0, 14.0, 21.0]


def test_timeout_with_value_last():
    samples = [(0, 1.0), (500, 2.0), (3000, 3.0)]
    assert run([{"timeout": {"timeout": "1s", "value": "last"}}], samples, poll_every=100) == [
        (0, 1.0),
        (500, 2.0),
        (1500, 2.0),
        (3000, 3.0),
    ]


def test_throttle_with_priority():
    samples = [(0, 1.0), (200, 2.0), (300, NAN), (400, 3.0), (1300, 4.0), (1400, 0.2)]
    assert run([{"throttle_with_priority": "1s"}], samples) == [(0, 1.0), (300, "nan"), (1300, 4.0)]
    spec = [{"throttle_with_priority": {"timeout": "1s", "value": [0, "nan"]}}]
    assert run(spec, samples) == [(0, 1.0), (300, "nan"), (1300, 4.0), (1400, 0.2)]


def test_ntc_conversions_round_trip():
    cal = {"calibration": ["10.0kOhm -> 25°C", "27.219kOhm -> 0°C", "14.674kOhm -> 15°C"]}
    r = build_chain([{"to_ntc_resistance": cal}]).process(25.0, 0)
    assert abs(r - 10000.0) < 1e-6
    t = build_chain([{"to_ntc_temperature": cal}]).process(27219.0, 0)
    assert abs(t) < 1e-6
    beta = {"calibration": {"b_constant": 3950, "reference_temperature": 25, "reference_resistance": "10kOhm"}}
    assert abs(build_chain([{"to_ntc_temperature": beta}]).process(10000.0, 0) - 25.0) < 1e-9
    assert abs(build_chain([{"to_ntc_resistance": beta}]).process(25.0, 0) - 10000.0) < 1e-6
    assert values([{"to_ntc_temperature": beta}], [NAN, INF, -5.0]) == ["nan", "nan", "nan"]


# --- The checker ----------------------------------------------------------------------------------


def test_checker_refuses_what_esphome_refuses_and_what_a_node_cannot_run():
    cases = [
        ([{"clamp": {}}], "filters[0] (clamp): set min_value, max_value or both"),
        ([{"skip_initial": 0}], "filters[0] (skip_initial): count must be an integer from 1"),
        ([{"throttle": "0.5ms"}], "filters[0] (throttle): duration must be from 1 ms"),
        ([{"debounce": 1.5}], "filters[0] (debounce): durations are whole milliseconds"),
        ([{"offset": 10**400}], "filters[0] (offset): offset must be a finite number"),
        ([{"delta": {}}], "filters[0] (delta): set min_value, max_value or both"),
        ([{"delta": "150%"}], "filters[0] (delta): delta must be a number or a percentage from 0% to 100%"),
        ([{"round_to_significant_digits": 7}], "filters[0] (round_to_significant_digits): digits must be"),
        ([{"calibrate_linear": [[0, 1]]}], "filters[0] (calibrate_linear): needs at least two datapoints"),
        ([{"calibrate_polynomial": {"degree": 2}}], "filters[0] (calibrate_polynomial): datapoints is required"),
        ([{"filter_out": []}], "filters[0] (filter_out): value needs at least one value"),
        ([{"timeout": {"timeout": "1s", "value": "first"}}], "filters[0] (timeout): value must be a number"),
        ([{"or": []}], "filters[0] (or): 'or' takes a non-empty list of filters"),
    ]
    for specs, message in cases:
        exc = raises(FilterConfigError, build_chain, specs)
        assert str(exc).startswith(message), str(exc)


def test_every_problem_of_a_chain_is_listed_naming_the_filter():
    specs = [{"round": 1.5}, {"median": {"window_size": 0, "send_every": 0}}, {"or": [{"delta": -1}, {"x": 1}]}]
    assert raises(FilterConfigError, build_chain, specs).problems == [
        "filters[0] (round): decimals must be an integer from 0 to 10, got 1.5",
        "filters[1] (median): window_size must be an integer from 1 to 256, got 0",
        "filters[1] (median): send_every must be an integer from 1 to 65535, got 0",
        "filters[2] (or) > or[0] (delta): delta must not be negative, got -1",
        "filters[2] (or) > or[1] (x): unknown filter 'x'",
    ]


def test_checker_survives_hostile_input():
    deep = []
    inner = deep
    for _ in range(2000):  # 100,000 on CPython in tests/test_sensing_config.py; the same code path
        nested = []
        inner.append({"or": nested})
        inner = nested
    problems = raises(FilterConfigError, build_chain, deep).problems
    assert len(problems) == 1 and problems[0].endswith("'or' nested more than 8 deep"), problems
    message = str(raises(FilterConfigError, build_chain, [{"y" * 100000: 1}]))
    assert len(message) < 200 and "(100000 characters)" in message
    for spec in ([{"offset": [[[[[1]]]]]}], [{"median": {"window_size": "x" * 100000}}], [5], [{}], [None]):
        assert len(str(raises(FilterConfigError, build_chain, spec))) < 300
    raises(FilterConfigError, build_chain, [{"offset": 1}] * 33)


def test_compiled_values_are_finite_and_plain():
    import json

    from shared.filter_config import compile_chain

    problems = raises(FilterConfigError, compile_chain, [{"calibrate_linear": [[0, -1e308], [1e-10, 1e308]]}])
    assert "not finite" in str(problems), str(problems)
    compiled = compile_chain(
        [
            {"clamp": {"max_value": 5}},
            {"timeout": {"timeout": "1s", "value": "last"}},
            {"throttle_with_priority": "2s"},
            {"delta": {"min_value": "1%", "max_value": 10}},
        ]
    )
    assert json.loads(json.dumps(compiled)) == compiled
    assert compiled == [
        ["clamp", None, 5.0, False],
        ["timeout", 1000, "last"],
        ["throttle_with_priority", 2000, [], True, 0],
        ["delta", 0.01, True, 10.0, False],
    ]
