# Emulated chips for the unix port: a BME280 and an SHT3x (I2C), DS18B20s (1-Wire). They answer as the
# chips do (registers, commands, CRCs), so the real drivers run against them in tests and in simulated
# nodes; attach them to the buses of firmware/sim/buses.py.
import errno
import struct

from firmware.drivers.ds18b20 import onewire_crc
from firmware.drivers.sht3x import sht_crc

# The worked example of Bosch's BMP280/BME280 datasheets (section 8.1 of BMP280's): these trims with
# adc_T = 519888, adc_P = 415148 give 25.08 degC (t_fine 128422) and 100653.27 Pa.
DATASHEET_TRIM = {
    "T1": 27504,
    "T2": 26435,
    "T3": -1000,
    "P1": 36477,
    "P2": -10685,
    "P3": 3024,
    "P4": 2855,
    "P5": 140,
    "P6": -7,
    "P7": 15500,
    "P8": -14600,
    "P9": 6000,
    # Humidity trims as read from a production BME280.
    "H1": 75,
    "H2": 362,
    "H3": 0,
    "H4": 313,
    "H5": 50,
    "H6": 30,
}


class FakeBME280:
    """Registers of a BME280: chip id, trims, ctrl registers; a forced-mode write 'measures'."""

    def __init__(self, trim=None, adc_t=519888, adc_p=415148, adc_h=30000, chip_id=0x60):
        self.registers = bytearray(256)
        self.registers[0xD0] = chip_id
        t = trim or DATASHEET_TRIM
        self.registers[0x88 : 0x88 + 24] = struct.pack(
            "<HhhHhhhhhhhh",
            t["T1"],
            t["T2"],
            t["T3"],
            t["P1"],
            t["P2"],
            t["P3"],
            t["P4"],
            t["P5"],
            t["P6"],
            t["P7"],
            t["P8"],
            t["P9"],
        )
        self.registers[0xA1] = t["H1"]
        h4, h5 = t["H4"], t["H5"]
        self.registers[0xE1:0xE8] = (
            struct.pack("<hB", t["H2"], t["H3"])
            + bytes(((h4 >> 4) & 0xFF, (h4 & 0x0F) | ((h5 & 0x0F) << 4), (h5 >> 4) & 0xFF))
            + struct.pack("b", t["H6"])
        )
        self.registers[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"  # reset values
        self.adc_t, self.adc_p, self.adc_h = adc_t, adc_p, adc_h
        self.measurements = 0

    def set_temperature(self, celsius):
        """About 3174 ADC counts per degree with the datasheet's trims (25.08 degC at 519888)."""
        self.adc_t = 519888 + int((celsius - 25.08) * 3174)

    def read_registers(self, register, buf):
        for i in range(len(buf)):
            buf[i] = self.registers[(register + i) & 0xFF]

    def write_registers(self, register, buf):
        for i in range(len(buf)):
            self.registers[register + i] = buf[i]
        if register == 0xF4 and buf[0] & 0x03 in (1, 2):  # forced mode: one measurement
            self.measurements += 1
            p, t, h = self.adc_p, self.adc_t, self.adc_h
            self.registers[0xF7:0xFF] = bytes(
                (p >> 12, (p >> 4) & 0xFF, (p & 0xF) << 4, t >> 12, (t >> 4) & 0xFF, (t & 0xF) << 4, h >> 8, h & 0xFF)
            )


class FakeSHT3x:
    """A single-shot measurement command prepares 6 bytes with CRCs; reading without one NACKs."""

    def __init__(self, temperature=25.0, humidity=50.0):
        self.temperature = temperature
        self.humidity = humidity
        self.corrupt_crc = False
        self._ready = None

    def set_temperature(self, celsius):
        self.temperature = celsius

    @staticmethod
    def raw_temperature(celsius):
        return int((celsius + 45) * 65535 / 175 + 0.5)

    def write(self, buf):
        if bytes(buf) != b"\x24\x00":
            raise OSError(errno.EIO)
        st = self.raw_temperature(self.temperature)
        srh = int(self.humidity * 65535 / 100 + 0.5)
        data = bytearray((st >> 8, st & 0xFF, 0, srh >> 8, srh & 0xFF, 0))
        data[2] = sht_crc(data, 0, 2)
        data[5] = sht_crc(data, 3, 5) ^ (0xFF if self.corrupt_crc else 0)
        self._ready = data

    def read(self, buf):
        if self._ready is None:
            raise OSError(errno.EIO)  # no measurement pending: the chip NACKs its address
        buf[:] = self._ready
        self._ready = None


class FakeDS18B20:
    def __init__(self, rom, temperature=25.0625):
        self.rom = bytes(rom)
        self.temperature = temperature
        # Power-on scratchpad: +85 degC, TH 0x4B, TL 0x46, 12 bits.
        self.scratchpad = bytearray(b"\x50\x05\x4b\x46\x7f\xff\x0c\x10\x00")
        self.scratchpad[8] = onewire_crc(self.scratchpad, 0, 8)
        self.corrupt_crc = False
        self.conversions = 0

    def set_temperature(self, celsius):
        self.temperature = celsius

    def write_scratchpad(self, data):
        """TH, TL and the configuration register (the resolution)."""
        self.scratchpad[2:5] = data
        self.scratchpad[8] = onewire_crc(self.scratchpad, 0, 8)

    @staticmethod
    def raw(celsius):
        return int(celsius * 16) & 0xFFFF

    def convert(self):
        self.conversions += 1
        raw = self.raw(self.temperature)
        self.scratchpad[0] = raw & 0xFF
        self.scratchpad[1] = raw >> 8
        self.scratchpad[8] = onewire_crc(self.scratchpad, 0, 8) ^ (0xFF if self.corrupt_crc else 0)


def make_rom(serial, family=0x28):
    rom = bytearray(8)
    rom[0] = family
    for i in range(6):
        rom[1 + i] = (serial >> (8 * i)) & 0xFF
    rom[7] = onewire_crc(rom, 0, 7)
    return bytes(rom)
