# Sensors from the device config: one driver per physical chip (shared by its channels), each channel
# with its own filter chain in compiled form. The board makes the drivers; this module checks names,
# intervals and filters, as far as a node must (the host has checked the config before).
from firmware.drivers import Group
from firmware.hal import ConfigError
from shared import protocol
from shared.filterlib import from_compiled


def build_sensors(config, board):
    """Return (names, groups); raise ConfigError naming the sensor and what is wrong."""
    specs = config.get("sensors")
    if not isinstance(specs, list) or not specs:
        raise ConfigError("sensors must be a non-empty list")
    default_interval = config["sample_interval_ms"]
    names = []
    groups = []
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
        driver = board.driver_for(spec, config, where)
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
