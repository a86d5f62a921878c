"""The InfluxDB v2 write path (ingest._writer.InfluxWriter) against a real server that implements /api/v2/write:
VictoriaMetrics from Debian (InfluxDB 2.x is not packaged here)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest import Settings, StorageError
from ingest._writer import InfluxWriter, to_text
from tests.support import StackInfo, extra_ingest_identity, run_node, start_ingest, wait_until
from tools._process import free_port, stop_pid, wait_port


class Victoria:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def export(self, device: str) -> list[tuple[int, str, float]]:
        """Every stored reading of a device as (time_ms, sensor, value), sorted."""
        response = httpx.post(
            f"{self.url}/api/v1/export", data={"match[]": f'readings_value{{device="{device}"}}'}, timeout=10
        )
        response.raise_for_status()
        rows: list[tuple[int, str, float]] = []
        for line in response.text.splitlines():
            series = json.loads(line)
            sensor = series["metric"]["sensor"]
            rows += [(t, sensor, v) for t, v in zip(series["timestamps"], series["values"], strict=True)]
        return sorted(rows)


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victoria]:
    binary = shutil.which("victoria-metrics")
    assert binary, "victoria-metrics is missing; `make test` installs it (tools/setup/system-packages.sh --tests)"
    port = free_port()
    data = tmp_path_factory.mktemp("victoria")
    with (data / "log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data / 'db'}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_port(port, 20), (data / "log").read_text()
        yield Victoria(port)
    finally:
        stop_pid(process.pid)


def _settings(url: str) -> Settings:
    return Settings(mqtt_tls=False, influx_api="v2", influx_url=url, influx_token="dev-token")  # type: ignore[arg-type]


def test_v2_writer_stores_exact_points(victoria: Victoria) -> None:
    readings = [
        (1795311729979, "temperature", 21.37),
        (1795311730979, "temperature", -3.5),
        (1795311729979, "humidity", 44.0),
    ]

    async def write() -> None:
        writer = InfluxWriter(_settings(victoria.url))
        try:
            await writer.write(to_text("v2-node", readings).encode())
        finally:
            await writer.close()

    asyncio.run(write())
    assert wait_until(lambda: victoria.export("v2-node")) == sorted(readings)


def test_v2_writer_without_a_server_raises_storage_error() -> None:
    async def write() -> None:
        writer = InfluxWriter(_settings(f"http://127.0.0.1:{free_port()}"))
        try:
            await writer.write(to_text("nobody", [(1, "t", 1.0)]).encode())
        finally:
            await writer.close()

    with pytest.raises(StorageError, match="InfluxDB unreachable"):
        asyncio.run(write())


def test_service_with_v2_api_stores_firmware_readings(
    stack: StackInfo, victoria: Victoria, uid: str, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        FIELDLINK_HOME=str(stack.home),
        FIELDLINK_INFLUX_API="v2",
        FIELDLINK_INFLUX_URL=victoria.url,
        FIELDLINK_INFLUX_TOKEN="dev-token",
        # An identity of its own: on the session fixture's certificate the two services would take
        # each other's session (the broker ties a client id to its certificate).
        **extra_ingest_identity(stack, f"v2-{uid}"),
    )
    service, _ = start_ingest(env, tmp_path / "ingest.log")
    try:
        device = f"v2-{uid}"
        bundle = stack.add_device(device, sample_interval_ms=50, batch_max_readings=4, batch_max_age_ms=5000)
        csv = tmp_path / "raw.csv"
        csv.write_text("temp\n10.5\n11.25\n12.0\n13.75\n14.5\n")
        started = int(time.time() * 1000)
        assert run_node(bundle, replay=csv).returncode == 0
        wait_until(lambda: len(victoria.export(device)) >= 5)
        stored = victoria.export(device)
        assert [v for _, _, v in stored] == [10.5, 11.25, 12.0, 13.75, 14.5]
        assert all(started - 1000 <= t <= int(time.time() * 1000) for t, _, _ in stored)
    finally:
        stop_pid(service.pid)
