"""GET /healthz: is the service consuming, and what has it counted."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from ingest._consumer import Stats
from ingest._metrics import whole
from ingest._storage import Storage
from ingest._workers import WorkerPool
from ingest.routers._deps import StatsDep, StorageDep, WorkersDep
from ingest.routers._models import HealthOut, SpoolOut, WorkerOut

router = APIRouter(tags=["health"])


def health_of(stats: Stats, storage: Storage | None, workers: WorkerPool | None) -> HealthOut:
    """The whole service's health: with --workers N, the counters are sums over every worker (each
    worker's part in its row), and every worker's problems count."""
    service = whole(stats, storage, workers)
    problems = stats.problems() + (storage.problems() if storage is not None else [])
    problems += workers.problems() if workers is not None else []
    return HealthOut(
        status="unavailable" if problems else "ok",
        mqtt_connected=service.mqtt_connected,
        consumer_running=service.consumer_running,
        problems=problems,
        counters=dict(service.counters),
        spool=SpoolOut(**service.spool) if service.spool is not None else None,
        workers=[WorkerOut(**row) for row in service.workers] if service.workers is not None else None,
    )


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "not consuming; `problems` says why"}},
)
async def healthz(stats: StatsDep, storage: StorageDep, response: Response, workers: WorkersDep) -> dict[str, Any]:
    """200 while the MQTT consumer runs and is connected to the broker, batches find a place (InfluxDB,
    or the spool) and every worker process runs; 503, saying why, otherwise."""
    body = health_of(stats, storage, workers)
    if body.problems:
        response.status_code = 503
    return body.model_dump(exclude={"workers"} if workers is None else None)
