# Drivers against emulated chips, on both interpreters: datasheet examples, CRCs, missing chips.
from firmware.drivers.analog import Analog, two_point
from firmware.drivers.bme280 import BME280
from firmware.drivers.crc import crc8
from firmware.drivers.ds18b20 import DS18B20, conversion_ms, onewire_crc
from firmware.drivers.sht3x import SHT3x, sht_crc
from firmware.sim.buses import SimI2C, SimOneWire
from firmware.sim.chips import DATASHEET_TRIM, FakeBME280, FakeDS18B20, FakeSHT3x, make_rom
from tests.dual.helpers import raises


def _isnan(x):
    return x != x


def _bme(chip=None):
    bus = SimI2C()
    bus.attach(0x76, chip or FakeBME280())
    return BME280(bus, 0x76), bus


def test_bme280_datasheet_worked_example():
    driver, _ = _bme()
    assert driver.start(0)
    assert driver.measure(10)
    # Datasheet: adc_T 519888 -> t_fine 128422, T = 2508 (25.08 degC); adc_P 415148 -> 100653.27 Pa.
    assert driver.t_fine == 128422
    assert driver.compensate_t(519888) == 2508
    pascal = driver.compensate_p(415148) / 256  # Q24.8
    assert abs(pascal - 100653.27) < 0.02  # the datasheet's table gives 100653.27 Pa
    assert driver.values[0] == 25.08
    assert abs(driver.values[2] - pascal / 100) < 1e-6  # reported in hPa, as every pressure is
    # The datasheet's double-precision formula (section 8.1), transcribed, agrees to 0.01 Pa.
    t = DATASHEET_TRIM
    var1 = driver.t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * t["P6"] / 32768.0
    var2 = var2 + var1 * t["P5"] * 2.0
    var2 = var2 / 4.0 + t["P4"] * 65536.0
    var1 = (t["P3"] * var1 * var1 / 524288.0 + t["P2"] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * t["P1"]
    p = (1048576.0 - 415148 - var2 / 4096.0) * 6250.0 / var1
    p = p + (t["P9"] * p * p / 2147483648.0 + p * t["P8"] / 32768.0 + t["P7"]) / 16.0
    assert abs(p - pascal) < 0.01


def test_bme280_humidity_matches_the_datasheet_float_formula():
    driver, _ = _bme(FakeBME280(adc_h=30000))
    driver.start(0)
    driver.measure(10)
    t = DATASHEET_TRIM
    # Datasheet section 8.1, the double-precision humidity compensation, as a cross-check.
    var_h = driver.t_fine - 76800.0
    var_h = (30000 - (t["H4"] * 64.0 + t["H5"] / 16384.0 * var_h)) * (
        t["H2"] / 65536.0 * (1.0 + t["H6"] / 67108864.0 * var_h * (1.0 + t["H3"] / 67108864.0 * var_h))
    )
    var_h = var_h * (1.0 - t["H1"] * var_h / 524288.0)
    assert abs(driver.values[1] - var_h) < 0.01
    assert 0 <= driver.values[1] <= 100


def test_bme280_humidity_is_bounded():
    for adc_h in (0, 65535):
        driver, _ = _bme(FakeBME280(adc_h=adc_h))
        driver.start(0)
        driver.measure(10)
        assert 0.0 <= driver.values[1] <= 100.0


def test_bme280_missing_chip_gives_nan_and_an_error():
    bus = SimI2C()
    driver = BME280(bus, 0x77)
    assert not driver.start(0)
    assert not driver.measure(10)
    assert driver.errors == 2
    assert "i2c" in driver.last_error
    assert _isnan(driver.values[0]) and _isnan(driver.values[1]) and _isnan(driver.values[2])


def test_bme280_wrong_chip_id_is_refused():
    driver, _ = _bme(FakeBME280(chip_id=0x58))  # a BMP280 answers 0x58
    assert not driver.start(0)
    assert driver.last_error == "chip id 0x58 is not a BME280's (0x60)"


def test_bme280_without_a_measurement_is_an_error():
    driver, bus = _bme()
    driver.start(0)
    bus.devices[0x76].registers[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"
    assert not driver.measure(10)
    assert driver.errors == 1


def test_bme280_recovers_after_the_chip_returns():
    bus = SimI2C()
    driver = BME280(bus, 0x76)
    assert not driver.start(0)
    bus.attach(0x76, FakeBME280())
    assert driver.start(1000) and driver.measure(1010)
    assert driver.values[0] == 25.08


def test_sht_crc_datasheet_example():
    # SHT3x datasheet section 4.12: CRC of 0xBEEF is 0x92.
    assert sht_crc(b"\xbe\xef") == 0x92


def test_sht3x_reads_and_converts():
    bus = SimI2C()
    chip = bus.attach(0x44, FakeSHT3x(temperature=23.5, humidity=41.25))
    driver = SHT3x(bus)
    assert driver.start(0)
    assert driver.measure(16)
    st = FakeSHT3x.raw_temperature(23.5)
    assert driver.values[0] == -45 + 175 * st / 65535
    assert abs(driver.values[0] - 23.5) < 0.002
    assert abs(driver.values[1] - 41.25) < 0.002
    chip.corrupt_crc = True
    driver.start(1000)
    assert not driver.measure(1016)
    assert driver.last_error == "crc mismatch"
    assert _isnan(driver.values[1])


def test_sht3x_read_without_measurement_or_chip_fails():
    bus = SimI2C()
    bus.attach(0x44, FakeSHT3x())
    driver = SHT3x(bus)
    assert not driver.measure(0)  # the chip NACKs: no measurement was started
    assert not SHT3x(SimI2C()).start(0)


def test_onewire_crc_maxim_application_note_example():
    # Maxim AN27: ROM 02 1C B8 01 00 00 00 has CRC A2.
    assert onewire_crc(b"\x02\x1c\xb8\x01\x00\x00\x00") == 0xA2
    assert onewire_crc(b"\x02\x1c\xb8\x01\x00\x00\x00\xa2") == 0  # a CRC over data and CRC is zero


def test_ds18b20_datasheet_temperatures():
    # Datasheet table 1: +25.0625 = 0x0191, -10.125 = 0xFF5E, -55 = 0xFC90, +125 = 0x07D0.
    for celsius, raw in ((25.0625, 0x0191), (-10.125, 0xFF5E), (-55.0, 0xFC90), (125.0, 0x07D0)):
        assert FakeDS18B20.raw(celsius) == raw
        bus = SimOneWire()
        bus.attach(FakeDS18B20(make_rom(1), temperature=celsius))
        driver = DS18B20(bus)
        assert driver.start(0)
        assert driver.measure(750)
        assert driver.values[0] == celsius


def test_ds18b20_selects_by_rom_and_sets_resolution():
    bus = SimOneWire()
    first = bus.attach(FakeDS18B20(make_rom(1), temperature=20.5))
    second = bus.attach(FakeDS18B20(make_rom(2), temperature=-3.25))
    driver = DS18B20(bus, rom=make_rom(2), resolution=10)
    assert driver.conversion_ms == 188
    assert driver.start(0) and driver.measure(188)
    assert driver.values[0] == -3.25
    assert second.scratchpad[4] == 0x3F  # 10-bit configuration written
    assert first.conversions == 0 and second.conversions == 1


def test_ds18b20_conversion_times():
    assert [conversion_ms(r) for r in (9, 10, 11, 12)] == [94, 188, 375, 750]


def test_ds18b20_bad_crc_missing_chip_and_bad_config():
    bus = SimOneWire()
    chip = bus.attach(FakeDS18B20(make_rom(7)))
    driver = DS18B20(bus)
    chip.corrupt_crc = True
    driver.start(0)
    assert not driver.measure(750)
    assert driver.last_error == "crc mismatch"
    empty = DS18B20(SimOneWire())
    assert not empty.start(0)
    assert empty.last_error == "no presence pulse"
    assert _isnan(empty.values[0])
    bad_rom = bytearray(make_rom(3))
    bad_rom[7] ^= 1
    raises(ValueError, DS18B20, bus, bytes(bad_rom))
    raises(ValueError, DS18B20, bus, None, 13)


def test_ds18b20_scratchpad_power_on_value_is_85():
    bus = SimOneWire()
    bus.attach(FakeDS18B20(make_rom(5)))
    driver = DS18B20(bus)
    assert driver.measure(0)  # read before any conversion: the power-on +85 degC
    assert driver.values[0] == 85.0


class FakeADC:
    def __init__(self, microvolts):
        self.microvolts = microvolts

    def read_uv(self):
        if self.microvolts is None:
            raise OSError(5)
        return self.microvolts


def test_analog_linear_calibration():
    scale, offset = two_point(0.5, 0.0, 2.5, 100.0)  # 0.5 V = 0 %, 2.5 V = 100 %
    assert (scale, offset) == (50.0, -25.0)
    adc = FakeADC(1500000)
    driver = Analog(adc, scale, offset)
    assert driver.measure(0)
    assert driver.values[0] == 50.0
    adc.microvolts = None
    assert not driver.measure(1)
    assert _isnan(driver.values[0])
    assert driver.errors == 1
    raises(ValueError, two_point, 1.0, 0.0, 1.0, 5.0)


def test_crc8_of_nothing_is_its_init():
    assert crc8(b"", 0, 0, 0x31, 0xFF, False) == 0xFF


# --- the one board-to-driver dispatch (firmware/sensors.py), with the simulator's wiring ------------


class _Board:
    """What the simulator's wiring needs of its board at start-up."""

    def __init__(self):
        self.animated = []

    def now_ms(self):
        return 1795311729979


def _build(sensors, buses=None, replay=None):
    from firmware.sensors import build_sensors
    from firmware.sim.wiring import SimWiring

    board = _Board()
    config = {"sample_interval_ms": 1000, "sensors": sensors, "buses": buses or {}}
    names, groups = build_sensors(config, SimWiring(board, replay))
    return names, groups, board


BUSES = {"i2c0": {"type": "i2c", "scl": 22, "sda": 21}, "ow": {"type": "onewire", "pin": 4}}


def test_one_dispatch_makes_every_chip_and_shares_a_chip_between_its_channels():
    names, groups, board = _build(
        [
            {"name": "t", "type": "bme280", "bus": "i2c0", "channel": "temperature"},
            {"name": "p", "type": "bme280", "bus": "i2c0", "channel": "pressure"},
            {"name": "rh", "type": "sht3x", "bus": "i2c0", "address": 0x45, "channel": "humidity"},
            {"name": "probe", "type": "ds18b20", "bus": "ow", "resolution": 10},
            {"name": "v", "type": "adc", "pin": 34, "scale": 2.0},
            {"name": "sim", "type": "sim", "signal": "humidity"},
        ],
        BUSES,
    )
    assert names == ["t", "p", "rh", "probe", "v", "sim"]
    kinds = [type(g.driver).__name__ for g in groups]
    assert kinds == ["BME280", "SHT3x", "DS18B20", "Analog", "Signal"]
    assert [len(g.channels) for g in groups] == [2, 1, 1, 1, 1]
    assert groups[0].driver.i2c is groups[1].driver.i2c  # one bus, by its name
    assert groups[1].driver.address == 0x45
    assert groups[2].driver.conversion_ms == conversion_ms(10)
    assert len(board.animated) == 3  # each emulated chip follows a signal
    board.animated[0][0].set_temperature(30.0)
    for group in groups:
        assert group.driver.start(0)
        assert group.driver.measure(group.driver.conversion_ms)
        for value in group.driver.values:
            assert not _isnan(value)
    assert abs(groups[0].driver.values[0] - 30.0) < 0.05
    assert 1.0 < groups[3].driver.values[0] < 5.0  # 1.65 V +- 0.5, times 2


def test_dispatch_refuses_what_no_board_can_make_naming_the_sensor():
    from firmware.errors import ConfigError

    cases = [
        ({"name": "x", "type": "ds18b20", "bus": "ow", "resolution": 13}, "sensor 'x': ds18b20 resolution"),
        ({"name": "x", "type": "ds18b20", "bus": "ow", "rom": "28ff"}, "sensor 'x': rom '28ff' must be 16 hex"),
        ({"name": "x", "type": "ds18b20", "bus": "ow", "rom": "2801020304050699"}, "sensor 'x': ds18b20 rom"),
        ({"name": "x", "type": "bme280", "bus": "ow"}, "sensor 'x': bus 'ow' is not a configured i2c bus"),
        ({"name": "x", "type": "sht3x", "bus": "nowhere"}, "sensor 'x': bus 'nowhere' is not a configured i2c"),
        ({"name": "x", "type": "thermocouple"}, "sensor 'x': unknown sensor type 'thermocouple'"),
        ({"name": "x", "type": "replay"}, "sensor 'x': type replay needs --replay"),
        ({"name": "x", "type": "sim", "signal": "wind"}, "unknown simulated signal 'wind'"),
    ]
    for spec, message in cases:
        exc = raises(ConfigError, _build, [spec], BUSES)
        assert str(exc).startswith(message), str(exc)


def test_a_ds18b20_by_rom_reads_its_own_chip():
    rom = make_rom(9)
    text = "".join("%02x" % b for b in rom)
    _, groups, board = _build([{"name": "a", "type": "ds18b20", "bus": "ow", "rom": text}], BUSES)
    driver = groups[0].driver
    assert driver.rom == rom
    assert board.animated[0][0].rom == rom
