"""The device config, defined once: its model, defaults and limits (pydantic), checked on the host.

`DeviceConfig` is the whole `config.json` of a device bundle: where the broker is, the TLS files, Wi-Fi,
and `Sensing`, the part users write (sensors, buses, ESPHome-style filters, batching, the outbox).
Everything else derives from these models: `fieldlink device add`'s options and their defaults and
ranges, `fieldlink config check`, the bundle writer, the table in docs/configuration.md (`fieldlink
config schema --markdown`), and the node's own defaults (`firmware/config.py`, checked against these by
a test). Chip facts (channels, addresses, conversion times) are read from the drivers themselves.

`check_sensing` validates with the same filter code the node runs, and `compile_sensing` turns a config
into what the node reads: filter chains in compiled form, so the node never loads the checking code.
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from shared.filter_config import MAX_DURATION_MS, MAX_SHOWN, FilterConfigError, compile_chain, show
from shared.filterlib import from_compiled
from shared.protocol import MAX_READINGS, MAX_SENSORS, valid_id
from tools._errors import UsageError

# At most this many problems are listed; the rest are counted (a list of 200,000 bad sensors is one
# input, not 200,000 lines).
_MAX_PROBLEMS = 50


class _Strict(BaseModel):
    # No NaN or infinity anywhere: MicroPython's json cannot read them back from a bundle.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class I2CBus(_Strict):
    type: Literal["i2c"]
    id: int = 0
    sda: int = Field(ge=0, le=48)
    scl: int = Field(ge=0, le=48)
    freq: int = Field(default=100_000, ge=10_000, le=1_000_000)


class OneWireBus(_Strict):
    type: Literal["onewire"]
    pin: int = Field(ge=0, le=48)


Bus = Annotated[I2CBus | OneWireBus, Field(discriminator="type")]


class _Sensor(_Strict):
    name: str
    interval_ms: int | None = Field(default=None, ge=10, le=MAX_DURATION_MS)
    filters: list[Any] = Field(default_factory=list)
    # ESPHome's accuracy_decimals (0 when not set): filter_out and throttle_with_priority compare values
    # rounded to it. Only the compiled chain uses it; the node does not read it.
    accuracy_decimals: int = Field(default=0, ge=-10, le=15)
    optional: bool = Field(
        default=False,
        description="left out in safe mode (after repeated crashes within minutes of starting; docs/reliability.md)",
    )

    def compiled_filters(self) -> list[Any]:
        """This sensor's chain in compiled form; FilterConfigError lists every problem."""
        return list(compile_chain(self.filters, accuracy_decimals=self.accuracy_decimals))


class SimSensor(_Sensor):
    type: Literal["sim"]
    signal: Literal["temperature", "humidity", "pressure", "voltage"]
    seed: int | None = None
    period_s: float = Field(default=600, gt=0)


class _I2CChip(_Sensor):
    """A channel of an I2C chip; its driver class holds the chip's facts (channels, addresses)."""

    bus: str
    address: int | None = Field(default=None, description="the chip's I2C address; default its first")
    channel: str

    @classmethod
    def driver(cls) -> Any:
        raise NotImplementedError

    @model_validator(mode="after")
    def _check_chip(self) -> _I2CChip:
        chip = self.driver()
        if self.channel not in chip.channels:
            raise ValueError(f"channel {show(self.channel)} is not one of {', '.join(chip.channels)}")
        if self.address is None:
            self.address = chip.addresses[0]
        elif self.address not in chip.addresses:
            raise ValueError(f"address {show(self.address)} is not one of {', '.join(map(hex, chip.addresses))}")
        return self

    def conversion_ms(self) -> int:
        return int(self.driver().conversion_ms)


class BME280Sensor(_I2CChip):
    type: Literal["bme280"]

    @classmethod
    def driver(cls) -> Any:
        from firmware.drivers.bme280 import BME280

        return BME280


class SHT3xSensor(_I2CChip):
    type: Literal["sht3x"]

    @classmethod
    def driver(cls) -> Any:
        from firmware.drivers.sht3x import SHT3x

        return SHT3x


class DS18B20Sensor(_Sensor):
    type: Literal["ds18b20"]
    bus: str
    rom: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{16}$")
    resolution: Literal[9, 10, 11, 12] = 12

    def conversion_ms(self) -> int:
        from firmware.drivers.ds18b20 import conversion_ms

        return int(conversion_ms(self.resolution))


class AdcSensor(_Sensor):
    type: Literal["adc"]
    pin: int = Field(ge=0, le=48)
    attenuation: Literal["0db", "2.5db", "6db", "11db"] = "11db"
    scale: float = 1.0
    offset: float = 0.0


Sensor = Annotated[SimSensor | BME280Sensor | SHT3xSensor | DS18B20Sensor | AdcSensor, Field(discriminator="type")]


class Batch(_Strict):
    max_readings: int = Field(
        default=60, ge=1, le=MAX_READINGS, description="a batch leaves when it holds this many readings"
    )
    max_age_ms: int = Field(
        default=5_000, ge=10, le=MAX_DURATION_MS, description="a batch also leaves when its first reading is this old"
    )


class SpoolLimits(_Strict):
    """The node's flash spool (firmware/spool.py, docs/reliability.md): every batch is kept there until
    the service acknowledges it."""

    max_bytes: int = Field(
        default=1_048_576,
        ge=4096,
        le=16_777_216,
        description="flash bytes for batches the service has not acknowledged; when full the oldest "
        "segment goes, each of its batches counted (dropped)",
    )
    segment_bytes: int = Field(
        default=4096,
        ge=512,
        le=65_536,
        description="bytes of one spool file, deleted once all its batches are acknowledged (4096: a flash "
        "erase block)",
    )
    window: int = Field(
        default=8,
        ge=1,
        le=64,
        description="batches sent and awaiting the service's acknowledgement before the node sends more",
    )
    ack_timeout_ms: int = Field(
        default=20_000,
        ge=100,
        le=MAX_DURATION_MS,
        description="no acknowledgement within this sends the window again; the wait doubles, up to 5 min, "
        "until one comes",
    )


# The node's heap, estimated from make bench-firmware on the unix port (64-bit objects: conservative for
# a 32-bit ESP32; docs/performance.md): about 59.8 KB steady for its two sensors, a 5-slot median,
# 30-reading batches and the spool (the service acknowledging); it runs in 64 KB and
# not in 56 KB, which the estimate with _HEAP_USE reproduces (tests/test_device_config.py). The
# spool's batches are on flash: only its window and the batch being sent are in RAM.
_RUNTIME_BYTES = 54_500  # code, TLS context, MQTT client, spool, loop: the node with nothing to sample
_SENSOR_BYTES = 1_000  # a channel: its driver's share, filter objects, its group
_SLOT_BYTES = 24  # a window slot: a reference and a boxed float
_READING_BYTES = 47  # the batcher's arrays (13 B), the flush and the batch being sent
_WINDOW_ENTRY_BYTES = 40  # the spool's bookkeeping per batch in its window
_HEAP_USE = 0.9  # at most this share of the heap: the rest absorbs fragmentation (56 KB for 58 KB fails)


class Sensing(_Strict):
    """What a device samples and how: the part of its config a user writes."""

    sample_interval_ms: int = Field(
        default=1000, ge=10, le=MAX_DURATION_MS, description="each sensor's interval unless it sets its own"
    )
    batch: Batch = Field(default_factory=Batch)
    spool: SpoolLimits = Field(default_factory=SpoolLimits)
    buses: dict[str, Bus] = Field(default_factory=dict, description="I2C and 1-Wire buses, by name")
    # A batch names every sensor: the protocol's bound on names is the bound on sensors.
    sensors: list[Sensor] = Field(
        min_length=1, max_length=MAX_SENSORS, description="what to sample, with filter chains"
    )
    heap_bytes: int = Field(
        default=110_000,
        ge=32_768,
        description="the board's free MicroPython heap (an ESP32 without PSRAM has about 110 KB); "
        "the checker refuses a config whose estimated need passes 90 % of it",
    )

    @model_validator(mode="after")
    def _check_together(self) -> Sensing:
        problems: list[str] = []
        seen: set[str] = set()
        chips: dict[tuple[Any, ...], tuple[str, int]] = {}
        for sensor in self.sensors:
            where = f"sensor {show(sensor.name)}"
            if not valid_id(sensor.name):
                problems.append(f"{where}: the name must be 1-64 of a-z, 0-9, '-', '_', '.'")
            if sensor.name in seen:
                problems.append(f"{where}: declared twice")
            seen.add(sensor.name)
            interval = sensor.interval_ms or self.sample_interval_ms
            conversion = 0
            if isinstance(sensor, BME280Sensor | SHT3xSensor | DS18B20Sensor):
                kind = "i2c" if not isinstance(sensor, DS18B20Sensor) else "onewire"
                bus = self.buses.get(sensor.bus)
                if bus is None or bus.type != kind:
                    problems.append(f"{where}: bus {show(sensor.bus)} is not a configured {kind} bus")
                key: tuple[Any, ...] = (
                    sensor.type,
                    sensor.bus,
                    sensor.rom if isinstance(sensor, DS18B20Sensor) else sensor.address,
                )
                conversion = sensor.conversion_ms()
                if key in chips and chips[key][1] != interval:
                    problems.append(
                        f"{where}: interval_ms {interval} differs from {chips[key][1]} of sensor "
                        f"{show(chips[key][0])}, another channel of the same chip"
                    )
                chips.setdefault(key, (sensor.name, interval))
            if conversion >= interval:
                problems.append(
                    f"{where}: interval_ms {interval} is shorter than the chip's {conversion} ms conversion"
                )
            try:
                sensor.compiled_filters()
            except FilterConfigError as exc:
                problems.extend(f"{where}: {problem}" for problem in exc.problems)
        problems += self._check_heap()  # also beside other problems: every one is listed in one run
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def heap_estimate(self) -> list[tuple[str, int]]:
        """What the node will hold, by part, largest first: an estimate (see the constants above)."""
        parts = [
            ("the runtime", _RUNTIME_BYTES),
            (f"spool.window ({self.spool.window})", self.spool.window * _WINDOW_ENTRY_BYTES),
            (f"batch.max_readings ({self.batch.max_readings})", self.batch.max_readings * _READING_BYTES),
        ]
        for sensor in self.sensors:
            try:
                slots = _window_slots(from_compiled(sensor.compiled_filters()))
            except (FilterConfigError, ValueError):  # listed as its own problem; counted without windows
                slots = 0
            parts.append((f"sensor {show(sensor.name)} ({slots} window slots)", _SENSOR_BYTES + slots * _SLOT_BYTES))
        return sorted(parts, key=lambda part: -part[1])

    def _check_heap(self) -> list[str]:
        parts = self.heap_estimate()
        need = sum(size for _, size in parts)
        if need <= self.heap_bytes * _HEAP_USE:
            return []
        biggest = ", ".join(f"{name} {size / 1024:.1f} KB" for name, size in parts if name != "the runtime")
        return [
            f"the node would need about {need / 1024:.0f} KB of heap, more than {_HEAP_USE:.0%} of its "
            f"heap_bytes {self.heap_bytes / 1024:.0f} KB (shrink the largest: {biggest})"
        ]


class Broker(_Strict):
    host: str = Field(min_length=1, description="where the node connects")
    port: int = Field(default=8883, ge=1, le=65535, description="the broker's MQTT over TLS port")
    server_hostname: str | None = Field(
        default=None, description="the name the broker's certificate must carry; default host"
    )
    keepalive_s: int = Field(
        default=30, ge=5, le=3600, description="MQTT keep-alive; a broker silent 1.5 times this is lost"
    )
    timeout_ms: int = Field(
        default=10_000, ge=100, le=MAX_DURATION_MS, description="how long the node waits for CONNACK and each PUBACK"
    )


class TlsFiles(_Strict):
    ca: str = Field(default="ca.der", description="the fleet CA (DER), relative to the bundle")
    cert: str = Field(default="cert.der", description="the device certificate (DER)")
    key: str = Field(default="key.der", description="its private key (DER)")


class WifiNetwork(_Strict):
    ssid: str = Field(
        min_length=1, max_length=32, description="a network to join; 1 to 8 of them, tried in order (ESP32 only)"
    )
    password: str = Field(default="", max_length=64, description="its passphrase; empty for an open network")


class Wifi(_Strict):
    """A site's networks (tools/_site.py writes them): the node tries them in order until one joins."""

    networks: list[WifiNetwork] = Field(min_length=1, max_length=8)
    ntp_hosts: list[str] = Field(
        default_factory=lambda: ["pool.ntp.org"],
        min_length=1,
        max_length=4,
        description="the clock's sources after joining, tried in order",
    )


class DeviceConfig(Sensing):
    """A device bundle's `config.json`: who the device is, where it sends, and its sensing."""

    device_id: str = Field(description="the certificate's CN")
    broker: Broker
    tls: TlsFiles = Field(default_factory=TlsFiles)
    wifi: Wifi | None = Field(default=None)
    drain_timeout_ms: int = Field(
        default=15_000,
        ge=0,
        le=MAX_DURATION_MS,
        description="unix port: how long a stopping node waits for the service to acknowledge its spool",
    )


def _window_slots(node: Any) -> int:
    """Preallocated slots in a built filter chain: every list or array its filters hold, found by
    walking the objects the node itself would build (no list of windowed filters to keep in step)."""
    if isinstance(node, (list, tuple)):
        return sum(_window_slots(item) for item in node)
    if not hasattr(node, "__dict__"):
        return 0
    slots = 0
    for value in vars(node).values():
        if isinstance(value, (list, array)) and not any(hasattr(v, "process") for v in value):
            slots += len(value)
        elif isinstance(value, (list, tuple)) or hasattr(value, "process"):
            slots += _window_slots(value)
    return slots


def _key(part: Any) -> str:
    """A location's key as written, control characters escaped, cut like any shown value."""
    if isinstance(part, int):
        return str(part)
    text = str(part)
    return repr(text[:MAX_SHOWN])[1:-1] + ("..." if len(text) > MAX_SHOWN else "")


def _where(location: tuple[Any, ...], data: Any) -> str:
    """A problem's place in words: a sensor by its name (`sensor 'pipe'`), not by its index."""
    parts = list(location)
    if len(parts) >= 2 and parts[0] == "sensors" and isinstance(parts[1], int):
        sensors = data.get("sensors") if isinstance(data, dict) else None
        item = sensors[parts[1]] if isinstance(sensors, list) and parts[1] < len(sensors) else None
        name = item.get("name") if isinstance(item, dict) else None
        head = f"sensor {show(name)}" if isinstance(name, str) else f"sensor #{parts[1] + 1}"
        # The union's tag (`bme280`) is the sensor's type, already in its config: leave it out.
        rest = [p for p in parts[2:] if not (isinstance(item, dict) and p == item.get("type"))]
        return ".".join([head, *map(_key, rest)]) if rest else head
    return ".".join(_key(part) for part in parts)


def _describe(exc: ValidationError, data: Any) -> str:
    lines = []
    for error in exc.errors():
        where = _where(tuple(error["loc"]), data)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "value_error":
            # A model's own check: its messages name their culprits already, one per "; ".
            for problem in message.split("; "):
                lines.append(f"{where}: {problem}" if where and not problem.startswith("sensor ") else problem)
        else:
            lines.append(f"{where}: {message} (got {show(error.get('input'))})" if where else message)
    if len(lines) > _MAX_PROBLEMS:
        lines = [*lines[:_MAX_PROBLEMS], f"... and {len(lines) - _MAX_PROBLEMS} more problems"]
    return "\n".join(f"  - {line}" for line in lines)


def check_sensing(data: Any, source: str = "config") -> Sensing:
    """The validated sensing config, or a UsageError listing every problem with its culprit."""
    try:
        return Sensing.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{source} is not a valid sensing config:\n{_describe(exc, data)}") from exc
    except RecursionError as exc:
        raise UsageError(f"{source} is nested too deeply to be a sensing config") from exc


def device_config(device_id: str, broker: Broker, sensing: Sensing) -> DeviceConfig:
    """The whole config of a device: its identity, its broker and its checked sensing."""
    return DeviceConfig.model_validate({**sensing.model_dump(), "device_id": device_id, "broker": broker.model_dump()})


def compile_sensing(config: Sensing) -> dict[str, Any]:
    """A checked config (a `Sensing`, or a whole `DeviceConfig`) as the node reads it: every default
    written out, filters compiled."""
    data = config.model_dump(mode="json", exclude_none=True)
    del data["heap_bytes"]  # the checker's, not the node's
    for sensor, checked in zip(data["sensors"], config.sensors, strict=True):
        sensor["filters"] = checked.compiled_filters()
        del sensor["accuracy_decimals"]
        if not sensor["optional"]:
            del sensor["optional"]  # the node reads it in safe mode only
    return data


def settings() -> dict[str, tuple[tuple[str, ...], FieldInfo]]:
    """The sensing config's number settings by flat name (`batch_max_readings`): their path in the
    config and their field (default, bounds, description). `fieldlink device add` offers each as an
    option (`--batch-max-readings`)."""
    found: dict[str, tuple[tuple[str, ...], FieldInfo]] = {}
    for name, field in Sensing.model_fields.items():
        if field.annotation is int:
            found[name] = ((name,), field)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, _Strict):
            for inner, inner_field in field.annotation.model_fields.items():
                if inner_field.annotation is int:
                    found[f"{name}_{inner}"] = ((name, inner), inner_field)
    return found


def bounds(field: FieldInfo) -> tuple[int | None, int | None]:
    """A number field's inclusive bounds (ge/le), from its metadata."""
    low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    return low, high  # type: ignore[return-value]


def with_overrides(sensing: Sensing, **changes: int | None) -> Sensing:
    """`sensing` with the settings named as in `settings()` changed, checked again; None leaves one."""
    known = settings()
    data = sensing.model_dump()
    for name, value in changes.items():
        if name not in known:
            raise TypeError(f"no sensing setting {name!r}")
        if value is None:
            continue
        *path, last = known[name][0]
        target = data
        for part in path:
            target = target[part]
        target[last] = value
    return check_sensing(data)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, _Strict)


def markdown_table() -> str:
    """The device config's keys, defaults and meanings as a Markdown table, from the models: what
    docs/configuration.md shows (`fieldlink config schema --markdown`)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = prefix + name
            nested = [t for t in (field.annotation, *get_args(field.annotation)) if _is_model(t)]
            if nested:
                # A list of objects (wifi.networks) shows its items' keys as `key[].name`.
                walk(nested[0], key + ("[]." if get_origin(field.annotation) is list else "."))
                continue
            default = field.get_default(call_default_factory=True)
            if field.is_required():
                text = "required"
            elif default is None or default == {}:
                text = "none"
            else:
                text = f"`{json.dumps(default)}`"
            low, high = bounds(field)
            limits = (
                ""
                if low is None and high is None
                else f" ({'' if low is None else low}…{'' if high is None else high})"
            )
            rows.append(f"| `{key}` | {text} | {field.description or ''}{limits} |")

    walk(DeviceConfig, "")
    return "\n".join(rows)


# What a device config holds besides its sensing: its identity and where it connects.
IDENTITY_FIELDS = frozenset(DeviceConfig.model_fields) - frozenset(Sensing.model_fields)


def load_sensing(path: Path) -> Sensing:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {str(exc)[:200]}") from exc
    except RecursionError as exc:
        raise UsageError(f"{path} is nested too deeply to be a sensing config") from exc
    return check_sensing(data, str(path))
