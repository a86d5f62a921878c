"""The sensing config of a device, checked on the host before it goes into a bundle.

Users write it readably (ESPHome-style filters); `check_sensing` validates it with pydantic models and
the same filter code the node runs, and `compile_sensing` turns it into what the node reads: filter
chains in compiled form, so the node never loads the checking code (its RAM is small).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.filter_config import FilterConfigError, compile_chain
from shared.protocol import MAX_READINGS, valid_id
from tools._errors import UsageError

_DS18B20_CONVERSION_MS = {9: 94, 10: 188, 11: 375, 12: 750}
_BME280_CONVERSION_MS = 10
_SHT3X_CONVERSION_MS = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


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
    interval_ms: int | None = Field(default=None, ge=10)
    filters: list[Any] = Field(default_factory=list)


class SimSensor(_Sensor):
    type: Literal["sim"]
    signal: Literal["temperature", "humidity", "pressure", "voltage"]
    seed: int | None = None
    period_s: float = Field(default=600, gt=0)


class BME280Sensor(_Sensor):
    type: Literal["bme280"]
    bus: str
    address: Literal[0x76, 0x77] = 0x76
    channel: Literal["temperature", "humidity", "pressure"]


class SHT3xSensor(_Sensor):
    type: Literal["sht3x"]
    bus: str
    address: Literal[0x44, 0x45] = 0x44
    channel: Literal["temperature", "humidity"]


class DS18B20Sensor(_Sensor):
    type: Literal["ds18b20"]
    bus: str
    rom: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{16}$")
    resolution: Literal[9, 10, 11, 12] = 12


class AdcSensor(_Sensor):
    type: Literal["adc"]
    pin: int = Field(ge=0, le=48)
    attenuation: Literal["0db", "2.5db", "6db", "11db"] = "11db"
    scale: float = 1.0
    offset: float = 0.0


Sensor = Annotated[SimSensor | BME280Sensor | SHT3xSensor | DS18B20Sensor | AdcSensor, Field(discriminator="type")]


class Batch(_Strict):
    max_readings: int = Field(default=60, ge=1, le=MAX_READINGS)
    max_age_ms: int = Field(default=10_000, ge=10)


class OutboxLimits(_Strict):
    capacity: int = Field(default=64, ge=1, le=4096)
    max_bytes: int = Field(default=24_576, ge=1024)


class Sensing(_Strict):
    """What a device samples and how: the part of its config a user writes."""

    sample_interval_ms: int = Field(default=1000, ge=10)
    batch: Batch = Field(default_factory=Batch)
    outbox: OutboxLimits = Field(default_factory=OutboxLimits)
    buses: dict[str, Bus] = Field(default_factory=dict)
    sensors: list[Sensor] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_together(self) -> Sensing:
        problems: list[str] = []
        seen: set[str] = set()
        chips: dict[tuple[Any, ...], tuple[str, int]] = {}
        for sensor in self.sensors:
            where = f"sensor {sensor.name!r}"
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
                    problems.append(f"{where}: bus {sensor.bus!r} is not a configured {kind} bus")
                key: tuple[Any, ...] = (
                    sensor.type,
                    sensor.bus,
                    sensor.rom if isinstance(sensor, DS18B20Sensor) else sensor.address,
                )
                if isinstance(sensor, DS18B20Sensor):
                    conversion = _DS18B20_CONVERSION_MS[sensor.resolution]
                else:
                    conversion = _BME280_CONVERSION_MS if isinstance(sensor, BME280Sensor) else _SHT3X_CONVERSION_MS
                if key in chips and chips[key][1] != interval:
                    problems.append(
                        f"{where}: interval_ms {interval} differs from {chips[key][1]} of sensor "
                        f"{chips[key][0]!r}, another channel of the same chip"
                    )
                chips.setdefault(key, (sensor.name, interval))
            if conversion >= interval:
                problems.append(
                    f"{where}: interval_ms {interval} is shorter than the chip's {conversion} ms conversion"
                )
            try:
                compile_chain(sensor.filters)
            except FilterConfigError as exc:
                problems.append(f"{where}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        if error["type"] == "value_error":
            lines.extend(message.split("; "))
        else:
            lines.append(f"{location}: {message} (got {value!r})" if location else message)
    return "\n".join(f"  - {line}" for line in lines)


def check_sensing(data: Any, source: str = "config") -> Sensing:
    """The validated sensing config, or a UsageError listing every problem with its culprit."""
    try:
        return Sensing.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{source} is not a valid sensing config:\n{_describe(exc)}") from exc


def compile_sensing(sensing: Sensing) -> dict[str, Any]:
    """The device-config fields for a checked sensing config, filters compiled."""
    data = sensing.model_dump(mode="json", exclude_none=True)
    for sensor in data["sensors"]:
        sensor["filters"] = compile_chain(sensor.get("filters"))
    return data


def load_sensing(path: Path) -> Sensing:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from exc
    return check_sensing(data, str(path))
