# Sensirion SHT3x over I2C: single-shot measurement, high repeatability, no clock stretching, with the
# datasheet's CRC-8 (polynomial 0x31, init 0xFF) on each 16-bit word.
from firmware.drivers import Driver
from firmware.drivers.crc import crc8

_MEASURE_HIGH = b"\x24\x00"


def sht_crc(data, start=0, end=None):
    return crc8(data, start, len(data) if end is None else end, 0x31, 0xFF, False)


class SHT3x(Driver):
    channels = ("temperature", "humidity")
    addresses = (0x44, 0x45)  # ADDR low, high; the first is the default
    conversion_ms = 16  # high repeatability: 15.5 ms at most (datasheet table 4)

    def __init__(self, i2c, address=0x44):
        super().__init__()
        self.i2c = i2c
        self.address = address
        self._data = bytearray(6)

    def start(self, now):
        try:
            self.i2c.writeto(self.address, _MEASURE_HIGH)
            return True
        except OSError as exc:
            return self._fail("i2c: " + repr(exc))

    def measure(self, now):
        try:
            self.i2c.readfrom_into(self.address, self._data)
        except OSError as exc:
            return self._fail("i2c: " + repr(exc))
        d = self._data
        if sht_crc(d, 0, 2) != d[2] or sht_crc(d, 3, 5) != d[5]:
            return self._fail("crc mismatch")
        self.values[0] = -45 + 175 * ((d[0] << 8) | d[1]) / 65535
        self.values[1] = 100 * ((d[3] << 8) | d[4]) / 65535
        return True
