# Maxim DS18B20 over 1-Wire: Convert T, wait the conversion time of the resolution, read the scratchpad
# and check its CRC (Dallas/Maxim CRC-8, x^8 + x^5 + x^4 + 1, LSB first).
from firmware.drivers import Driver
from firmware.drivers.crc import crc8

_CONVERT_T = 0x44
_READ_SCRATCHPAD = 0xBE
_WRITE_SCRATCHPAD = 0x4E
_SKIP_ROM = 0xCC
_RESOLUTION_BITS = {9: 0x1F, 10: 0x3F, 11: 0x5F, 12: 0x7F}


def onewire_crc(data, start=0, end=None):
    return crc8(data, start, len(data) if end is None else end, 0x8C, 0, True)


def conversion_ms(resolution):
    """93.75 ms at 9 bits, doubling per bit: 750 ms at 12 (datasheet table 2)."""
    return int(93.75 * (1 << (resolution - 9)) + 0.999)


class DS18B20(Driver):
    channels = ("temperature",)

    def __init__(self, onewire, rom=None, resolution=12):
        super().__init__()
        if resolution not in _RESOLUTION_BITS:
            raise ValueError("ds18b20 resolution must be 9, 10, 11 or 12, got " + repr(resolution))
        if rom is not None and (len(rom) != 8 or onewire_crc(rom, 0, 7) != rom[7]):
            raise ValueError("ds18b20 rom " + repr(rom) + " is not 8 bytes with a valid CRC")
        self.ow = onewire
        self.rom = rom
        self.resolution = resolution
        self.conversion_ms = conversion_ms(resolution)
        self._scratch = bytearray(9)
        self._configured = False

    def _select(self):
        if not self.ow.reset():
            return False  # no presence pulse: nothing on the bus answers
        if self.rom is None:
            self.ow.writebyte(_SKIP_ROM)
        else:
            self.ow.select_rom(self.rom)
        return True

    def start(self, now):
        try:
            if not self._configured:
                if not self._select():
                    return self._fail("no presence pulse")
                self.ow.write(bytes((_WRITE_SCRATCHPAD, 0, 0, _RESOLUTION_BITS[self.resolution])))
                self._configured = True
            if not self._select():
                return self._fail("no presence pulse")
            self.ow.writebyte(_CONVERT_T)
            return True
        except OSError as exc:
            return self._fail("1-wire: " + repr(exc))

    def measure(self, now):
        try:
            if not self._select():
                return self._fail("no presence pulse")
            self.ow.writebyte(_READ_SCRATCHPAD)
            self.ow.readinto(self._scratch)
        except OSError as exc:
            return self._fail("1-wire: " + repr(exc))
        s = self._scratch
        if onewire_crc(s, 0, 8) != s[8]:
            return self._fail("crc mismatch")
        raw = s[0] | (s[1] << 8)
        if raw & 0x8000:
            raw -= 0x10000
        self.values[0] = raw / 16
        return True
