"""Writing points to InfluxDB: the v2 write API (`/api/v2/write`) or the v1 `/write` endpoint.

Schema (docs/schema.md): measurement `readings`, tags `device` and `sensor`, field `value` (float),
timestamp = the device's own time in milliseconds. A redelivered batch writes the same points again,
which InfluxDB treats as an overwrite, so at-least-once delivery stores each reading once.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import threading
from base64 import b64encode
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from ingest._errors import RejectedMessage, SettingsError, StorageError
from ingest._settings import Settings

MEASUREMENT = "readings"
HEALTH_MEASUREMENT = "health"
_DROPPED = re.compile(r"dropped=(\d+)")


def to_text(device_id: str, readings: Iterable[tuple[int, str, float]]) -> str:
    """Line protocol for (timestamp_ms, sensor, value) readings of one device: one line each, joined by
    newlines, in one string (a batch joins these strings once and encodes the result once).

    Device and sensor ids passed `valid_id` (a-z, 0-9, '-', '_', '.'), so tags need no escaping;
    `repr` of a finite float is its shortest exact form.
    """
    prefix = f"{MEASUREMENT},device={device_id},sensor="
    return "\n".join(
        [f"{prefix}{sensor} value={float(value)!r} {timestamp_ms}" for timestamp_ms, sensor, value in readings]
    )


def health_text(device_id: str, report: dict[str, Any], time_ms: int) -> str:
    """One line of the `health` measurement for a device's status (docs/schema.md): `online`, its
    counters and health numbers as integers, its health words as strings. Every name and word passed
    shared.decode's checks (ids, known words, a version of a-z 0-9 . - _), so nothing needs escaping;
    a counter cannot take a health field's name, so each field keeps one type."""
    fields = ["online=" + ("true" if report["online"] else "false")]
    fields += [f"{name}={int(count)}i" for name, count in sorted(report["counters"].items())]
    for name, value in sorted(report["health"].items()):
        fields.append(f'{name}="{value}"' if isinstance(value, str) else f"{name}={int(value)}i")
    return f"{HEALTH_MEASUREMENT},device={device_id} {','.join(fields)} {time_ms}"


class PointWriter(Protocol):
    async def write(self, body: bytes) -> None:
        """Store the line protocol in `body` (newline-separated points) durably, or raise StorageError
        (retry later) or RejectedMessage (never)."""

    async def close(self) -> None: ...


class InfluxWriter:
    """POST line protocol with `http.client`, in a thread: to `/write` (`influx_api=v1`: InfluxDB
    before 1.8, such as Debian's 1.6.7) or `/api/v2/write` (`v2`: 2.x, 3.x, Cloud, 1.8+). Chosen by
    measurement over httpx and influxdb-client (docs/performance.md, "HTTP clients"): half their CPU
    per batch on both paths, with every point counted on the server.

    Connections are kept alive and reused (a small pool: the writer task and the spool's write-back
    may write at once); a connection the server closed while idle is replaced once, at no cost to
    the batch."""

    def __init__(self, settings: Settings) -> None:
        url = urlsplit(settings.influx_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SettingsError(f"FIELDLINK_INFLUX_URL={settings.influx_url!r} is not an http(s) URL")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._timeout = settings.influx_timeout_s
        prefix = url.path.rstrip("/")
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.influx_api == "v1":
            self._path = f"{prefix}/write?" + urlencode({"db": settings.influx_database, "precision": "ms"})
            if settings.influx_username is not None:
                # Basic auth in a header, never u/p in the URL, where errors and logs would show it.
                password = settings.influx_password.get_secret_value() if settings.influx_password else ""
                login = b64encode(f"{settings.influx_username}:{password}".encode()).decode()
                self._headers["Authorization"] = f"Basic {login}"
        else:
            query = {"org": settings.influx_org, "bucket": settings.influx_bucket, "precision": "ms"}
            self._path = f"{prefix}/api/v2/write?" + urlencode(query)
            token = settings.influx_token.get_secret_value() if settings.influx_token else ""
            self._headers["Authorization"] = f"Token {token}"
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _post(self, body: bytes) -> None:
        for attempt in range(2):
            with self._lock:
                reused = bool(self._idle)
                connection = self._idle.pop() if reused else self._connect()
            try:
                connection.request("POST", self._path, body=body, headers=self._headers)
                response = connection.getresponse()
                text = response.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if reused and attempt == 0:
                    continue  # closed by the server while idle: once more on a new connection
                raise StorageError(f"InfluxDB unreachable: {exc!r}") from exc
            if response.will_close:
                connection.close()
            else:
                with self._lock:
                    self._idle.append(connection)
            if response.status in (200, 204):
                return
            detail = text[:300].decode("utf-8", "replace")
            if response.status in (400, 422):
                # The database judged the points themselves (a field type conflict, beyond the retention
                # policy; 2.x answers 422 for those): retrying cannot help. A partial write stored the
                # others and says how many it dropped.
                dropped = _DROPPED.search(detail) if "partial write" in detail else None
                raise RejectedMessage(
                    "storage_rejected",
                    f"InfluxDB refused the points: {detail}",
                    dropped=int(dropped.group(1)) if dropped else None,
                )
            raise StorageError(f"InfluxDB answered HTTP {response.status}: {detail}")

    async def write(self, body: bytes) -> None:
        await asyncio.to_thread(self._post, body)

    async def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def make_writer(settings: Settings) -> PointWriter:
    return InfluxWriter(settings)
