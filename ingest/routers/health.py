"""GET /healthz: is the service connected, and what has it counted."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ingest.routers._deps import StatsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(stats: StatsDep) -> dict[str, Any]:
    return {
        "status": "ok" if stats.mqtt_connected else "degraded",
        "mqtt_connected": stats.mqtt_connected,
        "counters": dict(stats.counters),
    }
