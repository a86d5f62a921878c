# The filter registry, and from_compiled, which builds a chain from compiled filters.
#
# NAMES is the one list of filters: each name is what users write (`{"median": {...}}`), what the
# compiled form starts with (`["median", 5, 5, 1]`), the runtime module shared/filterlib/<name>.py
# (whose `make` builds the filter from the compiled arguments), and the host-side spec of the same
# name in shared/filter_config.py (its parameters, checks and compile step). `or` is the one filter
# without a module: it is a Chain's building block (shared/filters.py). tests/dual/test_filters.py
# checks that every name has its module and its spec, and that no spec or module is left out.
#
# A node needs this module only while it starts, and unloads it then (firmware/main.py).
from shared.filters import Chain, Or

NAMES = (
    "offset",
    "multiply",
    "calibrate_linear",
    "calibrate_polynomial",
    "clamp",
    "round",
    "round_to_multiple_of",
    "round_to_significant_digits",
    "filter_out",
    "skip_initial",
    "median",
    "quantile",
    "min",
    "max",
    "sliding_window_moving_average",
    "exponential_moving_average",
    "throttle",
    "throttle_with_priority",
    "throttle_average",
    "heartbeat",
    "debounce",
    "timeout",
    "delta",
    "to_ntc_resistance",
    "to_ntc_temperature",
    "or",
)


def runtime(name):
    """The runtime module of a registered filter (not `or`): shared/filterlib/<name>.py."""
    return __import__("shared.filterlib." + name, None, None, ["make"])


def from_compiled(compiled):
    """A Chain from [[name, arg, ...], ...]; ValueError names the position of a bad filter."""
    if not isinstance(compiled, list):
        raise ValueError("filters must be a list")
    filters = []
    for i in range(len(compiled)):
        item = compiled[i]
        name = item[0] if isinstance(item, list) and item and isinstance(item[0], str) else ""
        if name not in NAMES:
            raise ValueError("filter " + str(i) + ": unknown " + repr(item)[:60])
        try:
            if name == "or":
                filters.append(Or(from_compiled(item[1]).filters))
            else:
                filters.append(runtime(name).make(*item[1:]))
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError("filter " + str(i) + " (" + name + "): " + str(exc))
    return Chain(filters)
