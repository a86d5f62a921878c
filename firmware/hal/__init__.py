# Hardware access lives here and only here: `esp32` for real boards, `sim` for the unix port.


class ConfigError(ValueError):
    """The device configuration cannot be used as given."""


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
