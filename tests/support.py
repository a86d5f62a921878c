"""Helpers for tests that talk to the real broker, database, service and firmware."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as paho

from tools._devices import add_device
from tools._home import Home
from tools._simulate import node_command, node_env

T = TypeVar("T")
FIELDLINK = [sys.executable, "-m", "tools"]


def fieldlink(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real `fieldlink` command with this state folder."""
    env = dict(os.environ, FIELDLINK_HOME=str(home))
    return subprocess.run([*FIELDLINK, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def wait_until(probe: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; fail the test with its last value otherwise."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)
        value = probe()
    return value


@dataclass
class StackInfo:
    home: Path
    mqtt_port: int
    influx_port: int

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.influx_port}"

    @property
    def influx_admin(self) -> tuple[str, str]:
        """The local InfluxDB's admin login (InfluxDB runs with authentication), for httpx's `auth`."""
        admin = json.loads((self.home / "influxdb" / "credentials.json").read_text())["admin"]
        return admin["username"], admin["password"]

    def query(self, q: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.influx_url}/query",
            params={"db": "fieldlink", "q": q, "epoch": "ms"},
            auth=self.influx_admin,
            timeout=10,
        )
        response.raise_for_status()
        result = response.json()["results"][0]
        if "error" in result:
            raise AssertionError(result["error"])
        return list(result.get("series", []))

    def points(self, device_id: str) -> list[tuple[int, str, float]]:
        """Every stored reading of a device as (time_ms, sensor, value), sorted."""
        rows: list[tuple[int, str, float]] = []
        for series in self.query(f'SELECT "value", "sensor" FROM readings WHERE "device" = \'{device_id}\''):
            rows += [(t, sensor, value) for t, value, sensor in series["values"]]
        return sorted(rows)

    def wait_points(self, device_id: str, count: int, timeout: float = 20.0) -> list[tuple[int, str, float]]:
        """The device's points once there are at least `count` of them."""

        def enough() -> list[tuple[int, str, float]] | None:
            points = self.points(device_id)
            return points if len(points) >= count else None

        return wait_until(enough, timeout)

    def add_device(self, device_id: str, **options: int) -> Path:
        _, bundle = add_device(Home(self.home), device_id, **options)
        return bundle


@dataclass
class IngestInfo:
    url: str
    log: Path
    pid: int

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/healthz", timeout=5).json()
        return result

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self.health()["counters"]
        return counters


def start_ingest(env: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """The real `fieldlink ingest` (with `args`, e.g. --workers 2) on a free port, once it is connected
    to the broker: (process, URL). Fails with the service's log if it exits instead."""
    from tools._process import free_port

    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*FIELDLINK, "ingest", "--port", str(port), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def connected() -> bool:
        try:
            return bool(httpx.get(f"{url}/healthz").json()["mqtt_connected"])
        except httpx.HTTPError:
            assert process.poll() is None, log.read_text()
            return False

    wait_until(connected, timeout=30)
    return process, url


def run_node(bundle: Path, timeout: float = 60, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run the real firmware under MicroPython until it stops by itself."""
    return subprocess.run(
        node_command(bundle, **options),
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_node(bundle: Path, log: Path, **options: Any) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(node_command(bundle, **options), env=node_env(), stdout=out, stderr=subprocess.STDOUT)


def trace_readings(trace: Path) -> list[tuple[int, str, float]]:
    """What the firmware produced: every non-null reading of every batch it traced. A batch made
    before the node's clock was known (t0 = -1 - ms since its boot) gets its time from its boot's
    anchor line (`{"anchor": epoch, "boot_ms": ...}`, traced once the clock is known), as the node
    gives it when it sends it; one whose boot never learned the time is left out (the node refuses it,
    counted `unsynced`)."""
    from shared.decode import decode_batch

    lines = trace.read_bytes().splitlines()
    anchors = {}
    for line in lines:
        if line.startswith(b'{"anchor":'):
            obj = json.loads(line)
            anchors[obj["anchor"]] = obj["boot_ms"]
    rows: list[tuple[int, str, float]] = []
    for line in lines:
        if line.startswith(b'{"anchor":'):
            continue
        batch = json.loads(line)
        if batch["t0"] < 0:
            boot_ms = anchors.get(batch["seq"] >> 20)
            if boot_ms is None:
                continue
            batch["t0"] = boot_ms - 1 - batch["t0"]
            line = json.dumps(batch, separators=(",", ":")).encode()
        _, readings = decode_batch(line)
        rows += [(t, s, v) for t, s, v in readings if v is not None]
    return sorted(rows)


def mqtt_client(port: int, ca: Path, cert: Path, key: Path, client_id: str) -> paho.Client:
    """A connected paho client with a client certificate (raises if the broker refuses the TLS handshake)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    client.tls_set_context(context)
    connected = threading.Event()
    codes: list[Any] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        codes.append(reason)
        connected.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not connected.wait(10) or codes[0].is_failure:
        client.loop_stop()
        raise ConnectionError(f"MQTT connect failed: {codes}")
    return client


def publish(client: paho.Client, topic: str, payload: bytes) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    assert info.is_published()


def batch(seq: int, t0: int, sensors: list[str], rows: list[list[Any]]) -> bytes:
    return json.dumps({"v": 1, "seq": seq, "t0": t0, "s": sensors, "r": rows}).encode()


class LinkCutter:
    """A TCP relay between a node and the broker that a test can cut and restore, or freeze and thaw
    (connections stay open but every byte is lost, as when a radio's uplink dies): the fake radio."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port: int = self._server.getsockname()[1]
        self._up = True
        self.frozen = False
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open += [client, upstream]
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.frozen:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._up = False
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def restore(self) -> None:
        self._up = True

    def close(self) -> None:
        self.cut()
        self._server.close()


def extra_ingest_identity(stack: StackInfo, name: str) -> dict[str, str]:
    """Settings for a second ingest service with an identity of its own (certificate CN
    `fieldlink:ingest-<name>`, the ingest ACL, so its own persistent session): the broker ties a
    client id to its certificate, so a second service on the first one's certificate would take over
    that one's session. Valid until the next `stack up` rewrites the ACL."""
    from ingest import CertificateAuthority
    from shared.identities import INGEST_IDENTITY
    from tools._home import Home
    from tools._stack import ingest_acl

    home = Home(stack.home)
    identity = f"{INGEST_IDENTITY}-{name}"
    cert, key = home.pki / f"ingest-{name}.pem", home.pki / f"ingest-{name}.key"
    CertificateAuthority(home.pki).issue(identity, cert, key)
    acl = home.root / "mosquitto" / "acl"
    with acl.open("a") as f:
        f.write("\n" + ingest_acl(identity))
    os.kill(int(home.broker_pid_path.read_text()), signal.SIGHUP)  # the broker re-reads its ACL
    return {"FIELDLINK_MQTT_CERT": str(cert), "FIELDLINK_MQTT_KEY": str(key), "FIELDLINK_MQTT_CLIENT_ID": identity}
