"""Dependencies of the routers, as Annotated aliases: state from the app, and the two bearer tokens."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from ingest._consumer import Stats
from ingest._registry import Registry
from ingest._settings import Settings
from ingest._storage import Storage
from ingest._workers import WorkerPool

_bearer = HTTPBearer(auto_error=False, description="FIELDLINK_ADMIN_TOKEN, or FIELDLINK_READ_TOKEN for reading")


def _stats(request: Request) -> Stats:
    stats: Stats = request.app.state.stats
    return stats


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _storage(request: Request) -> Storage | None:
    storage: Storage | None = getattr(request.app.state, "storage", None)
    return storage


def _workers(request: Request) -> WorkerPool | None:
    workers: WorkerPool | None = getattr(request.app.state, "workers", None)  # with --workers N
    return workers


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StatsDep = Annotated[Stats, Depends(_stats)]
RegistryDep = Annotated[Registry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StorageDep = Annotated[Storage | None, Depends(_storage)]
WorkersDep = Annotated[WorkerPool | None, Depends(_workers)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _matches(credentials: HTTPAuthorizationCredentials | None, *tokens: SecretStr | None) -> bool:
    if credentials is None:
        return False
    given = credentials.credentials.encode()
    # Compare with every token, always: the time taken says nothing about which one was close.
    results = [secrets.compare_digest(given, t.get_secret_value().encode()) for t in tokens if t is not None]
    return any(results)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def require_admin(settings: SettingsDep, credentials: BearerDep) -> None:
    if settings.admin_token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the admin API is closed: FIELDLINK_ADMIN_TOKEN is not set")
    if credentials is None:
        raise _unauthorized("this endpoint needs an admin bearer token")
    if not _matches(credentials, settings.admin_token):
        raise _unauthorized("wrong admin token")


def require_reader(settings: SettingsDep, credentials: BearerDep) -> None:
    if settings.read_token is None:
        return
    if credentials is None:
        raise _unauthorized("this endpoint needs a read (or admin) bearer token")
    if not _matches(credentials, settings.read_token, settings.admin_token):
        raise _unauthorized("wrong token")


AdminOnly = [Depends(require_admin)]
ReadersOnly = [Depends(require_reader)]
