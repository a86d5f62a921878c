# Sensors from the device config: one driver per physical chip (shared by its channels), each channel
# with its own filter chain in compiled form. This module checks names, intervals and filters, as far
# as a node must (the host has checked the config before), and makes the drivers, for every board
# alike, from what the board's wiring gives. Start-up only: firmware/main.py unloads it.
#
# A board's wiring (hal/esp32.py's Esp32Wiring, sim/wiring.py's SimWiring) answers:
#   specs(config)            the sensor specs to build (the simulator's --replay has its own)
#   source(spec, where)      a driver only this board has (simulated signals, the replay), or None
#   bus(kind, spec)          an "i2c" or "onewire" bus from its entry in the config's buses
#   adc(spec, where)         an ADC input (read_uv()) for an "adc" sensor
#   chip(kind, bus, address) told where the config puts a chip (the simulator attaches an emulated one)
from firmware.drivers import Group
from firmware.errors import ConfigError
from shared import protocol
from shared.filterlib import from_compiled


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
    """The driver of one sensor spec, shared with the specs before it that name the same chip (made
    holds the drivers and buses made so far). The one place that knows which driver reads which
    sensor type, for every board. Drivers are imported when a config asks for them: RAM holds only
    the bytecode in use."""
    driver = wiring.source(spec, where)
    if driver is not None:
        return driver
    kind = spec.get("type")
    bus_name = spec.get("bus")
    if kind == "bme280" or kind == "sht3x":
        address = spec.get("address", 0x76 if kind == "bme280" else 0x44)
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
            if kind == "bme280":
                from firmware.drivers.bme280 import BME280

                driver = BME280(bus, address)
            elif kind == "sht3x":
                from firmware.drivers.sht3x import SHT3x

                driver = SHT3x(bus, address)
            else:
                from firmware.drivers.ds18b20 import DS18B20

                driver = DS18B20(bus, address, spec.get("resolution", 12))
    except ConfigError:
        raise
    except ValueError as exc:  # a driver refusing its arguments (a DS18B20's resolution or ROM)
        raise ConfigError(where + ": " + str(exc))
    if key is not None:
        made[key] = driver
    return driver


def build_sensors(config, wiring):
    """Return (names, groups); raise ConfigError naming the sensor and what is wrong."""
    specs = wiring.specs(config)
    if not isinstance(specs, list) or not specs:
        raise ConfigError("sensors must be a non-empty list")
    default_interval = config["sample_interval_ms"]
    names = []
    groups = []
    made = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise ConfigError("sensors[" + str(i) + "] must be an object")
        name = spec.get("name")
        if not protocol.valid_id(name):
            raise ConfigError("sensors[" + str(i) + "]: name " + repr(name) + " is not a valid id")
        if name in names:
            raise ConfigError("sensor " + repr(name) + " is declared twice")
        where = "sensor " + repr(name)
        interval = spec.get("interval_ms", default_interval)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 10:
            raise ConfigError(where + ": interval_ms must be an integer >= 10, got " + repr(interval))
        driver = make_driver(wiring, spec, config, where, made)
        group = None
        for g in groups:
            if g.driver is driver:
                group = g
        if group is None:
            group = Group(driver, interval)
            groups.append(group)
        elif group.interval_ms != interval:
            raise ConfigError(
                where
                + ": interval_ms "
                + str(interval)
                + " differs from "
                + str(group.interval_ms)
                + " of another channel of the same chip"
            )
        channel = spec.get("channel")
        if channel is None:
            if len(driver.channels) != 1:
                raise ConfigError(where + ": channel is required, one of " + ", ".join(driver.channels))
            channel = driver.channels[0]
        if channel not in driver.channels:
            raise ConfigError(where + ": channel " + repr(channel) + " is not one of " + ", ".join(driver.channels))
        index = driver.channels.index(channel)
        conversion = driver.conversion_ms
        if conversion >= interval:
            raise ConfigError(
                where
                + ": interval_ms "
                + str(interval)
                + " is shorter than the chip's "
                + str(conversion)
                + " ms conversion time"
            )
        try:
            chain = from_compiled(spec.get("filters") or [])  # compiled and checked by the host
        except ValueError as exc:
            raise ConfigError(where + ": " + str(exc))
        group.channels.append((len(names), index, chain))
        group.timed = group.timed or chain.timed
        names.append(name)
    return names, groups
