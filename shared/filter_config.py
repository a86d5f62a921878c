# The host side of the filter registry (shared/filterlib/__init__.py holds the one list of names):
# for every filter a spec, a function of the same name, that checks the readable ESPHome-style
# parameters and compiles them to the compact form a node builds its chains from ([name, arg, ...],
# the arguments of shared/filterlib/<name>.py's `make`). The host runs this before a config goes
# into a device bundle; nodes never load it. It runs on MicroPython too (tests/dual).
#
# The checker cannot be crashed and never passes what a node cannot run: every problem of a chain
# is listed, each naming the filter; names and values in messages are cut short; compiled values are
# finite floats, bounded integers, booleans, strings and lists (what MicroPython's json reads back);
# durations are whole milliseconds from 1 ms to 2**29 ms; `or` nests at most MAX_OR_DEPTH deep and a
# chain holds at most MAX_FILTERS filters. Where ESPHome refuses a config, so does this.
import math

from shared.filterlib import NAMES, from_compiled
from shared.filters import INF, isnan

MAX_WINDOW = 256  # window sizes beyond this cost more RAM than a node should spend on one filter
MAX_FILTERS = 32  # filters in one chain (an `or` counts its children too)
MAX_OR_DEPTH = 8  # `or` inside `or`: the node builds them recursively
MAX_DURATION_MS = 2**29  # ticks_diff on a board compares up to half its 2**30 ms period
MAX_SHOWN = 40  # characters of a name or value shown in a message


class FilterConfigError(ValueError):
    """Filters that cannot be built: `problems` lists each one, naming the filter and the culprit;
    str() joins them with '; '."""

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        super().__init__("; ".join(problems))
        self.problems = problems


def show(value, depth=2):
    """A short, safe rendering of any JSON value for a message: long strings and big containers
    are cut, deep nesting is not followed."""
    if isinstance(value, str):
        if len(value) > MAX_SHOWN:
            return repr(value[:MAX_SHOWN]) + "... (" + str(len(value)) + " characters)"
        return repr(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        if -(10**15) < value < 10**15:
            return repr(value)
        return "an integer of more than 15 digits"
    if isinstance(value, (list, tuple)):
        if depth <= 0:
            return "[...]"
        items = [show(v, depth - 1) for v in value[:4]]
        return "[" + ", ".join(items) + (", ...]" if len(value) > 4 else "]")
    if isinstance(value, dict):
        if depth <= 0:
            return "{...}"
        items = []
        for k in value:
            if len(items) == 4:
                items.append("...")
                break
            items.append(show(k, 0) + ": " + show(value[k], depth - 1))
        return "{" + ", ".join(items) + "}"
    return "a " + type(value).__name__


def _cut(name):
    return name if len(name) <= MAX_SHOWN else name[:MAX_SHOWN] + "..."


def _ms(text, scale):
    """A number of milliseconds from a decimal number and a unit scale, or None."""
    try:
        value = float(text)
    except (ValueError, TypeError):
        return None
    return value * scale


def parse_duration_ms(value, where):
    """'500ms', '2s', '1.5min', '1h' or a number of milliseconds -> int milliseconds, from 1 to
    MAX_DURATION_MS; a fraction of a millisecond is refused (ESPHome: "maximum precision is
    milliseconds")."""
    ms = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, (int, float)):
        ms = float(value) if -(2**53) < value < 2**53 else INF
    elif isinstance(value, str) and len(value) < 64:
        text = value.strip()
        for suffix, scale in (("ms", 1), ("min", 60000), ("s", 1000), ("h", 3600000)):
            if text.endswith(suffix):
                ms = _ms(text[: len(text) - len(suffix)], scale)
                if ms is None:
                    raise FilterConfigError(where + ": " + show(value) + " is not a duration")
                break
        else:
            raise FilterConfigError(where + ": " + show(value) + " is not a duration (use ms, s, min or h)")
    if ms is None:
        raise FilterConfigError(where + ": " + show(value) + " is not a duration")
    if not 1 <= ms <= MAX_DURATION_MS:
        raise FilterConfigError(where + ": duration must be from 1 ms to 6 days, got " + show(value))
    whole = int(ms + 0.5)
    if abs(ms - whole) > 1e-6 * ms:
        raise FilterConfigError(where + ": durations are whole milliseconds, got " + show(value))
    return whole


class _Check:
    """One filter's checks: each helper records a problem (naming the filter) and returns a
    harmless stand-in, so that every problem of the filter is found in one pass."""

    def __init__(self, where, decimals, depth, problems, count):
        self.where = where
        self.decimals = decimals
        self.depth = depth
        self.problems = problems
        self.count = count  # a one-item list: filters compiled so far in the whole chain
        self.start = len(problems)

    def failed(self):
        """Has this filter recorded a problem already?"""
        return len(self.problems) > self.start

    def fail(self, message):
        self.problems.append(self.where + ": " + message)

    def number(self, value, name):
        """A finite float."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name + " must be a number, got " + show(value))
            return 0.0
        try:
            result = float(value)
        except OverflowError:
            result = INF
        if isnan(result) or result in (INF, -INF):
            self.fail(name + " must be a finite number, got " + show(value))
            return 0.0
        return result

    def integer(self, value, name, low, high):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(name + " must be an integer from " + str(low) + " to " + str(high) + ", got " + show(value))
            return low
        return value

    def boolean(self, value, name):
        if not isinstance(value, bool):
            self.fail(name + " must be true or false, got " + show(value))
            return False
        return value

    def duration(self, value, name=None):
        try:
            return parse_duration_ms(value, self.where if name is None else self.where + ": " + name)
        except FilterConfigError as exc:
            self.problems.append(str(exc))
            return 1

    def percent(self, value, name):
        """A number (absolute, returned with False) or 'N%' (a fraction, returned with True)."""
        if isinstance(value, str) and value.strip().endswith("%"):
            fraction = _ms(value.strip()[:-1], 0.01)
            if fraction is None or not 0 <= fraction <= 1:
                self.fail(name + " must be a number or a percentage from 0% to 100%, got " + show(value))
                return 0.0, True
            return fraction, True
        result = self.number(value, name)
        if result < 0:
            self.fail(name + " must not be negative, got " + show(value))
        return result, False

    def params(self, spec, allowed, simple=None):
        """The parameters object; with `simple`, a bare value stands for that one parameter
        (ESPHome's maybe_simple_value)."""
        if simple is not None and not isinstance(spec, dict):
            return {simple: spec}
        if spec is None:
            return {}
        if not isinstance(spec, dict):
            self.fail("parameters must be an object, got " + show(spec))
            return {}
        for key in spec:
            if key not in allowed:
                self.fail("unknown parameter " + show(key) + " (known: " + ", ".join(allowed) + ")")
        return spec

    def required(self, p, key):
        if key not in p:
            self.fail(key + " is required")
            return False
        return True

    def values(self, spec, name):
        """filter_out's and throttle_with_priority's list: numbers, and 'nan' -> (numbers, nan?)."""
        items = spec if isinstance(spec, list) else [spec]
        if not items:
            self.fail(name + " needs at least one value")
        if len(items) > MAX_WINDOW:
            self.fail(name + " takes at most " + str(MAX_WINDOW) + " values, got " + str(len(items)))
            return [], False
        numbers = []
        nan = False
        for v in items:
            if isinstance(v, str) and v.strip().lower() == "nan":
                nan = True
            else:
                numbers.append(self.number(v, name))
        return numbers, nan

    def window(self, spec, size, every, extra=()):
        """ESPHome's window schema: window_size, send_every, send_first_at (<= send_every)."""
        p = self.params(spec, ("window_size", "send_every", "send_first_at") + extra)
        size = self.integer(p.get("window_size", size), "window_size", 1, MAX_WINDOW)
        every, first = self.schedule(p, every)
        return size, every, first, p

    def schedule(self, p, every):
        every = self.integer(p.get("send_every", every), "send_every", 1, 65535)
        first = self.integer(p.get("send_first_at", 1), "send_first_at", 1, 65535)
        if first > every:
            self.fail("send_first_at (" + str(first) + ") cannot exceed send_every (" + str(every) + ")")
        return every, first

    def datapoints(self, spec, name="datapoints"):
        """[x, y], 'x -> y' or {'from': x, 'to': y} -> a list of (x, y)."""
        if not isinstance(spec, list) or not spec:
            self.fail(name + " must be a non-empty list")
            return []
        if len(spec) > MAX_WINDOW:
            self.fail(name + ": at most " + str(MAX_WINDOW) + " datapoints, got " + str(len(spec)))
            return []
        points = []
        for point in spec:
            if isinstance(point, str) and "->" in point and len(point) < 100:
                x, y = point.split("->", 1)
                xf, yf = _ms(x, 1), _ms(y, 1)
                if xf is None or yf is None:
                    self.fail("datapoint " + show(point) + " is not 'x -> y'")
                    continue
                point = [xf, yf]
            elif isinstance(point, dict) and len(point) == 2 and "from" in point and "to" in point:
                point = [point["from"], point["to"]]
            if not isinstance(point, list) or len(point) != 2:
                self.fail("datapoint " + show(point) + " must be [x, y], 'x -> y' or {'from': x, 'to': y}")
                continue
            points.append((self.number(point[0], "datapoint x"), self.number(point[1], "datapoint y")))
        return points


_SPECS = {}


def _spec(fn):
    """Registers a filter's spec under its function's name, less a trailing '_' (`or_` for `or`,
    `round_` for `round`: no keywords or builtins shadowed); tests check that the
    registered names are exactly shared.filterlib.NAMES."""
    name = fn.__name__
    _SPECS[name[:-1] if name.endswith("_") else name] = fn
    return fn


# Each spec takes the checks and the parameters as written, and returns the compiled arguments.


@_spec
def offset(c, spec):
    return [c.number(spec, "offset")]


@_spec
def multiply(c, spec):
    return [c.number(spec, "factor")]


@_spec
def calibrate_linear(c, spec):
    # ESPHome: at least two datapoints; least_squares needs two different x; exact needs x sorted
    # ascending without duplicates; collinear neighbouring segments are merged (map_linear).
    method = "least_squares"
    if isinstance(spec, dict):
        p = c.params(spec, ("datapoints", "method"))
        method = p.get("method", method)
        spec = p.get("datapoints")
    points = c.datapoints(spec)
    if method not in ("least_squares", "exact"):
        c.fail("method must be 'least_squares' or 'exact', got " + show(method))
        return [[]]
    if 0 < len(points) < 2:
        c.fail("needs at least two datapoints, got " + str(len(points)))
    if len(points) < 2:
        return [[]]
    if method == "least_squares":
        n = len(points)
        sx = sy = sxx = sxy = 0.0
        for x, y in points:
            sx += x
            sy += y
            sxx += x * x
            sxy += x * y
        denominator = n * sxx - sx * sx
        if denominator == 0 or all(x == points[0][0] for x, _ in points):
            c.fail("needs at least two datapoints with different x")
            return [[]]
        slope = (n * sxy - sx * sy) / denominator
        return [[[slope, (sy - slope * sx) / n, None]]]
    segments = []
    for i in range(len(points) - 1):
        (x0, y0), (x1, y1) = points[i], points[i + 1]
        if x1 < x0:
            c.fail(
                "the x of exact datapoints must be sorted in ascending order (" + repr(x1) + " after " + repr(x0) + ")"
            )
            return [[]]
        if x1 == x0:
            c.fail("two datapoints share x = " + repr(x0))
            return [[]]
        slope = (y1 - y0) / (x1 - x0)
        bias = y0 - slope * x0
        upper = x1 if i < len(points) - 2 else None
        if segments and segments[-1][0] == slope and segments[-1][1] == bias:
            segments[-1][2] = upper
        else:
            segments.append([slope, bias, upper])
    return [segments]


@_spec
def calibrate_polynomial(c, spec):
    p = c.params(spec, ("degree", "datapoints"))
    if not (c.required(p, "degree") and c.required(p, "datapoints")):
        return [[]]
    degree = c.integer(p["degree"], "degree", 0, 8)
    points = c.datapoints(p["datapoints"])
    size = degree + 1
    if points and len(points) < size:
        c.fail("degree " + str(degree) + " needs at least " + str(size) + " datapoints, got " + str(len(points)))
    if len(points) < size:
        return [[]]
    # Least squares by the normal equations and Gaussian elimination with pivoting.
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
        pivot = col
        for r in range(col + 1, size):
            if abs(matrix[r][col]) > abs(matrix[pivot][col]):
                pivot = r
        if not abs(matrix[pivot][col]) >= 1e-12:
            c.fail("datapoints do not determine a polynomial of degree " + str(degree))
            return [[]]
        matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
        for row in range(size):
            if row != col:
                factor = matrix[row][col] / matrix[col][col]
                for k in range(col, size + 1):
                    matrix[row][k] -= factor * matrix[col][k]
    return [[matrix[i][size] / matrix[i][i] for i in range(size)]]


@_spec
def clamp(c, spec):
    # ESPHome: either bound may be left out, not both ("Either 'min_value' or 'max_value' must be
    # set to a number"), and min_value must not be larger than max_value.
    p = c.params(spec, ("min_value", "max_value", "ignore_out_of_range"))
    low = c.number(p["min_value"], "min_value") if "min_value" in p else None
    high = c.number(p["max_value"], "max_value") if "max_value" in p else None
    if low is None and high is None:
        c.fail("set min_value, max_value or both")
    elif low is not None and high is not None and low > high:
        c.fail("min_value " + repr(low) + " is above max_value " + repr(high))
    return [low, high, c.boolean(p.get("ignore_out_of_range", False), "ignore_out_of_range")]


@_spec
def round_(c, spec):
    p = c.params(spec, ("accuracy_decimals",), "accuracy_decimals")
    return [c.integer(p.get("accuracy_decimals"), "decimals", 0, 10)]


@_spec
def round_to_multiple_of(c, spec):
    p = c.params(spec, ("multiple",), "multiple")
    multiple = c.number(p.get("multiple"), "multiple")
    if multiple <= 0 and not c.failed():
        c.fail("multiple must be above 0, got " + show(p.get("multiple")))
    return [multiple]


@_spec
def round_to_significant_digits(c, spec):
    return [c.integer(spec, "digits", 1, 6)]


@_spec
def filter_out(c, spec):
    values, nan = c.values(spec, "value")
    return [values, nan, c.decimals]


@_spec
def skip_initial(c, spec):
    return [c.integer(spec, "count", 1, 1000000)]  # ESPHome: a positive count, not 0


def _windowed(c, spec, size, every):
    size, every, first, _ = c.window(spec, size, every)
    return [size, every, first]


@_spec
def median(c, spec):
    return _windowed(c, spec, 5, 5)


@_spec
def min_(c, spec):
    return _windowed(c, spec, 5, 5)


@_spec
def max_(c, spec):
    return _windowed(c, spec, 5, 5)


@_spec
def sliding_window_moving_average(c, spec):
    return _windowed(c, spec, 15, 15)


@_spec
def quantile(c, spec):
    size, every, first, p = c.window(spec, 5, 5, ("quantile",))
    q = c.number(p.get("quantile", 0.9), "quantile")
    if not 0 <= q <= 1:
        c.fail("quantile must be from 0 to 1, got " + show(p.get("quantile")))
    return [size, every, first, q]


@_spec
def exponential_moving_average(c, spec):
    p = c.params(spec, ("alpha", "send_every", "send_first_at"))
    alpha = c.number(p.get("alpha", 0.1), "alpha")
    if not 0 <= alpha <= 1:
        c.fail("alpha must be from 0 to 1, got " + show(p.get("alpha")))
    every, first = c.schedule(p, 15)
    return [alpha, every, first]


@_spec
def throttle(c, spec):
    return [c.duration(spec)]


@_spec
def throttle_with_priority(c, spec):
    # ESPHome: `throttle_with_priority: 1s`, or {timeout, value}; value defaults to NaN.
    p = c.params(spec, ("timeout", "value"), "timeout")
    period = c.duration(p.get("timeout"), "timeout") if c.required(p, "timeout") else 1
    values, nan = c.values(p.get("value", "nan"), "value")
    return [period, values, nan, c.decimals]


@_spec
def throttle_average(c, spec):
    return [c.duration(spec)]


@_spec
def heartbeat(c, spec):
    p = c.params(spec, ("period", "optimistic"), "period")
    period = c.duration(p.get("period"), "period") if c.required(p, "period") else 1
    return [period, c.boolean(p.get("optimistic", False), "optimistic")]


@_spec
def debounce(c, spec):
    return [c.duration(spec)]


@_spec
def timeout(c, spec):
    # ESPHome's key is `timeout`; fieldlink also took `time` before, and still does.
    p = c.params(spec, ("timeout", "time", "value"), "timeout")
    if "time" in p and "timeout" in p:
        c.fail("give timeout or time, not both")
    key = "time" if "time" in p else "timeout"
    period = c.duration(p.get(key), key) if c.required(p, key) else 1
    value = p.get("value")
    if isinstance(value, str) and value.strip().lower() in ("nan", "last"):
        value = None if value.strip().lower() == "nan" else "last"
    elif value is not None:
        value = c.number(value, "value")
    return [period, value]


@_spec
def delta(c, spec):
    # ESPHome: a number or a percentage is min_value; or {min_value, max_value}, at least one.
    if isinstance(spec, dict):
        p = c.params(spec, ("min_value", "max_value"))
        if "min_value" not in p and "max_value" not in p:
            c.fail("set min_value, max_value or both")
        low, low_pct = c.percent(p.get("min_value", 0.0), "min_value")
        if "max_value" not in p:
            return [low, low_pct]
        high, high_pct = c.percent(p["max_value"], "max_value")
        if low_pct == high_pct and low >= high:
            c.fail("min_value must be below max_value, or nothing passes")
        return [low, low_pct, high, high_pct]
    low, low_pct = c.percent(spec, "delta")
    return [low, low_pct]


def _calibration(c, spec):
    """ESPHome's NTC calibration: {b_constant, reference_temperature, reference_resistance},
    {a, b, c}, or three 'resistance -> temperature' points (Steinhart-Hart) -> (a, b, c)."""
    p = c.params(spec, ("calibration",))
    if not c.required(p, "calibration"):
        return 0.0, 1.0, 0.0
    cal = p["calibration"]
    if isinstance(cal, dict) and "b_constant" in cal:
        q = c.params(cal, ("b_constant", "reference_temperature", "reference_resistance"))
        for key in ("b_constant", "reference_temperature", "reference_resistance"):
            if not c.required(q, key):
                return 0.0, 1.0, 0.0
        beta = c.number(q["b_constant"], "b_constant")
        t0 = _temperature(c, q["reference_temperature"]) + 273.15
        r0 = _resistance(c, q["reference_resistance"])
        if beta == 0 or r0 <= 0 or t0 <= 0:
            c.fail("b_constant must not be 0, and the reference resistance and temperature must be above 0 (K)")
            return 0.0, 1.0, 0.0
        return 1 / t0 - math.log(r0) / beta, 1 / beta, 0.0
    if isinstance(cal, dict):
        q = c.params(cal, ("a", "b", "c"))
        for key in ("a", "b", "c"):
            if not c.required(q, key):
                return 0.0, 1.0, 0.0
        a, b, cc = c.number(q["a"], "a"), c.number(q["b"], "b"), c.number(q["c"], "c")
        if b == 0 and cc == 0:
            c.fail("b and c cannot both be 0")
            return 0.0, 1.0, 0.0
        return a, b, cc
    if not isinstance(cal, list) or len(cal) != 3:
        c.fail(
            "calibration is {b_constant, reference_temperature, reference_resistance}, {a, b, c}"
            " or three 'resistance -> temperature' points, got " + show(cal)
        )
        return 0.0, 1.0, 0.0
    points = []
    for point in cal:
        if isinstance(point, dict) and "temperature" in point and "value" in point:
            r, t = point["value"], point["temperature"]
        elif isinstance(point, str) and "->" in point and len(point) < 100:
            r, t = point.split("->", 1)
        else:
            c.fail("calibration point " + show(point) + " is not 'resistance -> temperature'")
            return 0.0, 1.0, 0.0
        points.append((_resistance(c, r), _temperature(c, t) + 273.15))
    if c.failed():
        return 0.0, 1.0, 0.0
    try:
        (r1, t1), (r2, t2), (r3, t3) = points
        l1, l2, l3 = math.log(r1), math.log(r2), math.log(r3)
        y1, y2, y3 = 1 / t1, 1 / t2, 1 / t3
        g2 = (y2 - y1) / (l2 - l1)
        g3 = (y3 - y1) / (l3 - l1)
        cc = (g3 - g2) / (l3 - l2) * 1 / (l1 + l2 + l3)
        b = g2 - cc * (l1 * l1 + l1 * l2 + l2 * l2)
        return y1 - (b + l1 * l1 * cc) * l1, b, cc
    except (ValueError, ZeroDivisionError):
        c.fail("the three calibration points need different resistances above 0 and temperatures above 0 K")
        return 0.0, 1.0, 0.0


_RESISTANCE_UNITS = (("kOhm", 1e3), ("MOhm", 1e6), ("mOhm", 1e-3), ("Ohm", 1.0), ("kΩ", 1e3), ("MΩ", 1e6), ("Ω", 1.0))
_TEMPERATURE_UNITS = (("°C", 0.0), ("C", 0.0), ("K", -273.15))


def _unit_number(c, value, units, name):
    if isinstance(value, str) and len(value) < 64:
        text = value.strip()
        for suffix, shift in units:
            if text.endswith(suffix):
                number = _ms(text[: len(text) - len(suffix)], 1)
                if number is not None:
                    return number, shift
        number = _ms(text, 1)
        if number is not None:
            return number, None
        c.fail(name + " " + show(value) + " is not a " + name)
        return 1.0, None
    return c.number(value, name), None


def _resistance(c, value):
    number, scale = _unit_number(c, value, _RESISTANCE_UNITS, "resistance")
    return number * (1.0 if scale is None else scale)


def _temperature(c, value):
    number, shift = _unit_number(c, value, _TEMPERATURE_UNITS, "temperature")
    return number + (0.0 if shift is None else shift)


@_spec
def to_ntc_resistance(c, spec):
    return list(_calibration(c, spec))


@_spec
def to_ntc_temperature(c, spec):
    return list(_calibration(c, spec))


@_spec
def or_(c, spec):
    if not isinstance(spec, list) or not spec:
        c.fail("'or' takes a non-empty list of filters")
        return [[]]
    if c.depth >= MAX_OR_DEPTH:
        c.fail("'or' nested more than " + str(MAX_OR_DEPTH) + " deep")
        return [[]]
    children = []
    for i in range(len(spec)):
        where = c.where + " > or[" + str(i) + "]"
        children.append(_compile(spec[i], where, c.decimals, c.depth + 1, c.problems, c.count))
        if c.count[0] > MAX_FILTERS:
            break
    return [children]


def _finite(value):
    """Is every number in a compiled value finite (JSON, and MicroPython's json, know no inf/nan)?"""
    if isinstance(value, float):
        return not isnan(value) and value not in (INF, -INF)
    if isinstance(value, list):
        for v in value:
            if not _finite(v):
                return False
    return True


def _compile(spec, where, decimals, depth, problems, count):
    """One filter's compiled form, or None with its problems appended."""
    count[0] += 1
    if count[0] > MAX_FILTERS:
        if count[0] == MAX_FILTERS + 1:
            problems.append(where + ": more than " + str(MAX_FILTERS) + " filters in one chain")
        return None
    if not isinstance(spec, dict) or len(spec) != 1:
        problems.append(where + ": a filter is an object with one key, its name; got " + show(spec))
        return None
    name = next(iter(spec))
    fn = _SPECS.get(name) if isinstance(name, str) and name in NAMES else None
    if fn is None:
        shown = _cut(name) if isinstance(name, str) else show(name)
        problems.append(where + " (" + shown + "): unknown filter " + show(name))
        return None
    c = _Check(where + " (" + name + ")", decimals, depth, problems, count)
    try:
        args = fn(c, spec[name])
    except (ArithmeticError, ValueError, TypeError) as exc:  # a check this code missed: still no traceback
        c.fail("cannot be compiled (" + str(exc)[:MAX_SHOWN] + ")")
        return None
    if c.failed():
        return None
    compiled = [name] + args
    if not _finite(compiled):
        c.fail("its parameters give numbers too large to compute with (not finite)")
        return None
    return compiled


def compile_filter(spec, where="filter", accuracy_decimals=0):
    """One filter's compiled form from {name: parameters}; FilterConfigError lists every problem."""
    problems = []
    compiled = _compile(spec, where, _decimals(accuracy_decimals), 0, problems, [0])
    if problems:
        raise FilterConfigError(problems)
    return compiled


def _decimals(accuracy_decimals):
    if (
        isinstance(accuracy_decimals, bool)
        or not isinstance(accuracy_decimals, int)
        or not -10 <= accuracy_decimals <= 15
    ):
        raise FilterConfigError("accuracy_decimals must be an integer from -10 to 15, got " + show(accuracy_decimals))
    return accuracy_decimals


def compile_chain(specs, where="filters", accuracy_decimals=0):
    """The compiled form of a readable filter list (what goes into a device bundle). `accuracy_decimals`
    is the sensor's (ESPHome's accuracy_decimals, 0 when not set): filter_out and
    throttle_with_priority compare values rounded to it. FilterConfigError lists every problem."""
    decimals = _decimals(accuracy_decimals)
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise FilterConfigError(where + ": must be a list of filters")
    problems = []
    count = [0]
    compiled = []
    for i in range(len(specs)):
        compiled.append(_compile(specs[i], where + "[" + str(i) + "]", decimals, 0, problems, count))
        if count[0] > MAX_FILTERS:
            break
    if problems:
        raise FilterConfigError(problems)
    return compiled


def build_chain(specs, where="filters", accuracy_decimals=0):
    """A Chain from a readable filter list, built the way a node builds it: through the compiled form."""
    return from_compiled(compile_chain(specs, where, accuracy_decimals))


def spec_names():
    """The filters with a spec here (tests compare them with shared.filterlib.NAMES)."""
    return sorted(_SPECS)
