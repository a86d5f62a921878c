# Sensor drivers. Each reads into preallocated buffers; measure() returns False on a failed read (a bus
# error, a bad CRC, a missing chip) and counts it, leaving NaN in its values, and never raises.


class Group:
    """One driver sampled every interval_ms, the channels read from it, and when it is next due."""

    def __init__(self, driver, interval_ms):
        self.driver = driver
        self.interval_ms = interval_ms
        self.channels = []  # (sensor_index, channel_index, chain)
        self.timed = False  # a channel has a filter that emits on its own (heartbeat, timeout...)
        self.next = 0  # ticks of the next start()
        self.read_at = -1  # ticks at which the conversion started can be read; -1 when none is


class Driver:
    """A physical sensor with one or more channels (e.g. temperature and humidity)."""

    channels = ()
    conversion_ms = 0  # time between start() and measure()
    exhausted = False  # a finite source (CSV replay) sets this when it has nothing more

    def __init__(self):
        from array import array

        # Doubles: on a board floats are single anyway, and on the unix port values stay exact.
        self.values = array("d", [float("nan")] * len(self.channels))
        self.errors = 0
        self.last_error = None

    def start(self, now):
        """Begin a measurement (send a conversion command); measure() may follow conversion_ms later."""
        return True

    def measure(self, now):
        """Fill self.values; False on failure (values are then NaN)."""
        raise NotImplementedError

    def _fail(self, reason):
        self.errors += 1
        self.last_error = reason
        for i in range(len(self.values)):
            self.values[i] = float("nan")
        return False
