# Checking filter chains written the readable way ({name: parameters} objects, ESPHome's names and
# defaults), with errors that name the filter and the wrong value, and compiling them to the compact
# form a node builds its chains from ([name, arg, ...], see shared/filters.py). The host runs this
# before a config goes into a device bundle; nodes never load it.

from shared.filterlib import from_compiled
from shared.filters import INF, NAN, isnan

MAX_WINDOW = 256  # window sizes beyond this cost more RAM than a node should spend on one filter


class FilterConfigError(ValueError):
    """A filter spec that cannot be built; the message names the filter and the wrong value."""


def parse_duration_ms(value, where):
    """'500ms', '2s', '1min', '1h' or a number of milliseconds -> int milliseconds (> 0)."""
    if isinstance(value, bool):
        raise FilterConfigError(where + ": " + repr(value) + " is not a duration")
    if isinstance(value, (int, float)):
        ms = value
    elif isinstance(value, str):
        text = value.strip()
        for suffix, scale in (("ms", 1), ("min", 60000), ("s", 1000), ("h", 3600000)):
            if text.endswith(suffix):
                try:
                    ms = float(text[: len(text) - len(suffix)]) * scale
                except ValueError:
                    raise FilterConfigError(where + ": " + repr(value) + " is not a duration")
                break
        else:
            raise FilterConfigError(where + ": " + repr(value) + " is not a duration (use ms, s, min or h)")
    else:
        raise FilterConfigError(where + ": " + repr(value) + " is not a duration")
    if not ms > 0 or ms > 2**29:
        raise FilterConfigError(where + ": duration must be above 0 and below 6 days, got " + repr(value))
    return int(ms)


def _least_squares_line(points, where):
    n = len(points)
    sx = sy = sxx = sxy = 0.0
    for x, y in points:
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    denominator = n * sxx - sx * sx
    if n < 2 or denominator == 0:
        raise FilterConfigError(where + ": needs at least two datapoints with different x")
    slope = (n * sxy - sx * sy) / denominator
    return slope, (sy - slope * sx) / n


def _exact_segments(points, where):
    points = sorted(points)
    if len(points) < 2:
        raise FilterConfigError(where + ": needs at least two datapoints")
    segments = []
    for i in range(len(points) - 1):
        (x0, y0), (x1, y1) = points[i], points[i + 1]
        if x1 == x0:
            raise FilterConfigError(where + ": two datapoints share x = " + repr(x0))
        slope = (y1 - y0) / (x1 - x0)
        segments.append((slope, y0 - slope * x0, x1 if i < len(points) - 2 else INF))
    return segments


def _polynomial_fit(points, degree, where):
    """Least-squares coefficients by the normal equations and Gaussian elimination with pivoting."""
    size = degree + 1
    if len(points) < size:
        raise FilterConfigError(
            where + ": degree " + str(degree) + " needs at least " + str(size) + " datapoints, got " + str(len(points))
        )
    matrix = [[0.0] * (size + 1) for _ in range(size)]
    for x, y in points:
        powers = [1.0]
        for _ in range(2 * degree):
            powers.append(powers[-1] * x)
        for row in range(size):
            for col in range(size):
                matrix[row][col] += powers[row + col]
            matrix[row][size] += y * powers[row]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(matrix[r][col]))
        if abs(matrix[pivot][col]) < 1e-12:
            raise FilterConfigError(where + ": datapoints do not determine a polynomial of degree " + str(degree))
        matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
        for row in range(size):
            if row != col:
                factor = matrix[row][col] / matrix[col][col]
                for k in range(col, size + 1):
                    matrix[row][k] -= factor * matrix[col][k]
    return [matrix[i][size] / matrix[i][i] for i in range(size)]


def _number(value, where, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FilterConfigError(where + ": " + name + " must be a number, got " + repr(value))
    value = float(value)
    if isnan(value) or value in (INF, -INF):
        raise FilterConfigError(where + ": " + name + " must be finite, got " + repr(value))
    return value


def _integer(value, where, name, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FilterConfigError(
            where + ": " + name + " must be an integer from " + str(low) + " to " + str(high) + ", got " + repr(value)
        )
    return value


def _params(spec, where, allowed):
    if not isinstance(spec, dict):
        raise FilterConfigError(where + ": parameters must be an object, got " + repr(spec))
    for key in spec:
        if key not in allowed:
            raise FilterConfigError(where + ": unknown parameter " + repr(key) + " (known: " + ", ".join(allowed) + ")")
    return spec


def _datapoints(spec, where):
    points = []
    if not isinstance(spec, list) or not spec:
        raise FilterConfigError(where + ": datapoints must be a non-empty list")
    for point in spec:
        if isinstance(point, str) and "->" in point:
            x, y = point.split("->")
            try:
                point = [float(x), float(y)]
            except ValueError:
                raise FilterConfigError(where + ": datapoint " + repr(point) + " is not 'x -> y'")
        if not isinstance(point, list) or len(point) != 2:
            raise FilterConfigError(where + ": datapoint " + repr(point) + " must be [x, y] or 'x -> y'")
        points.append((_number(point[0], where, "datapoint x"), _number(point[1], where, "datapoint y")))
    return points


def _schedule(p, where, every):
    """send_every and send_first_at, ESPHome's output schedule of windowed filters."""
    every = _integer(p.get("send_every", every), where, "send_every", 1, 100000)
    first = _integer(p.get("send_first_at", 1), where, "send_first_at", 1, 100000)
    if first > every:
        raise FilterConfigError(
            where + ": send_first_at (" + str(first) + ") cannot exceed send_every (" + str(every) + ")"
        )
    return every, first


def _window(spec, where, size, every, extra=()):
    p = _params(spec if spec is not None else {}, where, ("window_size", "send_every", "send_first_at") + extra)
    size = _integer(p.get("window_size", size), where, "window_size", 1, MAX_WINDOW)
    every, first = _schedule(p, where, every)
    return size, every, first, p


def _build_one(name, spec, where):
    if name == "offset":
        return ["offset", _number(spec, where, "offset")]
    if name == "multiply":
        return ["multiply", _number(spec, where, "factor")]
    if name == "calibrate_linear":
        method = "least_squares"
        if isinstance(spec, dict):
            p = _params(spec, where, ("datapoints", "method"))
            method = p.get("method", method)
            spec = p.get("datapoints")
        points = _datapoints(spec, where)
        if method == "least_squares":
            slope, bias = _least_squares_line(points, where)
            return ["linear", [[slope, bias, None]]]
        if method == "exact":
            return ["linear", [[a, b, None if c == INF else c] for a, b, c in _exact_segments(points, where)]]
        raise FilterConfigError(where + ": method must be 'least_squares' or 'exact', got " + repr(method))
    if name == "calibrate_polynomial":
        p = _params(spec, where, ("degree", "datapoints"))
        degree = _integer(p.get("degree"), where, "degree", 1, 8)
        return ["polynomial", _polynomial_fit(_datapoints(p.get("datapoints"), where), degree, where)]
    if name == "clamp":
        p = _params(spec, where, ("min_value", "max_value", "ignore_out_of_range"))
        low = _number(p["min_value"], where, "min_value") if "min_value" in p else -INF
        high = _number(p["max_value"], where, "max_value") if "max_value" in p else INF
        if low > high:
            raise FilterConfigError(where + ": min_value " + repr(low) + " is above max_value " + repr(high))
        ignore = p.get("ignore_out_of_range", False)
        if not isinstance(ignore, bool):
            raise FilterConfigError(where + ": ignore_out_of_range must be true or false, got " + repr(ignore))
        return ["clamp", None if low == -INF else low, None if high == INF else high, ignore]
    if name == "round":
        return ["round", _integer(spec, where, "decimals", 0, 10)]
    if name == "round_to_multiple_of":
        multiple = _number(spec, where, "multiple")
        if multiple <= 0:
            raise FilterConfigError(where + ": multiple must be above 0, got " + repr(spec))
        return ["round_to_multiple_of", multiple]
    if name == "filter_out":
        values = spec if isinstance(spec, list) else [spec]
        parsed = []
        for v in values:
            if isinstance(v, str) and v.lower() == "nan":
                parsed.append(NAN)
            else:
                parsed.append(_number(v, where, "value"))
        return ["filter_out", [v for v in parsed if not isnan(v)], any(isnan(v) for v in parsed)]
    if name == "skip_initial":
        return ["skip_initial", _integer(spec, where, "count", 0, 100000)]
    if name in ("median", "min", "max"):
        size, every, first, _ = _window(spec, where, 5, 5)
        return [name, size, every, first]
    if name == "quantile":
        size, every, first, p = _window(spec, where, 5, 5, ("quantile",))
        q = _number(p.get("quantile", 0.9), where, "quantile")
        if not 0 <= q <= 1:
            raise FilterConfigError(where + ": quantile must be from 0 to 1, got " + repr(q))
        return ["quantile", size, every, first, q]
    if name == "sliding_window_moving_average":
        size, every, first, _ = _window(spec, where, 15, 15)
        return ["sliding_window_moving_average", size, every, first]
    if name == "exponential_moving_average":
        p = _params(spec if spec is not None else {}, where, ("alpha", "send_every", "send_first_at"))
        alpha = _number(p.get("alpha", 0.1), where, "alpha")
        if not 0 < alpha <= 1:
            raise FilterConfigError(where + ": alpha must be above 0 and at most 1, got " + repr(alpha))
        every, first = _schedule(p, where, 15)
        return ["exponential_moving_average", alpha, every, first]
    if name == "throttle":
        return ["throttle", parse_duration_ms(spec, where)]
    if name == "throttle_average":
        return ["throttle_average", parse_duration_ms(spec, where)]
    if name == "heartbeat":
        if isinstance(spec, dict):
            p = _params(spec, where, ("period", "optimistic"))
            optimistic = p.get("optimistic", False)
            if not isinstance(optimistic, bool):
                raise FilterConfigError(where + ": optimistic must be true or false, got " + repr(optimistic))
            return ["heartbeat", parse_duration_ms(p.get("period"), where), optimistic]
        return ["heartbeat", parse_duration_ms(spec, where), False]
    if name == "debounce":
        return ["debounce", parse_duration_ms(spec, where)]
    if name == "timeout":
        if isinstance(spec, dict):
            p = _params(spec, where, ("time", "value"))
            value = p.get("value", NAN)
            value = NAN if isinstance(value, str) and value.lower() == "nan" else _number(value, where, "value")
            return ["timeout", parse_duration_ms(p.get("time"), where), None if isnan(value) else value]
        return ["timeout", parse_duration_ms(spec, where), None]
    if name == "delta":
        if isinstance(spec, str) and spec.strip().endswith("%"):
            try:
                percent = float(spec.strip()[:-1])
            except ValueError:
                raise FilterConfigError(where + ": " + repr(spec) + " is not a percentage")
            if not percent > 0:
                raise FilterConfigError(where + ": percentage must be above 0, got " + repr(spec))
            return ["delta", percent / 100, True]
        delta = _number(spec, where, "delta")
        if delta < 0:
            raise FilterConfigError(where + ": delta must not be negative, got " + repr(spec))
        return ["delta", delta, False]
    if name == "or":
        if not isinstance(spec, list) or not spec:
            raise FilterConfigError(where + ": 'or' takes a non-empty list of filters")
        return ["or", [compile_filter(child, where + " > or[" + str(i) + "]") for i, child in enumerate(spec)]]
    raise FilterConfigError(where + ": unknown filter " + repr(name))


FILTER_NAMES = (
    "offset",
    "multiply",
    "calibrate_linear",
    "calibrate_polynomial",
    "clamp",
    "round",
    "round_to_multiple_of",
    "filter_out",
    "skip_initial",
    "median",
    "quantile",
    "min",
    "max",
    "sliding_window_moving_average",
    "exponential_moving_average",
    "throttle",
    "throttle_average",
    "heartbeat",
    "debounce",
    "timeout",
    "delta",
    "or",
)


def compile_filter(spec, where="filter"):
    """One filter's compiled form from {name: parameters}; FilterConfigError names the culprit."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise FilterConfigError(where + ": a filter is an object with one key, its name; got " + repr(spec))
    for name in spec:
        return _build_one(name, spec[name], where + " (" + str(name) + ")")


def compile_chain(specs, where="filters"):
    """The compiled form of a readable filter list (what goes into a device bundle)."""
    if specs is None:
        specs = []
    if not isinstance(specs, list):
        raise FilterConfigError(where + ": must be a list of filters")
    return [compile_filter(spec, where + "[" + str(i) + "]") for i, spec in enumerate(specs)]


def build_chain(specs, where="filters"):
    """A Chain from a readable filter list, built the way a node builds it: through the compiled form."""
    return from_compiled(compile_chain(specs, where))
