# Emulated buses and chips wired to the real drivers, for a simulated board whose config names
# bme280, sht3x, ds18b20 or adc sensors. Loaded only when a config does.
from firmware.hal import ConfigError


class _SimADC:
    def __init__(self, signal, clock):
        self.signal = signal
        self.clock = clock

    def read_uv(self):
        return int(self.signal.read(self.clock()) * 1000000)


class SimChips:
    def __init__(self, board):
        self.board = board
        self._buses = {}
        self._drivers = {}
        self._animated = []  # (chip, signal) pairs moved before each measurement

    def _bus(self, config, name, kind, where):
        bus = self._buses.get(name)
        if bus is None:
            spec = (config.get("buses") or {}).get(name)
            if not isinstance(spec, dict) or spec.get("type") != kind:
                raise ConfigError(where + ": bus " + repr(name) + " is not a configured " + kind + " bus")
            from firmware.hal.simbus import SimI2C, SimOneWire

            bus = SimI2C() if kind == "i2c" else SimOneWire()
            self._buses[name] = bus
        return bus

    def driver_for(self, kind, spec, config, where, seed):
        key = None
        if kind in ("bme280", "sht3x"):
            default = 0x76 if kind == "bme280" else 0x44
            address = spec.get("address", default)
            key = (kind, spec.get("bus"), address)
        elif kind == "ds18b20":
            key = (kind, spec.get("bus"), spec.get("rom"))
        if key is not None and key in self._drivers:
            return self._drivers[key]
        from firmware.hal.simsetup import signal

        clock = self.board.now_ms
        if kind == "adc":
            from firmware.drivers.analog import Analog

            driver = Analog(_SimADC(signal("voltage", seed), clock), spec.get("scale", 1.0), spec.get("offset", 0.0))
        elif kind == "bme280":
            from firmware.drivers.bme280 import BME280
            from firmware.hal.simbus import FakeBME280

            bus = self._bus(config, spec.get("bus"), "i2c", where)
            chip = bus.attach(address, FakeBME280())
            self._animated.append((chip, signal("temperature", seed)))
            driver = BME280(bus, address)
        elif kind == "sht3x":
            from firmware.drivers.sht3x import SHT3x
            from firmware.hal.simbus import FakeSHT3x

            bus = self._bus(config, spec.get("bus"), "i2c", where)
            chip = bus.attach(address, FakeSHT3x())
            self._animated.append((chip, signal("temperature", seed)))
            driver = SHT3x(bus, address)
        elif kind == "ds18b20":
            from firmware.drivers.ds18b20 import DS18B20, parse_rom
            from firmware.hal.simbus import FakeDS18B20, make_rom

            bus = self._bus(config, spec.get("bus"), "onewire", where)
            rom = parse_rom(spec.get("rom"), where) or make_rom(seed)
            chip = bus.attach(FakeDS18B20(rom))
            self._animated.append((chip, signal("temperature", seed)))
            try:
                driver = DS18B20(bus, rom if spec.get("rom") else None, spec.get("resolution", 12))
            except ValueError as exc:
                raise ConfigError(where + ": " + str(exc))
        else:
            raise ConfigError(where + ": unknown sensor type " + repr(kind))
        if key is not None:
            self._drivers[key] = driver
        return driver

    def animate(self, now_ms):
        """Move the emulated chips along their signals, as the world outside a real chip would."""
        for chip, signal in self._animated:
            celsius = signal.read(now_ms)
            if hasattr(chip, "adc_t"):  # a BME280: about 3174 ADC counts per degree with the example trims
                chip.adc_t = 519888 + int((celsius - 25.08) * 3174)
            else:
                chip.temperature = celsius
