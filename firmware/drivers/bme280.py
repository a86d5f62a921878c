# Bosch BME280 over I2C: temperature, humidity, pressure, with the datasheet's integer compensation
# (section 4.2.3: 32-bit for T and H, 64-bit for P).
import struct

from firmware.drivers import Driver

CHIP_ID = 0x60
_REG_ID = 0xD0
_REG_CALIB_A = 0x88  # 26 bytes: T1..T3, P1..P9, (reserved), H1
_REG_CALIB_B = 0xE1  # 7 bytes: H2..H6
_REG_CTRL_HUM = 0xF2
_REG_CTRL_MEAS = 0xF4
_REG_DATA = 0xF7  # 8 bytes: press[3], temp[3], hum[2]
_FORCED_X1 = 0b00100101  # osrs_t x1, osrs_p x1, forced mode


class BME280(Driver):
    channels = ("temperature", "humidity", "pressure")
    addresses = (0x76, 0x77)  # SDO to GND, to VDDIO; the first is the default
    conversion_ms = 10  # forced mode, x1 oversampling everywhere: 9.3 ms at most (datasheet 9.1)

    def __init__(self, i2c, address=0x76):
        super().__init__()
        self.i2c = i2c
        self.address = address
        self._data = bytearray(8)
        self._one = bytearray(1)
        self._calibrated = False
        self.t_fine = 0

    def _load_calibration(self):
        self.i2c.readfrom_mem_into(self.address, _REG_ID, self._one)
        if self._one[0] != CHIP_ID:
            return self._fail("chip id " + hex(self._one[0]) + " is not a BME280's (0x60)")
        a = bytearray(26)
        b = bytearray(7)
        self.i2c.readfrom_mem_into(self.address, _REG_CALIB_A, a)
        self.i2c.readfrom_mem_into(self.address, _REG_CALIB_B, b)
        (self.T1, self.T2, self.T3, self.P1, self.P2, self.P3, self.P4, self.P5, self.P6, self.P7, self.P8, self.P9) = (
            struct.unpack("<HhhHhhhhhhhh", a[:24])
        )
        self.H1 = a[25]
        self.H2 = struct.unpack("<h", b[0:2])[0]
        self.H3 = b[2]
        self.H4 = (struct.unpack("b", b[3:4])[0] << 4) | (b[4] & 0x0F)
        self.H5 = (struct.unpack("b", b[5:6])[0] << 4) | (b[4] >> 4)
        self.H6 = struct.unpack("b", b[6:7])[0]
        self.i2c.writeto_mem(self.address, _REG_CTRL_HUM, b"\x01")  # osrs_h x1 (applies on ctrl_meas write)
        self._calibrated = True
        return True

    def start(self, now):
        try:
            if not self._calibrated and not self._load_calibration():
                return False
            self.i2c.writeto_mem(self.address, _REG_CTRL_MEAS, bytes((_FORCED_X1,)))
            return True
        except OSError as exc:  # no ACK: the chip is missing or the bus is broken
            return self._fail("i2c: " + repr(exc))

    def measure(self, now):
        if not self._calibrated:
            return self._fail(self.last_error or "not calibrated")
        try:
            self.i2c.readfrom_mem_into(self.address, _REG_DATA, self._data)
        except OSError as exc:
            return self._fail("i2c: " + repr(exc))
        d = self._data
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        if adc_t == 0x80000:  # the reset value: no measurement has been made
            return self._fail("no measurement (data registers hold their reset value)")
        self.values[0] = self.compensate_t(adc_t) / 100
        self.values[1] = self.compensate_h(adc_h) / 1024
        self.values[2] = self.compensate_p(adc_p) / 25600  # Q24.8 Pa -> hPa, the unit of docs/schema.md
        return True

    def compensate_t(self, adc_t):
        """Temperature in 0.01 degC; sets t_fine for the other two."""
        var1 = (((adc_t >> 3) - (self.T1 << 1)) * self.T2) >> 11
        var2 = (((((adc_t >> 4) - self.T1) * ((adc_t >> 4) - self.T1)) >> 12) * self.T3) >> 14
        self.t_fine = var1 + var2
        return (self.t_fine * 5 + 128) >> 8

    def compensate_p(self, adc_p):
        """Pressure in Pa as Q24.8 (divide by 256)."""
        var1 = self.t_fine - 128000
        var2 = var1 * var1 * self.P6
        var2 = var2 + ((var1 * self.P5) << 17)
        var2 = var2 + (self.P4 << 35)
        var1 = ((var1 * var1 * self.P3) >> 8) + ((var1 * self.P2) << 12)
        var1 = (((1 << 47) + var1) * self.P1) >> 33
        if var1 == 0:
            return 0  # avoid a division by zero, as the datasheet does
        p = 1048576 - adc_p
        numerator = ((p << 31) - var2) * 3125
        # C's 64-bit division truncates toward zero; Python's // floors.
        p = numerator // var1 if (numerator >= 0) == (var1 > 0) else -((-numerator) // var1)
        var1 = (self.P9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (self.P8 * p) >> 19
        return ((p + var1 + var2) >> 8) + (self.P7 << 4)

    def compensate_h(self, adc_h):
        """Relative humidity in %RH as Q22.10 (divide by 1024)."""
        v = self.t_fine - 76800
        v = ((((adc_h << 14) - (self.H4 << 20) - (self.H5 * v)) + 16384) >> 15) * (
            ((((((v * self.H6) >> 10) * (((v * self.H3) >> 11) + 32768)) >> 10) + 2097152) * self.H2 + 8192) >> 14
        )
        v = v - (((((v >> 15) * (v >> 15)) >> 7) * self.H1) >> 4)
        v = 0 if v < 0 else v
        v = 419430400 if v > 419430400 else v
        return v >> 12
