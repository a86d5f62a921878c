"""Session fixtures: the real stack (Mosquitto, InfluxDB) and the real ingest service, on free ports."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import IngestInfo, StackInfo, fieldlink, start_ingest
from tools._home import Home
from tools._process import free_port, pid_alive, stop_pid


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
    log = stack.home / "logs" / "ingest-test.log"
    process, url = start_ingest(dict(os.environ, FIELDLINK_HOME=str(stack.home)), log)
    try:
        yield IngestInfo(url, log, process.pid)
    finally:
        stop_pid(process.pid)
        process.wait()


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[StackInfo]:
    """A stack of the test's own, for tests that stop or kill its parts, or whose messages no other
    service may see."""
    home = tmp_path / "home"
    ports = [str(free_port()) for _ in range(3)]
    result = fieldlink(
        home, "stack", "up", "--mqtt-port", ports[0], "--influx-port", ports[1], "--influx-rpc-port", ports[2]
    )
    assert result.returncode == 0, result.stderr
    try:
        yield StackInfo(home, int(ports[0]), int(ports[1]))
    finally:
        for pid in Home(home).load_state().pids.values():  # a part a test left stopped must hear SIGTERM
            if pid_alive(pid):
                os.kill(pid, signal.SIGCONT)
        fieldlink(home, "stack", "down")


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    """A short id unique to the test, for device names that keep tests apart in one database."""
    import hashlib

    return hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
