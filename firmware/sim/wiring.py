# The start-up half of the simulated board (firmware/sim/board.py is the half that runs): what the one
# driver dispatch (firmware/sensors.py) asks of a board, answered with simulated signals, replayed CSV
# rows, and emulated buses and chips. Unloaded once the node runs (see firmware/start.py).
from firmware.errors import ConfigError
from firmware.sim.signal import Signal

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
    return Signal(SIGNALS[kind], seed, clock, period_s)


def make_board(trace_path=None, duration_s=None, time_scale=1, faults=(), no_ntp_s=0):
    """The simulated board (firmware/sim/board.py), made here: start-up code does not stay in RAM."""
    import time

    from firmware.sim.board import SimBoard

    if time_scale < 1:
        raise ConfigError("--time-scale must be at least 1")
    board = SimBoard()
    board.faults = faults
    board.no_ntp_ms = int(no_ntp_s * 1000)
    board._trace = open(trace_path, "ab") if trace_path else None
    board.time_scale = time_scale
    board._start_ticks = time.ticks_ms()
    board._start_ms = time.time_ns() // 1000000
    board.duration_ms = int(duration_s * 1000) if duration_s else None
    board.animated = []
    import builtins

    board._print = builtins.print
    builtins.print = board.log  # every line the node logs from here on carries its device time
    return board


class SimWiring:
    def __init__(self, board, replay_path=None):
        self.board = board
        self.replay = None
        if replay_path:
            from firmware.sim.replay import ReplayDriver

            self.replay = ReplayDriver(replay_path)
        self.seed = 0  # sensors made so far, but replayed ones: each gets its own noise

    def specs(self, config):
        """With --replay, the CSV's columns are the sensors; a configured sensor of the same name lends
        them its filters and interval. Called first for each config tried: a fallback to the last good
        config starts afresh."""
        self.seed = 0
        del self.board.animated[:]
        if not self.replay:
            return config.get("sensors")
        configured = {}
        for spec in config.get("sensors") or []:
            if isinstance(spec, dict):
                configured[spec.get("name")] = spec
        specs = []
        for column in self.replay.channels:
            spec = {"name": column, "type": "replay", "channel": column}
            base = configured.get(column)
            if base:
                for key in ("filters", "interval_ms"):
                    if key in base:
                        spec[key] = base[key]
            specs.append(spec)
        return specs

    def source(self, spec, where):
        """The drivers only a simulated board has: a signal (type "sim", the default) and the replay."""
        kind = spec.get("type", "sim")
        if kind == "replay":
            if self.replay is None:
                raise ConfigError(where + ": type replay needs --replay FILE.csv")
            return self.replay
        self.seed += 1
        if kind == "sim":
            return signal(
                spec.get("signal") or spec.get("name"),
                spec.get("seed", self.seed),
                self.board.now_ms,
                spec.get("period_s", 600),
            )
        return None

    def bus(self, kind, spec):
        from firmware.sim.buses import SimI2C, SimOneWire

        return SimI2C() if kind == "i2c" else SimOneWire()

    def adc(self, spec, where):
        return signal("voltage", self.seed, self.board.now_ms)

    def chip(self, kind, bus, address):
        """An emulated chip where the config says one is, following a temperature signal."""
        from firmware.sim import chips

        if kind == "ds18b20":
            chip = bus.attach(chips.FakeDS18B20(address or chips.make_rom(self.seed)))
        else:
            chip = bus.attach(address, chips.FakeBME280() if kind == "bme280" else chips.FakeSHT3x())
        self.board.animated.append((chip, signal("temperature", self.seed)))
