# The start-up half of the simulated board (firmware/hal/sim.py is the half that runs): the sensors a
# config or a replayed CSV asks for, as drivers. Unloaded once the node runs (see firmware/main.py).
from firmware.hal import ConfigError

# Plausible indoor signals: (base, daily swing, noise) per kind.
SIGNALS = {
    "temperature": (21.0, 3.0, 0.05),
    "humidity": (45.0, 10.0, 0.3),
    "pressure": (1013.0, 4.0, 0.05),
    "voltage": (1.65, 0.5, 0.01),
}


def signal(kind, seed, clock=None, period_s=600):
    """A simulated signal of a known kind; with a clock it is also a driver."""
    if kind not in SIGNALS:
        raise ConfigError("unknown simulated signal " + repr(kind) + "; known: " + ", ".join(sorted(SIGNALS)))
    from firmware.drivers.sources import Signal

    return Signal(SIGNALS[kind], seed, clock, period_s)


def sensor_specs(board, config):
    """With --replay, the CSV's columns are the sensors; a configured sensor of the same name lends
    them its filters and interval."""
    if not board.replay:
        return config.get("sensors")
    configured = {}
    for spec in config.get("sensors") or []:
        if isinstance(spec, dict):
            configured[spec.get("name")] = spec
    specs = []
    for column in board.replay.channels:
        spec = {"name": column, "type": "replay", "channel": column}
        base = configured.get(column)
        if base:
            for key in ("filters", "interval_ms"):
                if key in base:
                    spec[key] = base[key]
        specs.append(spec)
    return specs


def driver_for(board, spec, config, where):
    kind = spec.get("type", "sim")
    if kind == "replay":
        return board.replay
    board.seeds += 1
    if kind == "sim":
        return signal(
            spec.get("signal") or spec.get("name"),
            spec.get("seed", board.seeds),
            board.now_ms,
            spec.get("period_s", 600),
        )
    if board.chips is None:
        from firmware.hal.simchips import SimChips

        board.chips = SimChips(board)
    return board.chips.driver_for(kind, spec, config, where, board.seeds)
