"""InfluxDB's own ceiling for the points the service stores, and the HTTP clients the writer could use.

The points are the service's own: the generator's messages decoded (`shared.decode`) and turned
into line protocol by the service's `to_text`, joined into batches of 5,000 points, so the database
gets byte for byte what the service would send it.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.payloads import fill_message
from ingest._writer import to_text
from shared.decode import decode_batch_t0

BATCH_POINTS = 5000


def batches(devices: list[str], messages: int, shape: int, base_ms: int, size: int = BATCH_POINTS) -> list[bytes]:
    """The line protocol of `messages` messages of each device, in batches of `size` points."""
    lines: list[str] = []
    for k in range(messages):
        for index, device in enumerate(devices):
            _, _, readings = decode_batch_t0(fill_message(index, k, shape, base_ms))
            lines.append(to_text(device, [(t, s, v) for t, s, v in readings if v is not None]))
    points = "\n".join(lines).split("\n")
    return ["\n".join(points[i : i + size]).encode() for i in range(0, len(points), size)]


@dataclass
class Target:
    """Where and how to POST line protocol: InfluxDB 1.x's /write or the v2 API's /api/v2/write."""

    host: str
    port: int
    path: str  # with its query string
    headers: dict[str, str]
    ok: int = 204

    @classmethod
    def v1(cls, port: int, database: str, auth: tuple[str, str]) -> Target:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        return cls("127.0.0.1", port, f"/write?db={database}&precision=ms", {"Authorization": f"Basic {token}"})

    @classmethod
    def v2(cls, port: int, org: str, bucket: str, token: str) -> Target:
        return cls(
            "127.0.0.1",
            port,
            f"/api/v2/write?org={org}&bucket={bucket}&precision=ms",
            {"Authorization": f"Token {token}"},
        )


class HttpClientWriter:
    """`http.client`, one connection kept alive, reconnecting when the server closed it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._conn: http.client.HTTPConnection | None = None

    def write(self, body: bytes) -> None:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.target.host, self.target.port, timeout=30)
            try:
                self._conn.request("POST", self.target.path, body, self.target.headers)
                response = self._conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
                continue
            if response.status != self.target.ok:
                raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
            return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def ceiling(target: Target, bodies: list[bytes], connections: int) -> dict[str, Any]:
    """Write `bodies` over `connections` connections at once (http.client, one thread each): points per
    second from the first request to the last answer."""
    todo = list(enumerate(bodies))
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        writer = HttpClientWriter(target)
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    _, body = todo.pop(0)
                try:
                    writer.write(body)
                except Exception as exc:
                    errors.append(repr(exc))
                    return
        finally:
            writer.close()

    threads = [threading.Thread(target=work) for _ in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    points = sum(body.count(b"\n") + 1 for body in bodies)
    return {"points": points, "seconds": seconds, "points_per_s": points / seconds, "errors": errors[:3]}


# --- the writer's HTTP client, by measurement ------------------------------------------------------


async def time_writes(write: Callable[[bytes], Any], bodies: list[bytes]) -> dict[str, Any]:
    """Await `write(body)` for each body in turn, as the service's writer task does: wall and CPU
    time per batch (the CPU of this process: the client's own cost, threads included)."""
    walls: list[float] = []
    cpu_start = time.process_time()
    started = time.monotonic()
    for body in bodies:
        t = time.monotonic()
        await write(body)
        walls.append(time.monotonic() - t)
    seconds = time.monotonic() - started
    cpu = time.process_time() - cpu_start
    walls.sort()
    return {
        "batches": len(bodies),
        "ms_per_batch_median": walls[len(walls) // 2] * 1000,
        "cpu_ms_per_batch": cpu / len(bodies) * 1000,
        "points_per_s": sum(body.count(b"\n") + 1 for body in bodies) / seconds,
    }


def in_thread(writer: HttpClientWriter) -> Callable[[bytes], Any]:
    async def write(body: bytes) -> None:
        await asyncio.to_thread(writer.write, body)

    return write
