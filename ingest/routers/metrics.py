"""GET /metrics: Prometheus text (a read token when one is set: it names devices)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import generate_latest

from ingest._metrics import ServiceMetrics
from ingest.routers._deps import ReadersOnly

# The classic text format, which every Prometheus (and promtool) reads; every name here is a legacy one.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(tags=["metrics"], dependencies=ReadersOnly)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}},
)
async def metrics(request: Request) -> Response:
    """The service's counters, gauges and write-latency histogram (docs/metrics.md). On the event loop,
    not in a thread: the workers' tally changes on the loop, and a read beside a change could see a
    counter go back."""
    service: ServiceMetrics = request.app.state.metrics
    return Response(generate_latest(service.registry), media_type=CONTENT_TYPE)
