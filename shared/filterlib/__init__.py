# One module per filter, named as in the compiled form (see shared/filters.py), and from_compiled,
# which builds a chain of them. A node needs this module only while it starts, and unloads it then.
from shared.filters import Chain, Or

# Every filter's compiled name; its code is shared/filterlib/<name>.py, whose `make` builds it.
_NAMES = (
    " offset multiply linear polynomial clamp round round_to_multiple_of filter_out skip_initial delta"
    " median quantile min max sliding_window_moving_average exponential_moving_average throttle"
    " throttle_average heartbeat debounce timeout "
)


def from_compiled(compiled):
    """A Chain from [[name, arg, ...], ...]; ValueError names the position of a bad filter."""
    if not isinstance(compiled, list):
        raise ValueError("filters must be a list")
    filters = []
    for i in range(len(compiled)):
        item = compiled[i]
        name = item[0] if isinstance(item, list) and item and isinstance(item[0], str) else ""
        if not name or name[0] < "a" or (" " + name + " ") not in _NAMES and name != "or":
            raise ValueError("filter " + str(i) + ": unknown " + repr(item))
        try:
            if name == "or":
                filters.append(Or(from_compiled(item[1]).filters))
            else:
                module = __import__("shared.filterlib." + name, None, None, ["make"])
                filters.append(module.make(*item[1:]))
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError("filter " + str(i) + " (" + item[0] + "): " + str(exc))
    return Chain(filters)
