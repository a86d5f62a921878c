# Sensor filters with ESPHome's semantics, for MicroPython and CPython alike.
#
# A filter takes a value and returns a value or None (stop: nothing goes on). Time-driven filters
# (throttle_average, heartbeat, debounce, timeout) also emit on their own: the owner calls poll(now)
# every loop and feeds what comes out to the rest of the chain. `now` is a millisecond tick from an
# injected clock (time.ticks_ms() on a board); differences go through ticks_diff so wrap-around is safe.
# Windows live in preallocated lists: in steady state a sample allocates only float temporaries.
#
# Chains are built from their compiled form, [name, arg, ...] per filter, which the host makes from
# the readable config (shared/filter_config.py) after checking it. The filter classes live in three
# modules (value, window, time) imported only when a chain uses them: a node's RAM holds the code of
# the filters it runs and no more.
NAN = float("nan")
INF = float("inf")

# "name family Class" for every filter: one string rather than a dict of tuples, which costs a small
# node several kilobytes of RAM.
_TABLE = (" offset value Offset multiply value Multiply linear value Linear polynomial value Polynomial"
          " clamp value Clamp round value Round round_to_multiple_of value RoundToMultiple"
          " filter_out value FilterOut skip_initial value SkipInitial delta value Delta"
          " median window Median quantile window Quantile min window Min max window Max"
          " sliding_window_moving_average window MovingAverage"
          " exponential_moving_average window ExponentialMovingAverage throttle time Throttle"
          " throttle_average time ThrottleAverage heartbeat time Heartbeat debounce time Debounce"
          " timeout time Timeout ")


def _lookup(name):
    """(family, class name) of a filter, or None."""
    at = _TABLE.find(" " + name + " ") if isinstance(name, str) else -1
    if at < 0 or name[0] < "a":
        return None
    start = at + len(name) + 2
    middle = _TABLE.find(" ", start)
    family = _TABLE[start:middle]
    if family not in ("value", "window", "time"):  # matched a family or class word, not a name
        return None
    return family, _TABLE[middle + 1:_TABLE.find(" ", middle + 1)]


class Filter:
    timed = False  # True for filters that emit from poll()

    def process(self, value, now):
        return value

    def poll(self, now):
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


def from_compiled(compiled):
    """A Chain from [[name, arg, ...], ...]; ValueError names the position of a bad filter."""
    if not isinstance(compiled, list):
        raise ValueError("filters must be a list")
    filters = []
    for i in range(len(compiled)):
        item = compiled[i]
        found = _lookup(item[0]) if isinstance(item, list) and item else None
        if found is None and not (isinstance(item, list) and item and item[0] == "or"):
            raise ValueError("filter " + str(i) + ": unknown " + repr(item))
        try:
            if found is None:
                filters.append(Or(from_compiled(item[1]).filters))
            else:
                family, name = found
                module = __import__("shared.filters_" + family, None, None, [name])
                filters.append(getattr(module, name)(*item[1:]))
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError("filter " + str(i) + " (" + item[0] + "): " + str(exc))
    return Chain(filters)
