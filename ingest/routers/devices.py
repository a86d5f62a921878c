"""The read API (a read token when one is set): devices, their newest readings and recent series, and
the service at a glance. Readings come from InfluxDB (InfluxQL on /query), so a restarted service
shows what it showed before; times are epoch milliseconds throughout."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status

from ingest._errors import StorageError
from ingest._influx_read import InfluxReader
from ingest._metrics import ServiceMetrics, whole, write_latency
from ingest.routers._deps import ReadersOnly, RegistryDep, StatsDep, StorageDep, WorkersDep
from ingest.routers._models import (
    DeviceReport,
    DeviceSummary,
    LatestOut,
    Reading,
    SeriesOut,
    ServiceOut,
    WriteLatency,
)
from ingest.routers.health import health_of

log = logging.getLogger("fieldlink.ingest")

router = APIRouter(prefix="/api", tags=["devices"], dependencies=ReadersOnly)

# A chart holds at most this many points per sensor; the interval follows from the range.
MAX_POINTS = 2000


def _reader(request: Request) -> InfluxReader | None:
    reader: InfluxReader | None = getattr(request.app.state, "reader", None)
    return reader


def _require_device(registry: RegistryDep, device_id: str) -> None:
    if registry.status(device_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id[:80]!r} is not registered")


@router.get("/devices")
async def list_devices(registry: RegistryDep, stats: StatsDep) -> list[DeviceSummary]:
    """Every registered device: its last seen time (its own clock) and its retained status."""
    return [
        DeviceSummary(
            id=device.id,
            status=device.status,
            created_ms=round(device.created_at * 1000),
            last_seen_ms=device.last_seen_ms,
            labels=device.labels,
            report=DeviceReport.of(stats.status.get(device.id)),
        )
        for device in registry.devices()
    ]


@router.get("/devices/{device_id}/latest")
async def latest(device_id: str, request: Request, registry: RegistryDep, stats: StatsDep) -> LatestOut:
    """The newest stored reading of each sensor of the device, read from InfluxDB (and anything newer
    this process stored since, which may still be in its spool)."""
    _require_device(registry, device_id)
    found: dict[str, tuple[int, float]] = {}
    source: Literal["database", "memory"] = "memory"
    reader = _reader(request)
    if reader is not None:
        try:
            found = await reader.latest(device_id)
            source = "database"
        except StorageError as exc:
            log.warning("latest readings of %s from memory: %s", device_id, exc)
    for sensor, reading in stats.latest.get(device_id, {}).items():
        if sensor not in found or found[sensor][0] < reading["time_ms"]:
            found[sensor] = (reading["time_ms"], reading["value"])
    readings = {sensor: Reading(time_ms=t, value=v) for sensor, (t, v) in sorted(found.items())}
    return LatestOut(device=device_id, readings=readings, source=source)


@router.get("/devices/{device_id}/series", responses={503: {"description": "InfluxDB cannot be read"}})
async def series(
    device_id: str,
    request: Request,
    registry: RegistryDep,
    range_s: Annotated[int, Query(ge=60, le=30 * 86400, description="how far back, seconds")] = 3600,
    points: Annotated[int, Query(ge=10, le=MAX_POINTS, description="at most this many points per sensor")] = 300,
) -> SeriesOut:
    """The device's readings per sensor over the last `range_s` seconds (device time), each point the
    mean of one interval (`range_s / points`, at least a second)."""
    _require_device(registry, device_id)
    reader = _reader(request)
    if reader is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "no InfluxDB read credentials: set FIELDLINK_INFLUX_READ_USERNAME/_PASSWORD (1.x) or a token",
        )
    until_ms = int(time.time() * 1000)
    since_ms = until_ms - range_s * 1000
    interval_ms = max(1000, range_s * 1000 // points)
    try:
        found = await reader.series(device_id, since_ms, until_ms, interval_ms)
    except StorageError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    sensors = dict(sorted(found.items()))
    return SeriesOut(device=device_id, since_ms=since_ms, until_ms=until_ms, interval_ms=interval_ms, sensors=sensors)


@router.get("/service", tags=["health"])
async def service(
    request: Request, registry: RegistryDep, stats: StatsDep, storage: StorageDep, workers: WorkersDep
) -> ServiceOut:
    """The service at a glance: health, counters, rejections by reason, queue depths, write latency,
    devices online (the numbers of /healthz and /metrics, for the dashboard)."""
    metrics: ServiceMetrics = request.app.state.metrics
    count, total_s, p99_s = write_latency(metrics)
    health = health_of(stats, storage, workers)  # counters summed over every worker
    queues = whole(stats, storage, workers).queues  # likewise
    devices = [d for d in registry.devices() if d.active]
    online = sum(1 for d in devices if (stats.status.get(d.id) or {}).get("online") is True)
    prefix = "rejected_"
    return ServiceOut(
        time_ms=int(time.time() * 1000),
        health=health,
        rejections={k[len(prefix) :]: v for k, v in sorted(health.counters.items()) if k.startswith(prefix)},
        queue_messages=queues.get("incoming", 0),
        unacked_messages=queues.get("unacked", 0),
        write_latency=WriteLatency(
            count=count,
            mean_ms=total_s * 1000 / count if count else None,
            p99_ms=p99_s * 1000 if p99_s is not None and p99_s != float("inf") else None,
        ),
        devices_active=len(devices),
        devices_online=online,
    )
