# The one board-to-driver dispatch, for every board: which driver reads which sensor type, which
# sensors share a chip (by bus and address, or ROM), which bus of the config a chip is on. A board
# gives only its wiring (see firmware/sensors.py); a driver refusing its arguments (a DS18B20's
# resolution or ROM) is a ConfigError naming the sensor. Start-up only: firmware/start.py unloads it.
from firmware.errors import ConfigError


def parse_rom(text, where):
    """A 1-Wire ROM from 16 hex digits (None if not given)."""
    if text is None:
        return None
    try:
        rom = bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))
    except (TypeError, ValueError):
        rom = b""
    if len(rom) != 8:
        raise ConfigError(where + ": rom " + repr(text) + " must be 16 hex digits")
    return rom


def _bus(wiring, config, name, kind, where, made):
    key = ("bus", name)
    bus = made.get(key)
    if bus is None:
        spec = (config.get("buses") or {}).get(name)
        if not isinstance(spec, dict) or spec.get("type") != kind:
            raise ConfigError(where + ": bus " + repr(name) + " is not a configured " + kind + " bus")
        bus = made[key] = wiring.bus(kind, spec)
    return bus


def make_driver(wiring, spec, config, where, made):
    """The driver of one sensor spec that is not the board's own source, shared with the specs before
    it that name the same chip (made holds the drivers and buses made so far). Drivers are imported
    when a config asks for them: RAM holds only the bytecode in use."""
    kind = spec.get("type")
    bus_name = spec.get("bus")
    if kind == "bme280" or kind == "sht3x":
        if kind == "bme280":
            from firmware.drivers.bme280 import BME280 as chip
        else:
            from firmware.drivers.sht3x import SHT3x as chip
        address = spec.get("address", chip.addresses[0])  # the driver's chip facts: the first is the default
        key = (kind, bus_name, address)
    elif kind == "ds18b20":
        address = parse_rom(spec.get("rom"), where)
        key = (kind, bus_name, address)
    elif kind == "adc":
        key = (kind, spec.get("pin"), None) if spec.get("pin") is not None else None
    else:
        raise ConfigError(where + ": unknown sensor type " + repr(kind))
    driver = made.get(key)
    if driver is not None:
        return driver
    try:
        if kind == "adc":
            from firmware.drivers.analog import Analog

            driver = Analog(wiring.adc(spec, where), spec.get("scale", 1.0), spec.get("offset", 0.0))
        else:
            bus = _bus(wiring, config, bus_name, "onewire" if kind == "ds18b20" else "i2c", where, made)
            wiring.chip(kind, bus, address)
            if kind == "ds18b20":
                from firmware.drivers.ds18b20 import DS18B20

                driver = DS18B20(bus, address, spec.get("resolution", 12))
            else:
                driver = chip(bus, address)
    except ConfigError:
        raise
    except ValueError as exc:  # a driver refusing its arguments (a DS18B20's resolution or ROM)
        raise ConfigError(where + ": " + str(exc))
    if key is not None:
        made[key] = driver
    return driver
