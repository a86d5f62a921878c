# Sensor filters with ESPHome's semantics, for MicroPython and CPython alike.
#
# A filter takes a value and returns a value or None (stop: nothing goes on). Time-driven filters
# (throttle_average, heartbeat, debounce, timeout) also emit on their own: the owner calls poll(now)
# every loop and feeds what comes out to the rest of the chain. `now` is a millisecond tick from an
# injected clock (time.ticks_ms() on a board); differences go through ticks_diff so wrap-around is safe.
# Windows live in preallocated arrays: in steady state a sample allocates only float temporaries.
import math
from array import array

try:
    from time import ticks_add as _ticks_add
    from time import ticks_diff as _ticks_diff
except ImportError:  # CPython: ticks are plain integers

    def _ticks_diff(a, b):
        return a - b

    def _ticks_add(a, b):
        return a + b


MAX_WINDOW = 256  # window sizes beyond this cost more RAM than a node should spend on one filter
NAN = float("nan")
INF = float("inf")


class FilterConfigError(ValueError):
    """A filter spec that cannot be built; the message names the filter and the wrong value."""


def _isnan(value):
    return value != value


def _round_half_away(x):
    # ESPHome's roundf(); Python's round() rounds half to even, and MicroPython's differs again.
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


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


class Filter:
    timed = False  # True for filters that emit from poll()

    def process(self, value, now):
        return value

    def poll(self, now):
        return None


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
    """value * slope + bias, or piecewise: a list of (slope, bias, upper_x), the last unbounded."""

    def __init__(self, segments):
        self.segments = segments

    def process(self, value, now):
        segments = self.segments
        for i in range(len(segments)):
            slope, bias, upper = segments[i]
            if value < upper or i == len(segments) - 1:
                return value * slope + bias
        return NAN  # NaN compares false everywhere; unreachable for numbers


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


class Polynomial(Filter):
    def __init__(self, coefficients):
        self.coefficients = coefficients  # c0 + c1 x + c2 x^2 ...

    def process(self, value, now):
        c = self.coefficients
        result = 0.0
        for i in range(len(c) - 1, -1, -1):  # Horner
            result = result * value + c[i]
        return result


def _polynomial_fit(points, degree, where):
    """Least-squares coefficients by the normal equations and Gaussian elimination with pivoting."""
    size = degree + 1
    if len(points) < size:
        raise FilterConfigError(where + ": degree " + str(degree) + " needs at least " + str(size)
                                + " datapoints, got " + str(len(points)))
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
            raise FilterConfigError(where + ": datapoints do not determine a polynomial of degree "
                                    + str(degree))
        matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
        for row in range(size):
            if row != col:
                factor = matrix[row][col] / matrix[col][col]
                for k in range(col, size + 1):
                    matrix[row][k] -= factor * matrix[col][k]
    return [matrix[i][size] / matrix[i][i] for i in range(size)]


class Clamp(Filter):
    def __init__(self, low, high, ignore_out_of_range):
        self.low = low
        self.high = high
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
    def __init__(self, values):
        self.values = [v for v in values if not _isnan(v)]
        self.nan = len(self.values) != len(values)

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


class _Window(Filter):
    """ESPHome's sliding window: keep the last window_size values; every send_every values emit
    compute() over the non-NaN ones (NaN if none), the first time after send_first_at values."""

    def __init__(self, window_size, send_every, send_first_at):
        self.window = array("f", [0.0] * window_size)
        self.scratch = array("f", [0.0] * window_size)
        self.size = window_size
        self.count = 0
        self.head = 0
        self.send_every = send_every
        self.send_at = send_every - send_first_at

    def process(self, value, now):
        self.window[self.head] = value
        self.head = (self.head + 1) % self.size
        if self.count < self.size:
            self.count += 1
        self.send_at += 1
        if self.send_at < self.send_every:
            return None
        self.send_at = 0
        return self.compute()

    def _finite_into_scratch(self):
        n = 0
        window, scratch = self.window, self.scratch
        for i in range(self.count):
            v = window[i]
            if v == v:
                scratch[n] = v
                n += 1
        return n

    def _sorted_scratch(self):
        n = self._finite_into_scratch()
        scratch = self.scratch
        for i in range(1, n):  # insertion sort in place: windows are small and this allocates nothing
            v = scratch[i]
            j = i - 1
            while j >= 0 and scratch[j] > v:
                scratch[j + 1] = scratch[j]
                j -= 1
            scratch[j + 1] = v
        return n


class Median(_Window):
    def compute(self):
        n = self._sorted_scratch()
        if n == 0:
            return NAN
        mid = n // 2
        if n % 2:
            return self.scratch[mid]
        return (self.scratch[mid] + self.scratch[mid - 1]) / 2


class Quantile(_Window):
    def __init__(self, window_size, send_every, send_first_at, quantile):
        super().__init__(window_size, send_every, send_first_at)
        self.quantile = quantile

    def compute(self):
        n = self._sorted_scratch()
        if n == 0:
            return NAN
        position = math.ceil(n * self.quantile) - 1
        return self.scratch[position if position > 0 else 0]


class Min(_Window):
    def compute(self):
        n = self._finite_into_scratch()
        if n == 0:
            return NAN
        best = self.scratch[0]
        for i in range(1, n):
            if self.scratch[i] < best:
                best = self.scratch[i]
        return best


class Max(_Window):
    def compute(self):
        n = self._finite_into_scratch()
        if n == 0:
            return NAN
        best = self.scratch[0]
        for i in range(1, n):
            if self.scratch[i] > best:
                best = self.scratch[i]
        return best


class MovingAverage(_Window):
    def compute(self):
        n = self._finite_into_scratch()
        if n == 0:
            return NAN
        total = 0.0
        for i in range(n):
            total += self.scratch[i]
        return total / n


class ExponentialMovingAverage(Filter):
    def __init__(self, alpha, send_every, send_first_at):
        self.alpha = alpha
        self.accumulator = 0.0
        self.first = True
        self.send_every = send_every
        self.send_at = send_every - send_first_at

    def process(self, value, now):
        if not _isnan(value):
            if self.first:
                self.accumulator = value
                self.first = False
            else:
                self.accumulator = self.alpha * value + (1.0 - self.alpha) * self.accumulator
        self.send_at += 1
        if self.send_at < self.send_every:
            return None
        self.send_at = 0
        return value if _isnan(value) else self.accumulator


class Throttle(Filter):
    def __init__(self, period_ms):
        self.period = period_ms
        self.last = 0
        self.started = False

    def process(self, value, now):
        if self.started and _ticks_diff(now, self.last) < self.period:
            return None
        self.started = True
        self.last = now
        return value


class _Periodic(Filter):
    """A timer firing every period from the first time the filter sees the clock."""

    timed = True

    def __init__(self, period_ms):
        self.period = period_ms
        self.next = 0
        self.started = False

    def _start(self, now):
        if not self.started:
            self.started = True
            self.next = _ticks_add(now, self.period)

    def _due(self, now):
        self._start(now)
        if _ticks_diff(now, self.next) < 0:
            return False
        self.next = _ticks_add(self.next, self.period)
        if _ticks_diff(now, self.next) >= 0:  # missed beats (a long stall): realign instead of bursting
            self.next = _ticks_add(now, self.period)
        return True


class ThrottleAverage(_Periodic):
    def __init__(self, period_ms):
        super().__init__(period_ms)
        self.total = 0.0
        self.n = 0
        self.have_nan = False

    def process(self, value, now):
        self._start(now)
        if _isnan(value):
            self.have_nan = True
        else:
            self.total += value
            self.n += 1
        return None

    def poll(self, now):
        if not self._due(now):
            return None
        result = None
        if self.n:
            result = self.total / self.n
            self.total = 0.0
            self.n = 0
        elif self.have_nan:
            result = NAN
        self.have_nan = False
        return result


class Heartbeat(_Periodic):
    def __init__(self, period_ms, optimistic):
        super().__init__(period_ms)
        self.optimistic = optimistic
        self.last = 0.0
        self.has_value = False

    def process(self, value, now):
        self._start(now)
        self.last = value
        self.has_value = True
        return value if self.optimistic else None

    def poll(self, now):
        if self._due(now) and self.has_value:
            return self.last
        return None


class Debounce(Filter):
    timed = True

    def __init__(self, period_ms):
        self.period = period_ms
        self.pending = False
        self.deadline = 0
        self.last = 0.0

    def process(self, value, now):
        self.last = value
        self.pending = True
        self.deadline = _ticks_add(now, self.period)
        return None

    def poll(self, now):
        if self.pending and _ticks_diff(now, self.deadline) >= 0:
            self.pending = False
            return self.last
        return None


class Timeout(Filter):
    timed = True

    def __init__(self, period_ms, value):
        self.period = period_ms
        self.value = value
        self.armed = False
        self.deadline = 0

    def process(self, value, now):
        self.armed = True
        self.deadline = _ticks_add(now, self.period)
        return value

    def poll(self, now):
        if self.armed and _ticks_diff(now, self.deadline) >= 0:
            self.armed = False
            return self.value
        return None


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


class Or(Filter):
    """Every child sees every value; the first child that lets a value through passes it on."""

    def __init__(self, children):
        self.children = children
        self.timed = False
        for child in children:
            if child.timed:
                self.timed = True

    def process(self, value, now):
        result = None
        for child in self.children:
            out = child.process(value, now)
            if result is None:
                result = out
        return result

    def poll(self, now):
        result = None
        for child in self.children:
            out = child.poll(now)
            if result is None:
                result = out
        return result


class Chain:
    """Filters applied in order; None from any of them ends the value's way."""

    def __init__(self, filters):
        self.filters = filters
        self.timed = False
        for f in filters:
            if f.timed:
                self.timed = True

    def _run(self, start, value, now):
        filters = self.filters
        for i in range(start, len(filters)):
            value = filters[i].process(value, now)
            if value is None:
                return None
        return value

    def process(self, value, now):
        return self._run(0, value, now)

    def poll(self, now):
        """What a time-driven filter emits now, through the rest of the chain (the first, if several)."""
        if not self.timed:
            return None
        filters = self.filters
        for i in range(len(filters)):
            if filters[i].timed:
                out = filters[i].poll(now)
                if out is not None:
                    out = self._run(i + 1, out, now)
                    if out is not None:
                        return out
        return None


# --- building from config --------------------------------------------------------------------------


def _number(value, where, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FilterConfigError(where + ": " + name + " must be a number, got " + repr(value))
    value = float(value)
    if _isnan(value) or value in (INF, -INF):
        raise FilterConfigError(where + ": " + name + " must be finite, got " + repr(value))
    return value


def _integer(value, where, name, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FilterConfigError(where + ": " + name + " must be an integer from " + str(low) + " to "
                                + str(high) + ", got " + repr(value))
    return value


def _params(spec, where, allowed):
    if not isinstance(spec, dict):
        raise FilterConfigError(where + ": parameters must be an object, got " + repr(spec))
    for key in spec:
        if key not in allowed:
            raise FilterConfigError(where + ": unknown parameter " + repr(key) + " (known: "
                                    + ", ".join(allowed) + ")")
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


def _window(kind, spec, where, size, every, first, extra=()):
    p = _params(spec if spec is not None else {}, where,
                ("window_size", "send_every", "send_first_at") + extra)
    size = _integer(p.get("window_size", size), where, "window_size", 1, MAX_WINDOW)
    every = _integer(p.get("send_every", every), where, "send_every", 1, 100000)
    first = _integer(p.get("send_first_at", first), where, "send_first_at", 1, 100000)
    if first > every:
        raise FilterConfigError(where + ": send_first_at (" + str(first) + ") cannot exceed send_every ("
                                + str(every) + ")")
    return size, every, first, p


def _build_one(name, spec, where):
    if name == "offset":
        return Offset(_number(spec, where, "offset"))
    if name == "multiply":
        return Multiply(_number(spec, where, "factor"))
    if name == "calibrate_linear":
        method = "least_squares"
        if isinstance(spec, dict):
            p = _params(spec, where, ("datapoints", "method"))
            method = p.get("method", method)
            spec = p.get("datapoints")
        points = _datapoints(spec, where)
        if method == "least_squares":
            slope, bias = _least_squares_line(points, where)
            return Linear([(slope, bias, INF)])
        if method == "exact":
            return Linear(_exact_segments(points, where))
        raise FilterConfigError(where + ": method must be 'least_squares' or 'exact', got " + repr(method))
    if name == "calibrate_polynomial":
        p = _params(spec, where, ("degree", "datapoints"))
        degree = _integer(p.get("degree"), where, "degree", 1, 8)
        return Polynomial(_polynomial_fit(_datapoints(p.get("datapoints"), where), degree, where))
    if name == "clamp":
        p = _params(spec, where, ("min_value", "max_value", "ignore_out_of_range"))
        low = _number(p["min_value"], where, "min_value") if "min_value" in p else -INF
        high = _number(p["max_value"], where, "max_value") if "max_value" in p else INF
        if low > high:
            raise FilterConfigError(where + ": min_value " + repr(low) + " is above max_value " + repr(high))
        ignore = p.get("ignore_out_of_range", False)
        if not isinstance(ignore, bool):
            raise FilterConfigError(where + ": ignore_out_of_range must be true or false, got " + repr(ignore))
        return Clamp(low, high, ignore)
    if name == "round":
        return Round(_integer(spec, where, "decimals", 0, 10))
    if name == "round_to_multiple_of":
        multiple = _number(spec, where, "multiple")
        if multiple <= 0:
            raise FilterConfigError(where + ": multiple must be above 0, got " + repr(spec))
        return RoundToMultiple(multiple)
    if name == "filter_out":
        values = spec if isinstance(spec, list) else [spec]
        parsed = []
        for v in values:
            if isinstance(v, str) and v.lower() == "nan":
                parsed.append(NAN)
            else:
                parsed.append(_number(v, where, "value"))
        return FilterOut(parsed)
    if name == "skip_initial":
        return SkipInitial(_integer(spec, where, "count", 0, 100000))
    if name in ("median", "min", "max"):
        size, every, first, _ = _window(name, spec, where, 5, 5, 1)
        return {"median": Median, "min": Min, "max": Max}[name](size, every, first)
    if name == "quantile":
        size, every, first, p = _window(name, spec, where, 5, 5, 1, ("quantile",))
        q = _number(p.get("quantile", 0.9), where, "quantile")
        if not 0 <= q <= 1:
            raise FilterConfigError(where + ": quantile must be from 0 to 1, got " + repr(q))
        return Quantile(size, every, first, q)
    if name == "sliding_window_moving_average":
        size, every, first, _ = _window(name, spec, where, 15, 15, 1)
        return MovingAverage(size, every, first)
    if name == "exponential_moving_average":
        p = _params(spec if spec is not None else {}, where, ("alpha", "send_every", "send_first_at"))
        alpha = _number(p.get("alpha", 0.1), where, "alpha")
        if not 0 < alpha <= 1:
            raise FilterConfigError(where + ": alpha must be above 0 and at most 1, got " + repr(alpha))
        every = _integer(p.get("send_every", 15), where, "send_every", 1, 100000)
        first = _integer(p.get("send_first_at", 1), where, "send_first_at", 1, 100000)
        if first > every:
            raise FilterConfigError(where + ": send_first_at (" + str(first) + ") cannot exceed send_every ("
                                    + str(every) + ")")
        return ExponentialMovingAverage(alpha, every, first)
    if name == "throttle":
        return Throttle(parse_duration_ms(spec, where))
    if name == "throttle_average":
        return ThrottleAverage(parse_duration_ms(spec, where))
    if name == "heartbeat":
        if isinstance(spec, dict):
            p = _params(spec, where, ("period", "optimistic"))
            optimistic = p.get("optimistic", False)
            if not isinstance(optimistic, bool):
                raise FilterConfigError(where + ": optimistic must be true or false, got " + repr(optimistic))
            return Heartbeat(parse_duration_ms(p.get("period"), where), optimistic)
        return Heartbeat(parse_duration_ms(spec, where), False)
    if name == "debounce":
        return Debounce(parse_duration_ms(spec, where))
    if name == "timeout":
        if isinstance(spec, dict):
            p = _params(spec, where, ("time", "value"))
            value = p.get("value", NAN)
            value = NAN if isinstance(value, str) and value.lower() == "nan" else _number(value, where, "value")
            return Timeout(parse_duration_ms(p.get("time"), where), value)
        return Timeout(parse_duration_ms(spec, where), NAN)
    if name == "delta":
        if isinstance(spec, str) and spec.strip().endswith("%"):
            try:
                percent = float(spec.strip()[:-1])
            except ValueError:
                raise FilterConfigError(where + ": " + repr(spec) + " is not a percentage")
            if not percent > 0:
                raise FilterConfigError(where + ": percentage must be above 0, got " + repr(spec))
            return Delta(percent / 100, True)
        delta = _number(spec, where, "delta")
        if delta < 0:
            raise FilterConfigError(where + ": delta must not be negative, got " + repr(spec))
        return Delta(delta, False)
    if name == "or":
        if not isinstance(spec, list) or not spec:
            raise FilterConfigError(where + ": 'or' takes a non-empty list of filters")
        return Or([build_filter(child, where + " > or[" + str(i) + "]") for i, child in enumerate(spec)])
    raise FilterConfigError(where + ": unknown filter " + repr(name))


FILTER_NAMES = (
    "offset", "multiply", "calibrate_linear", "calibrate_polynomial", "clamp", "round",
    "round_to_multiple_of", "filter_out", "skip_initial", "median", "quantile", "min", "max",
    "sliding_window_moving_average", "exponential_moving_average", "throttle", "throttle_average",
    "heartbeat", "debounce", "timeout", "delta", "or",
)


def build_filter(spec, where="filter"):
    """One filter from {name: parameters}."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise FilterConfigError(where + ": a filter is an object with one key, its name; got " + repr(spec))
    for name in spec:
        return _build_one(name, spec[name], where + " (" + str(name) + ")")


def build_chain(specs, where="filters"):
    """A Chain from a list of {name: parameters}; FilterConfigError names the culprit."""
    if specs is None:
        specs = []
    if not isinstance(specs, list):
        raise FilterConfigError(where + ": must be a list of filters")
    return Chain([build_filter(spec, where + "[" + str(i) + "]") for i, spec in enumerate(specs)])
