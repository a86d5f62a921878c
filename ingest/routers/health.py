"""GET /healthz: is the service consuming, and what has it counted."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from ingest.routers._deps import StatsDep, StorageDep, WorkersDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(stats: StatsDep, storage: StorageDep, response: Response, workers: WorkersDep) -> dict[str, Any]:
    """200 while the MQTT consumer runs and is connected to the broker, batches find a place (InfluxDB,
    or the spool) and every worker process runs; 503, saying why, otherwise."""
    problems = stats.problems() + (storage.problems() if storage is not None else [])
    problems += workers.problems() if workers is not None else []
    if problems:
        response.status_code = 503
    body: dict[str, Any] = {
        "status": "unavailable" if problems else "ok",
        "mqtt_connected": stats.mqtt_connected,
        "consumer_running": stats.consumer_running,
        "problems": problems,
        "counters": dict(stats.counters),
        "spool": storage.snapshot() if storage is not None else None,
    }
    if workers is not None:
        body["workers"] = workers.status()  # worker 1 (this process) first
    return body
