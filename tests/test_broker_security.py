"""The broker and the database as an attacker meets them: TLS versions and ciphers, certificates that
are missing or out of date, client ids and topics that belong to others, oversized payloads, InfluxDB
without credentials, and `stack down` with a PID that now belongs to someone else."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest

from ingest import CertificateAuthority
from shared.identities import ADMIN_IDENTITY, INGEST_IDENTITY
from shared.protocol import MAX_PAYLOAD_BYTES, ack_topic, data_topic
from tests.support import IngestInfo, StackInfo, batch, fieldlink, mqtt_client, publish, wait_until
from tools._home import Home
from tools._process import process_name, process_start_time

# MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keepalive 30 s, an empty client id (the
# broker names the client after its certificate); the broker answers CONNACK "accepted".
_CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 30, 0, 0])
_CONNACK_ACCEPTED = bytes([0x20, 2, 0, 0])


def _context(stack: StackInfo, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(Home(stack.home).pki / "ca.pem"))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _device_context(stack: StackInfo, bundle: Path) -> ssl.SSLContext:
    return _context(stack, bundle / "cert.pem", bundle / "key.pem")


def _mqtt_over(stack: StackInfo, context: ssl.SSLContext) -> tuple[str, str]:
    """Handshake, then an MQTT CONNECT; returns (TLS version, cipher) once the broker accepted it.
    Raises what the client sees when the broker refuses: an alert, or a reset that overtook it."""
    with (
        socket.create_connection(("127.0.0.1", stack.mqtt_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        # TLS 1.3 finishes the client's side of the handshake before the broker has checked its
        # certificate: a refusal shows at the first read.
        tls.sendall(_CONNECT)
        answer = tls.recv(4)
        assert answer == _CONNACK_ACCEPTED, answer
        version, cipher = tls.version(), tls.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0]


def _refused(stack: StackInfo, context: ssl.SSLContext, alert: str, logged: str) -> None:
    """The broker refuses the handshake and logs `logged` once. On a busy machine its close can
    overtake its alert (a reset while our bytes are unread), so the client sees either; when it sees
    the alert, it is `alert`."""
    broker_log = stack.home / "logs" / "mosquitto.log"
    before = broker_log.read_text().count(logged)
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
        _mqtt_over(stack, context)
    if isinstance(refused.value, ssl.SSLError) and not isinstance(refused.value, ssl.SSLEOFError):
        assert alert in str(refused.value)
    wait_until(lambda: broker_log.read_text().count(logged) == before + 1)


def _tls12(stack: StackInfo, bundle: Path, ciphers: str) -> ssl.SSLContext:
    context = _device_context(stack, bundle)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


# --- TLS -------------------------------------------------------------------------------------------


def test_client_without_a_certificate_is_refused(stack: StackInfo) -> None:
    _refused(stack, _context(stack, None, None), "alert certificate required", "peer did not return a certificate")


def test_tls_1_3_is_accepted(stack: StackInfo, uid: str) -> None:
    bundle = stack.add_device(f"tls13-{uid}")
    context = _device_context(stack, bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    version, cipher = _mqtt_over(stack, context)
    assert version == "TLSv1.3"
    assert cipher in {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}


@pytest.mark.parametrize(
    "cipher", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"]
)
def test_tls_1_2_with_ecdhe_and_aead_is_accepted(stack: StackInfo, uid: str, cipher: str) -> None:
    bundle = stack.add_device(f"tls12-{uid}")
    assert _mqtt_over(stack, _tls12(stack, bundle, cipher)) == ("TLSv1.2", cipher)


@pytest.mark.parametrize(
    "ciphers",
    [
        # CBC, with and without ECDHE
        "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA",
        "AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA",
        # AEAD, but RSA key exchange (no forward secrecy)
        "AES128-GCM-SHA256:AES256-GCM-SHA384",
    ],
    ids=["ecdhe-cbc", "rsa-cbc", "rsa-aead"],
)
def test_tls_1_2_without_ecdhe_and_aead_is_refused(stack: StackInfo, uid: str, ciphers: str) -> None:
    bundle = stack.add_device(f"weak-{uid}")
    context = _tls12(stack, bundle, ciphers)
    with (
        socket.create_connection(("127.0.0.1", stack.mqtt_port), timeout=10) as raw,
        pytest.raises(ssl.SSLError, match="handshake failure"),
    ):
        context.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(stack: StackInfo, uid: str) -> None:
    bundle = stack.add_device(f"tls11-{uid}")
    context = _device_context(stack, bundle)
    # OpenSSL's own defaults would stop a TLS 1.1 hello from leaving this machine: allow it here, so
    # the refusal is the broker's ("protocol version" is an alert it sends, not a local error).
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", stack.mqtt_port), timeout=10) as raw,
        pytest.raises(ssl.SSLError, match="alert protocol version"),
    ):
        context.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize(
    ("name", "not_before_days", "not_after_days", "alert"),
    [("expired", -30, -1, "alert certificate expired"), ("not-yet-valid", 1, 30, "alert bad certificate")],
)
def test_certificate_out_of_its_validity_is_refused(
    stack: StackInfo, uid: str, workdir: Path, name: str, not_before_days: int, not_after_days: int, alert: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    CertificateAuthority(Home(stack.home).pki).issue(
        f"{name}-{uid}",
        cert,
        key,
        not_before=now + dt.timedelta(days=not_before_days),
        not_after=now + dt.timedelta(days=not_after_days),
    )
    _refused(stack, _context(stack, cert, key), alert, "certificate verify failed")
    # The same device with a certificate valid today gets in: the dates were the only difference.
    CertificateAuthority(Home(stack.home).pki).issue(f"{name}-{uid}", cert, key)
    assert _mqtt_over(stack, _context(stack, cert, key))[0] == "TLSv1.3"


# --- client ids ------------------------------------------------------------------------------------


def _client(stack: StackInfo, bundle: Path, client_id: str) -> paho.Client:
    return mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", client_id)


def _close(*clients: paho.Client) -> None:
    for client in clients:
        client.loop_stop()
        client.disconnect()


def test_client_ids_of_the_service_and_of_other_devices_cannot_be_taken(
    stack: StackInfo, ingest: IngestInfo, uid: str
) -> None:
    mallory, victim = f"mallory-{uid}", f"victim-{uid}"
    mallory_bundle, victim_bundle = stack.add_device(mallory), stack.add_device(victim)
    disconnects = ingest.counters().get("mqtt_disconnects", 0)
    victim_client = _client(stack, victim_bundle, victim)
    as_service = _client(stack, mallory_bundle, INGEST_IDENTITY)
    # paho reconnects by itself after a second: kicked, this one must stay away for the test to see it.
    as_service.reconnect_delay_set(min_delay=600, max_delay=600)
    as_victim = _client(stack, mallory_bundle, victim)  # the broker renames it: it kicks as_service
    now = int(time.time() * 1000)
    try:
        # The victim's session is still there: its publish is acknowledged and stored, which also
        # shows that the service's session lived through both attempts.
        publish(victim_client, data_topic(victim), batch(0, now, ["temp"], [[0, 0, 21.5]]))
        assert stack.wait_points(victim, 1) == [(now, "temp", 21.5)]
        assert victim_client.is_connected()
        assert ingest.counters().get("mqtt_disconnects", 0) == disconnects
        assert not as_service.is_connected()  # each connection named mallory replaced the one before
        assert as_victim.is_connected()
    finally:
        _close(victim_client, as_service, as_victim)
    broker_log = (stack.home / "logs" / "mosquitto.log").read_text()
    assert f"Client {victim} already connected" not in broker_log
    assert f"Client {INGEST_IDENTITY} already connected" not in broker_log
    assert f"Client {mallory} already connected, closing old connection." in broker_log


# --- topics ----------------------------------------------------------------------------------------


def _round_trip(client: paho.Client, topic: str) -> None:
    """A QoS 1 publish and its PUBACK: whatever the broker had sent this client before has arrived."""
    publish(client, topic, b"{}")


def test_subscriptions_to_all_and_to_another_device_receive_nothing(
    stack: StackInfo, ingest: IngestInfo, uid: str
) -> None:
    eve, victim = f"eve-{uid}", f"victim-{uid}"
    eve_bundle, victim_bundle = stack.add_device(eve), stack.add_device(victim)
    eve_client = _client(stack, eve_bundle, eve)
    received: list[paho.MQTTMessage] = []
    granted: list[Any] = []
    subscribed = threading.Event()
    eve_client.on_message = lambda _c, _u, message: received.append(message)

    def on_subscribe(_c: Any, _u: Any, _mid: Any, codes: Any, _p: Any) -> None:
        granted.extend(codes)
        subscribed.set()

    eve_client.on_subscribe = on_subscribe
    victim_client = _client(stack, victim_bundle, victim)
    now = int(time.time() * 1000)
    try:
        eve_client.subscribe([("#", 1), (data_topic(victim), 1), ("fl/v1/+/status", 1)])
        assert subscribed.wait(10)
        publish(victim_client, data_topic(victim), batch(0, now, ["temp"], [[0, 0, 1.0]]))
        publish(victim_client, f"fl/v1/{victim}/status", json.dumps({"v": 1, "uptime_s": 1}).encode())
        assert stack.wait_points(victim, 1) == [(now, "temp", 1.0)]  # the broker has routed it
        _round_trip(eve_client, data_topic(eve))
    finally:
        _close(eve_client, victim_client)
    assert received == []
    assert len(granted) == 3  # Mosquitto grants the filters and checks each message against the ACL


def test_publishing_outside_its_own_topics_has_no_effect(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    mallory, victim = f"mallory-{uid}", f"victim-{uid}"
    bundle = stack.add_device(mallory)
    stack.add_device(victim)
    dynsec = stack.home / "mosquitto" / "dynsec.json"
    dynsec_before = dynsec.read_text()
    received = ingest.counters().get("received", 0)
    now = int(time.time() * 1000)
    forged = batch(0, now, ["temp"], [[0, 0, 99.0]])
    create = {"commands": [{"command": "createClient", "username": f"mallory-admin-{uid}", "password": "x"}]}
    client = _client(stack, bundle, mallory)
    try:
        # Mosquitto acknowledges a denied QoS 1 publish (MQTT 3.1.1 cannot refuse one) and drops it.
        publish(client, data_topic(victim), forged)
        publish(client, f"fl/v1/{victim}/config", b'{"sample_interval_ms": 1}')
        publish(client, "fl/v1/x/config", b"{}")
        publish(client, "fl/v1/x/data", forged)
        publish(client, "$CONTROL/dynamic-security/v1", json.dumps(create).encode())
        publish(client, data_topic(mallory), batch(1, now, ["temp"], [[0, 0, 1.0]]))
    finally:
        _close(client)
    # The service handles messages in order: once Mallory's own batch is stored, the others would be.
    assert stack.wait_points(mallory, 1) == [(now, "temp", 1.0)]
    assert ingest.counters().get("received", 0) == received + 1
    assert stack.points(victim) == [] and stack.points("x") == []
    assert dynsec.read_text() == dynsec_before


def test_a_device_hears_its_own_acks_and_no_one_can_forge_them(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    # A forged "stored" would make a device drop batches the service never stored.
    device, mallory = f"acked-{uid}", f"forger-{uid}"
    bundle, mallory_bundle = stack.add_device(device), stack.add_device(mallory)
    client, mallory_client = _client(stack, bundle, device), _client(stack, mallory_bundle, mallory)
    heard: list[tuple[str, Any]] = []
    mallory_heard: list[str] = []
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, message: heard.append((message.topic, json.loads(message.payload)))
    mallory_client.on_message = lambda _c, _u, message: mallory_heard.append(message.topic)
    client.on_subscribe = lambda *_args: subscribed.set()
    now = int(time.time() * 1000)
    try:
        client.subscribe(ack_topic(device), 0)
        assert subscribed.wait(10)
        subscribed.clear()
        mallory_client.on_subscribe = lambda *_args: subscribed.set()
        mallory_client.subscribe(ack_topic(device), 0)  # another device's acks: granted, never delivered
        assert subscribed.wait(10)
        publish(mallory_client, ack_topic(device), b'{"v":1,"stored":[41]}')  # dropped by the broker
        publish(mallory_client, ack_topic(mallory), b'{"v":1,"stored":[42]}')  # even on its own topic
        publish(client, data_topic(device), batch(7, now, ["temp"], [[0, 0, 1.0]]))
        publish(client, data_topic(device), batch(8, now - 40 * 86_400_000, ["temp"], [[0, 0, 1.0]]))  # too old
        wait_until(lambda: len(heard) >= 2)
        time.sleep(0.3)  # room for anything else to arrive
    finally:
        _close(client, mallory_client)
    assert sorted(heard, key=lambda entry: json.dumps(entry[1])) == [
        (ack_topic(device), {"v": 1, "refused": [8]}),
        (ack_topic(device), {"v": 1, "stored": [7]}),
    ]
    assert mallory_heard == []


def _admin(stack: StackInfo) -> paho.Client:
    home = Home(stack.home)
    pki = home.pki_files
    return mqtt_client(stack.mqtt_port, pki.ca_cert, pki.admin_cert, pki.admin_key, ADMIN_IDENTITY)


def _dynsec(admin: paho.Client, **command: str) -> None:
    publish(admin, "$CONTROL/dynamic-security/v1", json.dumps({"commands": [command]}).encode())


def test_the_admin_identity_drives_dynamic_security(stack: StackInfo, uid: str) -> None:
    """What the previous test refuses a device works for the admin identity."""
    admin = _admin(stack)
    dynsec = stack.home / "mosquitto" / "dynsec.json"
    probe = f"probe-{uid}"
    try:
        _dynsec(admin, command="createClient", username=probe, password="x")
        wait_until(lambda: probe in dynsec.read_text())
        _dynsec(admin, command="deleteClient", username=probe)
        wait_until(lambda: probe not in dynsec.read_text())
    finally:
        _close(admin)


def test_a_device_known_to_dynamic_security_is_still_bound_by_the_acl(
    stack: StackInfo, ingest: IngestInfo, uid: str
) -> None:
    """Revocation makes a device a client of the plugin (to kick it). With the plugin's default access
    allowed, such a client could publish and read anything, past the acl_file: it must not."""
    mallory, victim = f"mallory-{uid}", f"victim-{uid}"
    bundle = stack.add_device(mallory)
    victim_client = _client(stack, stack.add_device(victim), victim)
    admin = _admin(stack)
    received: list[paho.MQTTMessage] = []
    now = int(time.time() * 1000)
    try:
        _dynsec(admin, command="createClient", username=mallory)
        wait_until(lambda: mallory in (stack.home / "mosquitto" / "dynsec.json").read_text())
        client = _client(stack, bundle, mallory)
        client.on_message = lambda _c, _u, message: received.append(message)
        try:
            client.subscribe("#", 1)
            publish(client, data_topic(victim), batch(0, now, ["temp"], [[0, 0, 99.0]]))
            publish(victim_client, data_topic(victim), batch(1, now + 1, ["temp"], [[0, 0, 1.0]]))
            assert stack.wait_points(victim, 1) == [(now + 1, "temp", 1.0)]
            _round_trip(client, data_topic(mallory))
        finally:
            _close(client)
        publish(victim_client, data_topic(victim), batch(2, now + 2, ["temp"], [[0, 0, 2.0]]))
        # In order: the forged batch came before the victim's first one, and was never stored.
        assert stack.wait_points(victim, 2) == [(now + 1, "temp", 1.0), (now + 2, "temp", 2.0)]
        assert received == []
    finally:
        _dynsec(admin, command="deleteClient", username=mallory)
        _close(admin, victim_client)


def test_payload_over_the_limit_is_dropped_by_the_broker(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    device = f"big-{uid}"
    bundle = stack.add_device(device)
    before = ingest.counters()
    now = int(time.time() * 1000)
    valid = batch(0, now, ["temp"], [[0, 0, 2.0]])
    # A valid batch padded with JSON whitespace to one byte over the limit: were it delivered, the
    # service would count it (received, and rejected or stored).
    oversized = valid[:-1] + b" " * (MAX_PAYLOAD_BYTES + 1 - len(valid)) + b"}"
    assert len(oversized) == MAX_PAYLOAD_BYTES + 1
    client = _client(stack, bundle, device)
    try:
        publish(client, data_topic(device), oversized)  # acknowledged (QoS 1 completes) and dropped
        publish(client, data_topic(device), batch(1, now + 1000, ["temp"], [[0, 0, 3.0]]))
    finally:
        _close(client)
    assert stack.wait_points(device, 1) == [(now + 1000, "temp", 3.0)]
    after = ingest.counters()
    assert after.get("received", 0) == before.get("received", 0) + 1
    assert after.get("rejected", 0) == before.get("rejected", 0)


# --- InfluxDB --------------------------------------------------------------------------------------


def test_influxdb_needs_credentials_and_the_writer_cannot_read(stack: StackInfo, uid: str) -> None:
    home = Home(stack.home)
    writer = json.loads(home.influx_credentials_path.read_text())["writer"]
    writer_auth = (writer["username"], writer["password"])
    device = f"influx-{uid}"
    line = f"readings,device={device},sensor=temp value=1.0 1700000000000".encode()
    write = {"db": "fieldlink", "precision": "ms"}
    query = {"db": "fieldlink", "q": "SELECT * FROM readings LIMIT 1"}

    assert httpx.post(f"{stack.influx_url}/write", params=write, content=line).status_code == 401
    assert httpx.get(f"{stack.influx_url}/query", params=query).status_code == 401
    wrong = ("fieldlink-admin", "not-the-password")
    assert httpx.get(f"{stack.influx_url}/query", params=query, auth=wrong).status_code == 401
    assert stack.points(device) == []

    refused = httpx.get(f"{stack.influx_url}/query", params=query, auth=writer_auth)
    assert refused.status_code == 403
    assert "requires READ on fieldlink" in refused.text
    for statement in ('DROP DATABASE "fieldlink"', f"CREATE USER \"x-{uid}\" WITH PASSWORD 'x' WITH ALL PRIVILEGES"):
        denied = httpx.post(f"{stack.influx_url}/query", data={"q": statement}, auth=writer_auth)
        assert denied.status_code == 403, denied.text

    # The writer's own job works, and only the admin reads it back.
    assert httpx.post(f"{stack.influx_url}/write", params=write, content=line, auth=writer_auth).status_code == 204
    assert stack.points(device) == [(1700000000000, "temp", 1.0)]


def test_influxdb_credentials_are_private(stack: StackInfo, ingest: IngestInfo) -> None:
    home = Home(stack.home)
    for path in (home.influx_credentials_path, home.influx_netrc_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    credentials = json.loads(home.influx_credentials_path.read_text())
    admin, writer = credentials["admin"], credentials["writer"]
    netrc = home.influx_netrc_path.read_text().split()
    assert netrc == ["machine", "127.0.0.1", "login", admin["username"], "password", admin["password"]]
    for log in home.logs.iterdir():  # the service writes with the writer's password and logs none
        assert writer["password"] not in log.read_text(errors="replace"), log
        assert admin["password"] not in log.read_text(errors="replace"), log


def test_influxdb_backup_port_listens_on_loopback_only(stack: StackInfo) -> None:
    conf = (stack.home / "influxdb" / "influxdb.conf").read_text()
    rpc_port = Home(stack.home).load_state().influx_rpc_port
    assert f'bind-address = "127.0.0.1:{rpc_port}"' in conf.splitlines()
    assert "  auth-enabled = true" in conf.splitlines()


# --- processes -------------------------------------------------------------------------------------


def test_broker_pid_file_names_the_running_broker(stack: StackInfo) -> None:
    home = Home(stack.home)
    pid = int(home.broker_pid_path.read_text())
    assert pid == home.load_state().pids["mosquitto"]
    assert process_name(pid) == "mosquitto"


def test_stack_down_leaves_a_process_that_took_a_recorded_pid_alive(workdir: Path) -> None:
    home = workdir / "home"
    home.mkdir()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        start_time = process_start_time(stranger.pid)
        assert start_time is not None
        # The broker once had this PID: its record holds another start time and program.
        state = {
            "pids": {"mosquitto": stranger.pid},
            "started": {"mosquitto": {"start_time": start_time - 1, "program": "mosquitto"}},
        }
        (home / "stack.json").write_text(json.dumps(state))
        result = fieldlink(home, "stack", "down")
        assert (result.returncode, result.stdout.splitlines()) == (
            0,
            [f"mosquitto: pid {stranger.pid} is no longer ours; not signalled", "stack already down"],
        )
        assert stranger.poll() is None
        saved = json.loads((home / "stack.json").read_text())
        assert (saved["pids"], saved["started"]) == ({}, {})
    finally:
        stranger.kill()
        stranger.wait()
