"""The app factory and its lifespan, which owns the registry, the database writer, the spool and the MQTT
consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ingest._consumer import Consumer, Stats, supervise
from ingest._influx_read import InfluxReader
from ingest._metrics import ServiceCollector, ServiceMetrics
from ingest._registry import Registry
from ingest._settings import Settings
from ingest._spool import Spool
from ingest._storage import Storage
from ingest._writer import make_writer
from ingest.routers import admin, dashboard, devices, health, metrics

log = logging.getLogger("fieldlink.ingest")


def open_spool(settings: Settings) -> Spool | None:
    """The spool the settings name (None when it is off); SpoolError if it cannot be used."""
    if settings.spool_max_bytes == 0:
        return None
    spool = Spool(settings.spool_path, settings.spool_max_bytes)
    found = spool.recovery
    if found.torn_records:
        log.warning(
            "spool: cut off %d torn record(s) (%d bytes), the end of a write a crash interrupted; "
            "the records before them are kept (and their messages were never acknowledged)",
            found.torn_records,
            found.torn_bytes,
        )
    if found.records:
        log.info("spool: %d records (%d bytes) from before the start are written back", found.records, found.bytes)
    return spool


def create_app(settings: Settings, spool: Spool | None = None) -> FastAPI:
    """The service. `spool` is one the caller opened already (to report a folder in use before the
    server starts); otherwise the lifespan opens the one the settings name."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry(settings.registry_path)
        writer = app.state.metrics.timed(make_writer(settings))
        stats = Stats()
        own_spool = spool or open_spool(settings)
        if own_spool is not None:
            stats.counters["spool_torn_records"] += own_spool.recovery.torn_records
        storage = Storage.for_settings(settings, writer, own_spool, stats.counters, registry)
        consumer = Consumer(settings, registry, writer, stats, storage)
        app.state.settings = settings
        app.state.registry = registry
        app.state.stats = stats
        app.state.storage = storage
        reader = InfluxReader.for_settings(settings)
        app.state.reader = reader
        # Restarted whenever it ends; /healthz answers 503 while it is down or not connected.
        task = asyncio.create_task(supervise(consumer, stats), name="mqtt-consumer")
        # Writes the spool back: what an earlier run left at once, what an outage leaves when it ends.
        replay = asyncio.create_task(storage.replay(), name="spool-replay")
        log.info("ingest service up: InfluxDB %s API at %s", settings.influx_api, settings.influx_url)
        try:
            yield
        finally:
            # The consumer first: on a clean stop it stores or spools what it holds and acknowledges it.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            replay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replay
            await writer.close()
            if reader is not None:
                await reader.close()
            if own_spool is not None:
                own_spool.close()
            registry.close()

    # /docs is served with Swagger UI's files from this service (routers/dashboard.py), not a CDN.
    app = FastAPI(title="fieldlink ingest", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = ServiceMetrics()
    state = app.state
    app.state.metrics.watch(
        ServiceCollector(
            stats=lambda: getattr(state, "stats", None),
            registry=lambda: getattr(state, "registry", None),
            storage=lambda: getattr(state, "storage", None),
            workers=lambda: getattr(state, "workers", None),
        )
    )
    # Only the configured host names are served: a page on another site cannot reach the API by
    # pointing its own name at 127.0.0.1 (DNS rebinding).
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.include_router(health.router)
    app.include_router(devices.router)
    app.include_router(metrics.router)
    if settings.admin_api:
        app.include_router(admin.router)
    dashboard.mount(app)
    return app
