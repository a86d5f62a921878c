"""GET /api/devices and GET /api/devices/{id}/latest (a read token when one is set)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from ingest.routers._deps import ReadersOnly, RegistryDep, StatsDep
from ingest.routers._models import DeviceSummary, LatestOut

router = APIRouter(prefix="/api/devices", tags=["devices"], dependencies=ReadersOnly)


@router.get("")
async def list_devices(registry: RegistryDep, stats: StatsDep) -> list[DeviceSummary]:
    return [
        DeviceSummary(
            id=device.id,
            status=device.status,
            created_at=device.created_at,
            last_seen_ms=device.last_seen_ms,
            labels=device.labels,
            report=stats.status.get(device.id),
        )
        for device in registry.devices()
    ]


@router.get("/{device_id}/latest")
async def latest(device_id: str, registry: RegistryDep, stats: StatsDep) -> LatestOut:
    """The newest stored reading of each sensor since the service started."""
    if registry.status(device_id) is None:
        raise HTTPException(status_code=404, detail=f"device {device_id[:80]!r} is not registered")
    return LatestOut(device=device_id, readings=stats.latest.get(device_id, {}))
