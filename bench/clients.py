"""Issue 9 item 2: which HTTP client should carry the service's writes? Each candidate writes identical
5,000-point batches (the service's line protocol, 60 readings per message), one batch at a time as the
service's writer task does, to both write paths: InfluxDB 1.6.7's /write (v1) and VictoriaMetrics'
/api/v2/write (v2, the server the tests use for it). Every point is then counted on the server.

Candidates: httpx's AsyncClient (the service's v1 writer until this comparison), `http.client` in a
thread (the service's writer since: `ingest._writer.InfluxWriter`), and influxdb-client (the service's
v2 writer until then; its write API exists only for v2, so on v1 its transport, urllib3, is measured in
a thread instead).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import urllib3

from bench.env import Bench, BenchError
from bench.influx import Target, batches, time_writes
from bench.payloads import span_ms
from ingest._settings import Settings
from ingest._writer import InfluxWriter
from tools._process import free_port, stop_pid, wait_port

V2_TOKEN = "bench-token"
V2_ORG = "fieldlink"
V2_BUCKET = "fieldlink"

Write = Callable[[bytes], Awaitable[None]]


@contextmanager
def victoria(root: Path) -> Iterator[str]:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        raise BenchError("victoria-metrics is not installed (tools/setup/system-packages.sh --tests installs it)")
    port = free_port()
    data = root / "victoria"
    data.mkdir(exist_ok=True)
    with (data / "log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data / 'db'}", "-retentionPeriod=100y"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        if not wait_port(port, 30):
            raise BenchError(f"victoria-metrics did not start: {(data / 'log').read_text()[-500:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_pid(process.pid)


def victoria_count(url: str, start_ms: int, end_ms: int) -> int:
    httpx.get(f"{url}/internal/force_flush", timeout=30)
    response = httpx.post(
        f"{url}/api/v1/export",
        data={"match[]": "readings_value", "start": str(start_ms / 1000), "end": str((end_ms - 1) / 1000)},
        timeout=120,
    )
    response.raise_for_status()
    return sum(len(json.loads(line)["timestamps"]) for line in response.text.splitlines() if line)


class Urllib3Writer:
    """influxdb-client's transport (a urllib3 pool), posting to v1's /write."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.pool = urllib3.HTTPConnectionPool(target.host, target.port, maxsize=1, timeout=30.0)

    def write(self, body: bytes) -> None:
        response = self.pool.urlopen("POST", self.target.path, body=body, headers=self.target.headers)
        if response.status != self.target.ok:
            raise RuntimeError(f"HTTP {response.status}: {response.data[:200]!r}")


class HttpxWriter:
    """httpx's AsyncClient, one client kept for the writer's life (its pool keeps the connection
    alive), as the service's v1 writer had it."""

    def __init__(self, target: Target) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"http://{target.host}:{target.port}",
            timeout=30,
            headers=target.headers,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=60.0),
        )
        self.target = target

    async def write(self, body: bytes) -> None:
        response = await self.client.post(self.target.path, content=body)
        if response.status_code != self.target.ok:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

    async def close(self) -> None:
        await self.client.aclose()


class InfluxClientWriter:
    """influxdb-client's synchronous write API, in a thread, as the service's v2 writer had it."""

    def __init__(self, url: str) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.client = InfluxDBClient(url=url, token=V2_TOKEN, org=V2_ORG, timeout=30_000)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def _write(self, body: bytes) -> None:
        self.api.write(bucket=V2_BUCKET, org=V2_ORG, record=body, write_precision="ms")  # type: ignore[arg-type]  # a str constant in the stubs

    async def write(self, body: bytes) -> None:
        await asyncio.to_thread(self._write, body)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def _candidates(bench: Bench, v2_url: str) -> dict[str, dict[str, tuple[Write, Callable[[], Awaitable[None]]]]]:
    """{path: {client: (write, close)}}; made inside the running event loop."""
    user, password = bench.writer_auth()
    v1_settings = Settings(
        mqtt_tls=False,
        influx_api="v1",
        influx_url=bench.influx_url,
        influx_database=bench.state.database,
        influx_username=user,
        influx_password=password,  # type: ignore[arg-type]
    )
    v2_settings = Settings(mqtt_tls=False, influx_api="v2", influx_url=v2_url, influx_token=V2_TOKEN)  # type: ignore[arg-type]
    v1_target = Target.v1(int(bench.state.influx_port), bench.state.database, (user, password))
    v2_port = int(v2_url.rsplit(":", 1)[1])
    v2_target = Target.v2(v2_port, V2_ORG, V2_BUCKET, V2_TOKEN)

    async def nothing() -> None:
        return None

    httpx_v1 = HttpxWriter(v1_target)
    service_v1 = InfluxWriter(v1_settings)
    urllib_v1 = Urllib3Writer(v1_target)
    httpx_v2 = HttpxWriter(v2_target)
    service_v2 = InfluxWriter(v2_settings)
    client_v2 = InfluxClientWriter(v2_url)

    async def urllib_v1_write(body: bytes) -> None:
        await asyncio.to_thread(urllib_v1.write, body)

    return {
        "v1": {
            "httpx AsyncClient": (httpx_v1.write, httpx_v1.close),
            "http.client in a thread (the service's writer)": (service_v1.write, service_v1.close),
            "urllib3 in a thread (influxdb-client's transport)": (urllib_v1_write, nothing),
        },
        "v2": {
            "httpx AsyncClient": (httpx_v2.write, httpx_v2.close),
            "http.client in a thread (the service's writer)": (service_v2.write, service_v2.close),
            "influxdb-client write API": (client_v2.write, client_v2.close),
        },
    }


# (batch points, readings per message, batches per round relative to the 5,000-point batches): the
# issue's 5,000-point batches, and the 100-point batches a window of 100 messages of 1 reading makes.
SIZES = ((5000, 60, 1), (100, 1, 10))


def compare(bench: Bench, rounds: int, batches_per_round: int) -> dict[str, Any]:
    """Each client writes `batches_per_round` batches in each of `rounds` rounds, the clients taking
    turns; per client the median over rounds of its median time per batch, its CPU per batch, and the
    points counted on the server against those written. For each batch size of SIZES."""
    with victoria(bench.root) as v2_url:
        return {
            str(size): asyncio.run(_compare(bench, v2_url, rounds, batches_per_round * more, size, shape))
            for size, shape, more in SIZES
        }


async def _compare(
    bench: Bench, v2_url: str, rounds: int, batches_per_round: int, size: int, shape: int
) -> dict[str, Any]:
    devices = [d["id"] for d in bench.devices]
    messages = max(1, (batches_per_round * rounds * size) // (shape * len(devices)) + 1)
    candidates = _candidates(bench, v2_url)
    results: dict[str, Any] = {"batch_points": size, "readings_per_message": shape}
    for path, clients in candidates.items():
        work: dict[str, tuple[Any, list[bytes]]] = {}
        for name in clients:
            window = bench.window(messages * span_ms(shape))
            bodies = batches(devices, messages, shape, window.start_ms, size)
            work[name] = (window, bodies[: rounds * batches_per_round])
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
        # One batch each first: connections open and code paths warm before timing.
        warm = bench.window(span_ms(shape))
        warm_body = batches(devices[:1], 1, shape, warm.start_ms, size)[0]
        for write, _ in clients.values():
            await write(warm_body)
        for r in range(rounds):
            for name, (write, _) in clients.items():
                bodies = work[name][1][r * batches_per_round : (r + 1) * batches_per_round]
                runs[name].append(await time_writes(write, bodies))
        for _, close in clients.values():
            await close()
        results[path] = {}
        for name, (window, bodies) in work.items():
            written = sum(body.count(b"\n") + 1 for body in bodies)
            if path == "v1":
                counted = bench.count(window.start_ms, window.end_ms)
            else:
                counted = _wait_victoria(v2_url, window.start_ms, window.end_ms, written)
            results[path][name] = {
                "ms_per_batch": _median([x["ms_per_batch_median"] for x in runs[name]]),
                "cpu_ms_per_batch": _median([x["cpu_ms_per_batch"] for x in runs[name]]),
                "points_per_s": _median([x["points_per_s"] for x in runs[name]]),
                "rounds": runs[name],
                "written": written,
                "counted": counted,
                "correct": counted == written,
                "check": {"expected": written, "counted": counted, "ok": counted == written},
            }
    return results


def _wait_victoria(url: str, start_ms: int, end_ms: int, expect: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        found = victoria_count(url, start_ms, end_ms)
        if found >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
