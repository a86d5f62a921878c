"""Writing points to InfluxDB: the v2 write API through influxdb-client, or the v1 `/write` endpoint.

Schema (docs/schema.md): measurement `readings`, tags `device` and `sensor`, field `value` (float),
timestamp = the device's own time in milliseconds. A redelivered batch writes the same points again,
which InfluxDB treats as an overwrite, so at-least-once delivery stores each reading once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

import httpx
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from ingest._errors import RejectedMessage, StorageError
from ingest._settings import Settings

MEASUREMENT = "readings"
HEALTH_MEASUREMENT = "health"


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


class InfluxV1Writer:
    """InfluxDB 1.x before 1.8 (Debian's 1.6.7) has no v2 API: POST line protocol to /write."""

    def __init__(self, settings: Settings) -> None:
        self._database = settings.influx_database
        # Basic auth in a header, never u/p in the URL, where errors and logs would show the password.
        auth = None
        if settings.influx_username is not None:
            password = settings.influx_password.get_secret_value() if settings.influx_password else ""
            auth = httpx.BasicAuth(settings.influx_username, password)
        # One client for the service's life: its pool keeps the connection to InfluxDB alive between
        # batches (httpx needs `sniffio`, a dependency, not to pay a failed import on every request).
        self._client = httpx.AsyncClient(
            base_url=settings.influx_url,
            timeout=settings.influx_timeout_s,
            auth=auth,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=60.0),
        )
        self._params = httpx.QueryParams({"db": self._database, "precision": "ms"})

    async def write(self, body: bytes) -> None:
        try:
            response = await self._client.post("/write", params=self._params, content=body)
        except httpx.HTTPError as exc:
            raise StorageError(f"InfluxDB unreachable: {exc!r}") from exc
        if response.status_code == 204:
            return
        if response.status_code == 400:
            # The database judged the points themselves (a field type conflict): retrying cannot help.
            raise RejectedMessage("storage_rejected", f"InfluxDB refused the points: {response.text[:300]}")
        raise StorageError(f"InfluxDB answered HTTP {response.status_code}: {response.text[:300]}")

    async def close(self) -> None:
        await self._client.aclose()


class InfluxV2Writer:
    """InfluxDB 2.x, 3.x, Cloud and 1.8+: the v2 write API of influxdb-client, run in a thread."""

    def __init__(self, settings: Settings) -> None:
        token = settings.influx_token.get_secret_value() if settings.influx_token else ""
        self._bucket = settings.influx_bucket
        self._org = settings.influx_org
        self._client = InfluxDBClient(
            url=settings.influx_url,
            token=token,
            org=settings.influx_org,
            timeout=int(settings.influx_timeout_s * 1000),
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def _write(self, body: bytes) -> None:
        try:
            self._api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,  # line protocol as it is: influxdb-client sends bytes unchanged
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # a str constant in the stubs
            )
        except ApiException as exc:
            if exc.status == 400:
                raise RejectedMessage("storage_rejected", f"InfluxDB refused the points: {exc.body}") from exc
            raise StorageError(f"InfluxDB answered HTTP {exc.status}: {exc.body}") from exc
        except Exception as exc:  # urllib3 connection errors and timeouts
            raise StorageError(f"InfluxDB unreachable: {exc!r}") from exc

    async def write(self, body: bytes) -> None:
        await asyncio.to_thread(self._write, body)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def make_writer(settings: Settings) -> PointWriter:
    if settings.influx_api == "v1":
        return InfluxV1Writer(settings)
    return InfluxV2Writer(settings)
