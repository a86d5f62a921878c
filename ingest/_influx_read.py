"""Reading stored points back with InfluxQL over the v1 `/query` endpoint, which InfluxDB 1.x, 2.x
(its v1 compatibility API) and 3.x all answer: the API's latest readings and the dashboard's charts.

Times are the devices' own (the points' timestamps, docs/schema.md), in epoch milliseconds. Device
and sensor names in queries passed `valid_id` (a-z 0-9 - _ .) before they get here, so they need no
escaping; they are quoted all the same.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from ingest._errors import StorageError
from ingest._settings import Settings
from shared.protocol import valid_id

log = logging.getLogger("fieldlink.ingest")


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxReader:
    """InfluxQL queries with the read credentials of the settings. Raises StorageError when the
    database cannot be asked or refuses."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.influx_url.rstrip("/") + "/query"
        self._database = settings.influx_query_database or (
            settings.influx_database if settings.influx_api == "v1" else settings.influx_bucket
        )
        headers: dict[str, str] = {}
        auth: tuple[str, str] | None = None
        if settings.influx_read_username is not None:
            password = settings.influx_read_password.get_secret_value() if settings.influx_read_password else ""
            auth = (settings.influx_read_username, password)
        else:
            token = settings.influx_read_token or settings.influx_token
            if token is not None:
                headers["Authorization"] = f"Token {token.get_secret_value()}"
        self._client = httpx.AsyncClient(headers=headers, auth=auth, timeout=settings.influx_timeout_s)

    @classmethod
    def for_settings(cls, settings: Settings) -> InfluxReader | None:
        """A reader, or None when the settings give no way to read (no read user, no token)."""
        token = settings.influx_read_token or settings.influx_token
        if settings.influx_read_username is None and token is None:
            return None
        return cls(settings)

    async def close(self) -> None:
        await self._client.aclose()

    async def query(self, q: str) -> list[dict[str, Any]]:
        """The series of the statement's result (times in epoch ms)."""
        try:
            response = await self._client.post(self._url, data={"db": self._database, "q": q, "epoch": "ms"})
        except httpx.HTTPError as exc:
            raise StorageError(f"InfluxDB cannot be asked: {exc}") from exc
        if response.status_code != 200:
            raise StorageError(f"InfluxDB answers HTTP {response.status_code}: {response.text[:200].strip()}")
        try:
            result = response.json()["results"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise StorageError(f"InfluxDB's answer is not a query result: {response.text[:200]}") from exc
        if "error" in result:
            raise StorageError(f"InfluxDB refuses the query: {str(result['error'])[:200]}")
        return list(result.get("series", []))

    async def latest(self, device_id: str) -> dict[str, tuple[int, float]]:
        """Each sensor's newest stored reading of the device: {sensor: (time_ms, value)}."""
        if not valid_id(device_id):
            return {}
        series = await self.query(
            f'SELECT last("value") FROM "readings" WHERE "device" = {_literal(device_id)} GROUP BY "sensor"'
        )
        found: dict[str, tuple[int, float]] = {}
        for s in series:
            sensor = s.get("tags", {}).get("sensor")
            for time_ms, value in s.get("values", []):
                if sensor and value is not None:
                    found[sensor] = (int(time_ms), float(value))
        return found

    async def series(
        self, device_id: str, since_ms: int, until_ms: int, interval_ms: int
    ) -> dict[str, list[tuple[int, float]]]:
        """The device's readings per sensor between the two times, as the mean of each interval."""
        if not valid_id(device_id):
            return {}
        series = await self.query(
            f'SELECT mean("value") FROM "readings" WHERE "device" = {_literal(device_id)} '
            f"AND time >= {int(since_ms)}ms AND time <= {int(until_ms)}ms "
            f'GROUP BY "sensor", time({int(interval_ms)}ms) fill(none)'
        )
        found: dict[str, list[tuple[int, float]]] = {}
        for s in series:
            sensor = s.get("tags", {}).get("sensor")
            if not sensor:
                continue
            found[sensor] = [(int(t), float(v)) for t, v in s.get("values", []) if v is not None]
        return found
