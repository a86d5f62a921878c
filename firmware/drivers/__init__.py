# Sensor drivers. Each reads into preallocated buffers; measure() returns False on a failed read (a bus
# error, a bad CRC, a missing chip) and counts it, leaving NaN in its values, and never raises.


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

    def channel_index(self, channel):
        for i in range(len(self.channels)):
            if self.channels[i] == channel:
                return i
        raise ValueError("channel " + repr(channel) + " is not one of " + ", ".join(self.channels))

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


def crc8(data, start, end, polynomial, init, reflected):
    """CRC-8 over data[start:end] (no slice is made); reflected (LSB first) for Dallas 1-Wire,
    MSB first for Sensirion."""
    crc = init
    for i in range(start, end):
        byte = data[i]
        if reflected:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ polynomial if crc & 1 else crc >> 1
        else:
            crc ^= byte
            for _ in range(8):
                crc = ((crc << 1) ^ polynomial) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc
