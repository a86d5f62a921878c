# Hardware access lives here and only here: `esp32.py` for ESP32 boards. This module is the board
# interface the node runs against; the simulated board of the unix port is in firmware/sim/. Making
# the drivers a config names is start-up work: firmware/sensors.py does it for every board, asking
# the board's wiring (see there) for buses, ADCs and the sources only a board has.


class Board:
    """What the node asks of a board while it runs: now_ms() (epoch milliseconds, 0 while the board
    does not know the time), ticks_ms(), wait_ms(ms, poller), connect_network(wifi), online() (False
    once the network is gone: asked while connected, so a lost Wi-Fi means reconnecting), rssi() (the
    radio's signal in dBm, or None), and what a board may leave as it is here."""

    name = "board"
    reset_cause = "unknown"  # why this boot began (docs/protocol.md: the status's health)

    def before_measure(self, now_ms):
        pass

    def running(self):
        return True  # a board samples until it loses power

    def trace(self, payload):
        pass

    def write(self, f, data):
        """How the spool's bytes reach a file (the simulated board can cut the power in the middle)."""
        f.write(data)

    def feed_watchdog(self):
        pass
