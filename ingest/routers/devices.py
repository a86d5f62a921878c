"""GET /api/devices and GET /api/devices/{id}/latest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from ingest.routers._deps import RegistryDep, StatsDep

router = APIRouter(prefix="/api/devices", tags=["devices"])


@router.get("")
async def list_devices(registry: RegistryDep, stats: StatsDep) -> list[dict[str, Any]]:
    return [
        {
            "id": device.id,
            "status": device.status,
            "created_at": device.created_at,
            "last_seen_ms": stats.last_seen.get(device.id),
            # The device's own report (retained status message): online, health counters, config error.
            "report": stats.status.get(device.id),
        }
        for device in registry.devices()
    ]


@router.get("/{device_id}/latest")
async def latest(device_id: str, registry: RegistryDep, stats: StatsDep) -> dict[str, Any]:
    """The newest stored reading of each sensor since the service started."""
    if registry.get(device_id) is None:
        raise HTTPException(status_code=404, detail=f"device {device_id!r} is not registered")
    return {"device": device_id, "readings": stats.latest.get(device_id, {})}
