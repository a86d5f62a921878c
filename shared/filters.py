# Sensor filters with ESPHome's semantics, for MicroPython and CPython alike.
#
# A filter takes a value and returns a value or None (stop: nothing goes on). Time-driven filters
# (throttle_average, heartbeat, debounce, timeout) also emit on their own: the owner calls poll(now)
# every loop and feeds what comes out to the rest of the chain. `now` is a millisecond tick from an
# injected clock (time.ticks_ms() on a board); differences go through ticks_diff so wrap-around is safe.
# Windows live in preallocated lists: in steady state a sample allocates only float temporaries.
#
# Chains are built from their compiled form, [name, arg, ...] per filter, which the host makes from
# the readable config (shared/filter_config.py) after checking it, by shared.filterlib.from_compiled.
# Each filter lives in a module of its own (shared/filterlib/), imported only when a chain uses it: a
# node's RAM holds the code of the filters it runs and no more.
NAN = float("nan")
INF = float("inf")

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython: ticks are plain integers

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b


def isnan(value):
    return value != value


class Filter:
    timed = False  # True for filters that emit from poll()

    def process(self, value, now):
        return value

    def poll(self, now):
        return None


class Or(Filter):
    """ESPHome's `or`: every child sees every value, and of what the children emit (by process or
    later by poll) only the first result after each input goes on; the rest is dropped until the
    next input (ESPHome's OrFilter and its PhiNode with has_value_)."""

    def __init__(self, children):
        self.children = children
        self.has_value = False
        self.timed = False
        for child in children:
            if child.timed:
                self.timed = True

    def process(self, value, now):
        self.has_value = False
        result = None
        for child in self.children:
            out = child.process(value, now)
            if out is not None and not self.has_value:
                self.has_value = True
                result = out
        return result

    def poll(self, now):
        result = None
        for child in self.children:
            out = child.poll(now)
            if out is not None and not self.has_value:
                self.has_value = True
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
