"""Dependencies of the routers, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ingest._consumer import Stats
from ingest._registry import Registry


def _stats(request: Request) -> Stats:
    stats: Stats = request.app.state.stats
    return stats


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


StatsDep = Annotated[Stats, Depends(_stats)]
RegistryDep = Annotated[Registry, Depends(_registry)]
