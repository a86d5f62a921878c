# Hardware access lives here and only here: `esp32` for real boards, `sim` for the unix port. What
# only start-up needs (making the board, reading files) is in firmware/config.py, which is unloaded.


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
