# Hardware access lives here and only here: `esp32` for real boards, `sim` for the unix port.


class ConfigError(ValueError):
    """The device configuration cannot be used as given."""


def make_board(options):
    """The board for this interpreter: sim on the unix port, esp32 on a board."""
    import sys

    if sys.platform == "esp32":
        from firmware.hal.esp32 import Esp32Board

        return Esp32Board()
    from firmware.hal.sim import SimBoard

    return SimBoard(replay_path=options.get("replay"), trace_path=options.get("trace"),
                    duration_s=options.get("duration"))
