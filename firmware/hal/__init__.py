# Hardware access lives here and only here: `esp32` for real boards, `sim` for the unix port.


class ConfigError(ValueError):
    """The device configuration cannot be used as given."""


class Board:
    """What the node asks of a board. Boards override what differs: time, network, drivers."""

    name = "board"

    def sensor_specs(self, config):
        return config.get("sensors")

    def before_measure(self, now_ms):
        pass

    def running(self):
        return True  # a board samples until it loses power

    def trace(self, payload):
        pass

    def feed_watchdog(self):
        pass

    def read_file(self, path):
        with open(path, "rb") as f:
            return f.read()

    def write_file(self, path, data):
        with open(path, "wb") as f:
            f.write(data)


def parse_rom(text, where):
    """A 1-Wire ROM from 16 hex digits (None if not given)."""
    if text is None:
        return None
    try:
        rom = bytes(int(text[i:i + 2], 16) for i in range(0, len(text), 2))
    except (TypeError, ValueError):
        rom = b""
    if len(rom) != 8:
        raise ConfigError(where + ": rom " + repr(text) + " must be 16 hex digits")
    return rom


def make_board(options):
    """The board for this interpreter: sim on the unix port, esp32 on a board."""
    import sys

    if sys.platform == "esp32":
        from firmware.hal.esp32 import Esp32Board

        return Esp32Board()
    from firmware.hal.sim import SimBoard

    return SimBoard(replay_path=options.get("replay"), trace_path=options.get("trace"),
                    duration_s=options.get("duration"), time_scale=options.get("time-scale", 1))
