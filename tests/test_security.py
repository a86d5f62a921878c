"""Who may connect, publish and be stored: the broker's TLS and ACL, and the service's registry check."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from ingest import CertificateAuthority
from tests.support import (
    IngestInfo,
    StackInfo,
    batch,
    mqtt_client,
    publish,
    run_node,
    wait_until,
)
from tools._home import Home


def _device_client(stack: StackInfo, device: str) -> object:
    bundle = stack.home / "devices" / device
    return mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)


def test_certificate_from_another_ca_is_refused(stack: StackInfo, uid: str, workdir: Path) -> None:
    import socket

    rogue = CertificateAuthority(workdir / "rogue")
    rogue.create("rogue CA")
    rogue.issue(f"rogue-{uid}", workdir / "rogue.pem", workdir / "rogue.key")
    context = ssl.create_default_context(cafile=str(Home(stack.home).pki / "ca.pem"))
    context.load_cert_chain(str(workdir / "rogue.pem"), str(workdir / "rogue.key"))
    broker_log = stack.home / "logs" / "mosquitto.log"
    refusals_before = broker_log.read_text().count("certificate verify failed")
    # The broker checks the client certificate during the handshake, sends an alert and closes. On a
    # busy machine the close can overtake the alert (a reset while our bytes are unread), so the client
    # sees either; the broker's own log says which certificate check failed.
    with (
        socket.create_connection(("127.0.0.1", stack.mqtt_port), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError)) as refused,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"\x10\x00")  # TLS 1.3 would report the alert at the first read or write
        tls.recv(1)
    if isinstance(refused.value, ssl.SSLError) and not isinstance(refused.value, ssl.SSLEOFError):
        assert "unknown ca" in str(refused.value)
    wait_until(lambda: broker_log.read_text().count("certificate verify failed") == refusals_before + 1)


def test_firmware_with_a_foreign_certificate_stores_nothing(
    stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path
) -> None:
    device = f"forged-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=50, batch_max_readings=5, batch_max_age_ms=200)
    rogue = CertificateAuthority(workdir / "rogue")
    rogue.create("rogue CA")
    der = rogue.credentials(device).der()
    (bundle / "cert.der").write_bytes(der["cert.der"])
    (bundle / "key.der").write_bytes(der["key.der"])
    config = json.loads((bundle / "config.json").read_text())
    config["drain_timeout_ms"] = 2000  # it will never connect: don't wait the default 15 s to give up
    (bundle / "config.json").write_text(json.dumps(config))

    result = run_node(bundle, duration_s=1.0, timeout=60)

    assert "cannot connect" in result.stdout
    assert "connected to" not in result.stdout
    assert stack.points(device) == []


def test_device_cannot_publish_to_another_devices_topic(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    mallory, victim = f"mallory-{uid}", f"victim-{uid}"
    stack.add_device(mallory)
    stack.add_device(victim)
    client = _device_client(stack, mallory)
    now = int(time.time() * 1000)
    try:
        # Mosquitto acknowledges a denied QoS 1 publish (MQTT 3.1.1 cannot refuse one) and drops it.
        publish(client, f"fl/v1/{victim}/data", batch(0, now, ["temp"], [[0, 0, 99.0]]))
        publish(client, f"fl/v1/{mallory}/data", batch(1, now, ["temp"], [[0, 0, 1.0]]))
    finally:
        client.loop_stop()
        client.disconnect()
    # The service handles messages in order, so once Mallory's own batch is stored, the forged one
    # would have been too.
    assert wait_until(lambda: stack.points(mallory)) == [(now, "temp", 1.0)]
    assert stack.points(victim) == []


def _unregistered_client(stack: StackInfo, name: str, workdir: Path) -> Any:
    """A client with a certificate from the fleet CA for a device that was never registered."""
    pki = Home(stack.home).pki
    CertificateAuthority(pki).issue(name, workdir / "cert.pem", workdir / "key.pem")
    return mqtt_client(stack.mqtt_port, pki / "ca.pem", workdir / "cert.pem", workdir / "key.pem", name)


def test_unregistered_device_is_not_stored(stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path) -> None:
    ghost = f"ghost-{uid}"
    before = ingest.counters().get("rejected_unregistered", 0)
    client = _unregistered_client(stack, ghost, workdir)  # or registered elsewhere and lost
    try:
        publish(client, f"fl/v1/{ghost}/data", batch(0, int(time.time() * 1000), ["temp"], [[0, 0, 5.0]]))
    finally:
        client.loop_stop()
        client.disconnect()
    wait_until(lambda: ingest.counters().get("rejected_unregistered", 0) == before + 1)
    assert stack.points(ghost) == []
    assert f"device '{ghost}' is not registered" in ingest.log.read_text()


def test_device_cannot_read_other_devices_data(stack: StackInfo, uid: str) -> None:
    import threading

    spy, talker = f"spy-{uid}", f"talker-{uid}"
    stack.add_device(spy)
    stack.add_device(talker)
    received: list[str] = []
    granted = threading.Event()
    spy_client = _device_client(stack, spy)
    spy_client.on_message = lambda _c, _u, message: received.append(message.topic)  # type: ignore[attr-defined]
    spy_client.on_subscribe = lambda *_args: granted.set()  # type: ignore[attr-defined]
    talker_client = _device_client(stack, talker)
    try:
        spy_client.subscribe(f"fl/v1/{talker}/data", qos=1)  # type: ignore[attr-defined]
        assert granted.wait(5)
        publish(talker_client, f"fl/v1/{talker}/data", batch(0, 1, ["t"], [[0, 0, 1.0]]))
        time.sleep(1.0)  # a delivery would take milliseconds on loopback
    finally:
        for c in (spy_client, talker_client):
            c.loop_stop()  # type: ignore[attr-defined]
            c.disconnect()  # type: ignore[attr-defined]
    assert received == []


def test_device_key_files_are_private(stack: StackInfo, uid: str) -> None:
    bundle = stack.add_device(f"keys-{uid}")
    for name in ("key.pem", "key.der"):
        assert (bundle / name).stat().st_mode & 0o777 == 0o600
    assert (Home(stack.home).pki / "ca.key").stat().st_mode & 0o777 == 0o600


def test_status_of_an_unregistered_device_is_refused(
    stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path
) -> None:
    import httpx

    from shared.protocol import encode_status

    ghost = f"phantom-{uid}"
    before = ingest.counters().get("rejected_unregistered", 0)
    client = _unregistered_client(stack, ghost, workdir)
    try:
        publish(client, f"fl/v1/{ghost}/status", encode_status(True, {"dropped": 0}, "pretend"))
    finally:
        client.loop_stop()
        client.disconnect()
    wait_until(lambda: ingest.counters().get("rejected_unregistered", 0) == before + 1)
    assert all(d["id"] != ghost for d in httpx.get(f"{ingest.url}/api/devices").json())
    assert f"rejected status on 'fl/v1/{ghost}/status' (unregistered)" in ingest.log.read_text()


def test_a_replayed_batch_is_stored_once(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    """A batch sent again (a redelivery, or a recording played back by the device's own identity)
    writes the same points: (device, sensor, timestamp) identifies a point, so nothing is doubled."""
    device = f"replay-{uid}"
    stack.add_device(device)
    now = int(time.time() * 1000)
    payload = batch(7, now, ["temp", "rh"], [[0, 0, 20.5], [0, 1, 40.0], [500, 0, 20.75]])
    before = ingest.counters().get("stored_messages", 0)
    client = _device_client(stack, device)
    try:
        for _ in range(3):
            publish(client, f"fl/v1/{device}/data", payload)  # type: ignore[arg-type]
    finally:
        client.loop_stop()  # type: ignore[attr-defined]
        client.disconnect()  # type: ignore[attr-defined]
    wait_until(lambda: ingest.counters().get("stored_messages", 0) == before + 3)
    assert stack.points(device) == [(now, "rh", 40.0), (now, "temp", 20.5), (now + 500, "temp", 20.75)]
