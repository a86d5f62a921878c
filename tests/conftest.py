"""Session fixtures: the real stack (Mosquitto, InfluxDB) and the real ingest service, on free ports."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import FIELDLINK, IngestInfo, StackInfo, fieldlink, wait_until
from tools._process import free_port, stop_pid


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    home = tmp_path_factory.mktemp("fieldlink-home")
    mqtt_port, influx_port, rpc_port = free_port(), free_port(), free_port()
    result = fieldlink(
        home,
        "stack",
        "up",
        "--mqtt-port",
        str(mqtt_port),
        "--influx-port",
        str(influx_port),
        "--influx-rpc-port",
        str(rpc_port),
    )
    assert result.returncode == 0, result.stderr
    try:
        yield StackInfo(home, mqtt_port, influx_port)
    finally:
        fieldlink(home, "stack", "down")


@pytest.fixture(scope="session")
def ingest(stack: StackInfo) -> Iterator[IngestInfo]:
    port = free_port()
    log = stack.home / "logs" / "ingest-test.log"
    env = dict(os.environ, FIELDLINK_HOME=str(stack.home))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*FIELDLINK, "ingest", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    info = IngestInfo(f"http://127.0.0.1:{port}", log, process.pid)

    def connected() -> bool:
        try:
            return bool(info.health()["mqtt_connected"])
        except httpx.HTTPError:
            assert process.poll() is None, log.read_text()
            return False

    try:
        wait_until(connected, timeout=30)
        yield info
    finally:
        stop_pid(process.pid)
        process.wait()


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    """A short id unique to the test, for device names that keep tests apart in one database."""
    import hashlib

    return hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
