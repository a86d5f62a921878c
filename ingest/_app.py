"""The app factory and its lifespan, which owns the registry, the database writer and the MQTT consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ingest._consumer import Consumer, Stats, supervise
from ingest._registry import Registry
from ingest._settings import Settings
from ingest._writer import make_writer
from ingest.routers import admin, devices, health

log = logging.getLogger("fieldlink.ingest")


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry(settings.registry_path)
        writer = make_writer(settings)
        stats = Stats()
        consumer = Consumer(settings, registry, writer, stats)
        app.state.settings = settings
        app.state.registry = registry
        app.state.stats = stats
        # Restarted whenever it ends; /healthz answers 503 while it is down or not connected.
        task = asyncio.create_task(supervise(consumer, stats), name="mqtt-consumer")
        log.info("ingest service up: InfluxDB %s API at %s", settings.influx_api, settings.influx_url)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await writer.close()
            registry.close()

    app = FastAPI(title="fieldlink ingest", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    # Only the configured host names are served: a page on another site cannot reach the API by
    # pointing its own name at 127.0.0.1 (DNS rebinding).
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.include_router(health.router)
    app.include_router(devices.router)
    if settings.admin_api:
        app.include_router(admin.router)
    return app
