# Sensors from the device config: one driver per physical chip (shared by its channels), each channel
# with its own filter chain in compiled form. This module checks names, intervals and filters, as far
# as a node must (the host has checked the config before); the drivers come from the board's wiring
# and, for chips on buses and ADC pins, from the one dispatch in firmware/drivers/dispatch.py.
# Start-up only: firmware/start.py unloads both.
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
        driver = wiring.source(spec, where)
        if driver is None:
            # Loaded only for a config with chips or ADC pins: its names stay out of a node without.
            from firmware.drivers.dispatch import make_driver

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
