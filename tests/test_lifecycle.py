"""The device lifecycle against the real broker, service and database: revoke, rotate, remove, and ids
that must never reach the file system."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import ssl
import time
from pathlib import Path

import pytest

from ingest import Registry
from tests.support import (
    IngestInfo,
    StackInfo,
    batch,
    fieldlink,
    mqtt_client,
    publish,
    start_node,
    trace_readings,
    wait_until,
)
from tools._home import Home

REVOCATION_DEADLINE_S = 5.0


def _connects(stack: StackInfo, cert: Path, key: Path) -> bool:
    """Whether the broker completes a TLS session with this client certificate and answers an MQTT
    CONNECT (a refused certificate ends in an alert or a reset; TLS 1.3 reports it at the first read)."""
    context = ssl.create_default_context(cafile=str(Home(stack.home).pki / "ca.pem"))
    context.load_cert_chain(str(cert), str(key))
    connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00"  # CONNECT, clean session, empty id
    try:
        with (
            socket.create_connection(("127.0.0.1", stack.mqtt_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(connect)
            return tls.recv(4)[:1] == b"\x20"  # CONNACK
    except (ssl.SSLError, OSError):
        return False


def _revoked_at_ms(stack: StackInfo, device: str) -> int:
    registry = Registry(Home(stack.home).registry_path)
    try:
        revoked_at = registry.get(device).revoked_at  # type: ignore[union-attr]
    finally:
        registry.close()
    assert revoked_at is not None
    return int(revoked_at * 1000)


def _broker_log(stack: StackInfo) -> str:
    return (stack.home / "logs" / "mosquitto.log").read_text(errors="replace")


def test_revoke_cuts_a_live_node_off_within_5_s_while_another_keeps_storing(
    stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path
) -> None:
    victim, bystander = f"victim-{uid}", f"bystander-{uid}"
    options = {"sample_interval_ms": 100, "batch_max_readings": 5, "batch_max_age_ms": 300}
    victim_bundle = stack.add_device(victim, **options)
    bystander_bundle = stack.add_device(bystander, **options)
    witness_bundle = stack.add_device(f"witness-{uid}")
    victim_trace, bystander_trace = workdir / "victim.jsonl", workdir / "bystander.jsonl"
    victim_node = start_node(victim_bundle, workdir / "victim.log", trace=victim_trace)
    bystander_node = start_node(bystander_bundle, workdir / "bystander.log", trace=bystander_trace, duration_s=6.0)
    try:
        stack.wait_points(victim, 5)
        deadline = time.monotonic() + REVOCATION_DEADLINE_S  # one deadline for every step below
        result = fieldlink(stack.home, "device", "revoke", victim)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"device {victim} revoked"
        # The live session is closed by the broker, and the device cannot come back.
        wait_until(
            lambda: f"Client {victim} been disconnected by administrative action" in _broker_log(stack),
            timeout=max(0.0, deadline - time.monotonic()),
        )
        wait_until(
            lambda: not _connects(stack, victim_bundle / "cert.pem", victim_bundle / "key.pem"),
            timeout=max(0.0, deadline - time.monotonic()),
        )
        # A certificate of the fleet still connects: the refusal is the revocation, not the broker.
        assert _connects(stack, witness_bundle / "cert.pem", witness_bundle / "key.pem")
        stored_at_revoke = stack.points(victim)
        # Nothing sampled after the revoke (the registry's commit) was stored; what was sampled before
        # it may have been refused too, if it arrived after.
        revoked_at_ms = _revoked_at_ms(stack, victim)
        assert all(t < revoked_at_ms for t, _, _ in stored_at_revoke)
        time.sleep(2.0)  # the node keeps trying; nothing more of it may be stored
        assert stack.points(victim) == stored_at_revoke
        assert "cannot connect" in (workdir / "victim.log").read_text()
    finally:
        victim_node.kill()
        victim_node.wait()
    # The other device lost nothing through it all.
    assert bystander_node.wait(timeout=60) == 0
    produced = trace_readings(bystander_trace)
    assert stack.wait_points(bystander, len(produced)) == produced
    shown = fieldlink(stack.home, "device", "show", victim)
    assert "status      revoked" in shown.stdout
    certificate_lines = shown.stdout.splitlines()[6:]
    assert len(certificate_lines) == 1
    assert "revoked" in certificate_lines[0]


def test_a_message_of_a_revoked_device_is_refused_even_on_an_open_session(
    stack: StackInfo, ingest: IngestInfo, uid: str
) -> None:
    """The service checks the registry for every message: what was in flight at the revoke, or sent
    before the broker closed the session, is not stored."""
    device = f"inflight-{uid}"
    bundle = stack.add_device(device)
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    now = int(time.time() * 1000)
    try:
        publish(client, f"fl/v1/{device}/data", batch(0, now, ["t"], [[0, 0, 1.0]]))
        assert stack.wait_points(device, 1) == [(now, "t", 1.0)]
        registry = Registry(Home(stack.home).registry_path)
        try:
            registry.revoke(device)  # the registry step alone: the session stays open
        finally:
            registry.close()
        before = ingest.counters().get("rejected_revoked", 0)
        publish(client, f"fl/v1/{device}/data", batch(1, now + 1, ["t"], [[0, 0, 2.0]]))
        wait_until(lambda: ingest.counters().get("rejected_revoked", 0) == before + 1)
    finally:
        client.loop_stop()
        client.disconnect()
    assert stack.points(device) == [(now, "t", 1.0)]


def test_rotation_switches_certificates_without_losing_a_reading(
    stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path
) -> None:
    device = f"rotor-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=100, batch_max_readings=5, batch_max_age_ms=300)
    old = workdir / "old"
    shutil.copytree(bundle, old)
    trace = workdir / "trace.jsonl"
    first = start_node(bundle, workdir / "first.log", trace=trace, duration_s=4.0)
    stack.wait_points(device, 5)
    last_good, boots = (bundle / "config.last-good.json").read_bytes(), (bundle / "boot").read_text().split()[0]
    rotated = fieldlink(stack.home, "device", "rotate", device)  # while the node runs on the old one
    assert rotated.returncode == 0, rotated.stderr
    # The bundle's credentials change in place: the files the node keeps there stay (its spool too;
    # its boot file's count of early ends may go to 0 meanwhile, as the node stops cleanly).
    assert (bundle / "config.last-good.json").read_bytes() == last_good
    assert (bundle / "boot").read_text().split()[0] == boots
    assert (bundle / "spool" / "epoch").is_file()
    new_id = hashlib.sha256((bundle / "cert.der").read_bytes()).hexdigest()[:16]
    assert f"new certificate {new_id}" in rotated.stdout
    early = fieldlink(stack.home, "device", "rotate", device, "--finish")
    assert early.returncode == 2
    assert "does not use its new certificate yet" in early.stderr
    assert first.wait(timeout=60) == 0

    second = start_node(bundle, workdir / "second.log", trace=trace, duration_s=4.0)
    try:

        def in_use() -> str | None:
            registry = Registry(Home(stack.home).registry_path)
            try:
                return registry.get(device).cert_in_use  # type: ignore[union-attr]
            finally:
                registry.close()

        wait_until(lambda: (in_use() or "").startswith(new_id), timeout=20)
        finished = fieldlink(stack.home, "device", "rotate", device, "--finish")
        assert finished.returncode == 0, finished.stderr
        assert finished.stdout.strip() == f"device {device}: 1 old certificate(s) revoked"
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()
    produced = trace_readings(trace)
    assert stack.wait_points(device, len(produced)) == produced
    assert not _connects(stack, old / "cert.pem", old / "key.pem")
    assert _connects(stack, bundle / "cert.pem", bundle / "key.pem")


def test_remove_revokes_forgets_and_deletes_the_bundle(stack: StackInfo, uid: str) -> None:
    device, witness = f"gone-{uid}", f"stays-{uid}"
    bundle = stack.add_device(device)
    stack.add_device(witness)
    cert, key = bundle / "cert.pem", bundle / "key.pem"
    keep = bundle.parent / f"kept-{uid}"
    keep.mkdir()
    shutil.copy(cert, keep / "cert.pem")
    shutil.copy(key, keep / "key.pem")
    result = fieldlink(stack.home, "device", "rm", device)
    assert (result.returncode, result.stdout.strip()) == (0, f"device {device} removed")
    assert not bundle.exists()
    assert device not in fieldlink(stack.home, "device", "list").stdout
    assert not _connects(stack, keep / "cert.pem", keep / "key.pem")
    assert _connects(stack, stack.home / "devices" / witness / "cert.pem", stack.home / "devices" / witness / "key.pem")
    shutil.rmtree(keep)
    again = fieldlink(stack.home, "device", "rm", device)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: device '{device}' is not registered"


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


HOSTILE_IDS = ["", ".", "..", "../pki", "../../etc", "a/b", "/tmp", "pki/..", "node 1", "Node", "-x", "x" * 65, "é"]


def test_hostile_ids_touch_no_file(
    stack: StackInfo, uid: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every device verb refuses each id with exit 2 and a message, and no file changes. Run in-process
    (the same `main` as the command) to keep 91 invocations fast."""
    from tools.cli import main

    witness = f"witness-{uid}"
    stack.add_device(witness)
    sensing = workdir / "sensing.json"
    sensing.write_text(json.dumps({"sensors": [{"name": "t", "type": "sim", "signal": "temperature"}]}))
    before_pki, before_devices = _tree_digest(stack.home / "pki"), _tree_digest(stack.home / "devices")
    monkeypatch.setenv("FIELDLINK_HOME", str(stack.home))
    for device_id in HOSTILE_IDS:
        for verb, options, extra in (
            ("add", [], []),
            ("show", [], []),
            ("revoke", [], []),
            ("rotate", [], []),
            ("rotate", ["--finish"], []),
            ("rm", [], []),
            ("configure", [], [str(sensing)]),
        ):
            monkeypatch.setattr("sys.argv", ["fieldlink", "device", verb, *options, "--", device_id, *extra])
            with pytest.raises(SystemExit) as exited:
                main()
            err = capsys.readouterr().err
            assert exited.value.code == 2, (verb, device_id, err)
            assert "is not a valid device id" in err, (verb, device_id, err)
    assert _tree_digest(stack.home / "pki") == before_pki
    assert _tree_digest(stack.home / "devices") == before_devices


def test_device_list_and_show(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    device = f"shown-{uid}"
    added = fieldlink(stack.home, "device", "add", device, "--label", "site=plant-2", "--label", "floor=3")
    assert added.returncode == 0, added.stderr
    bundle = stack.home / "devices" / device
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    now = int(time.time() * 1000)
    try:
        publish(client, f"fl/v1/{device}/data", batch(0, now - 5000, ["t"], [[0, 0, 1.0], [3000, 0, 2.0]]))
        stack.wait_points(device, 2)
    finally:
        client.loop_stop()
        client.disconnect()
    registry = Registry(Home(stack.home).registry_path)
    try:
        wait_until(lambda: registry.get(device).last_seen_ms == now - 2000)  # type: ignore[union-attr]
        cert = registry.get(device).certificates[0]  # type: ignore[union-attr]
    finally:
        registry.close()
    shown = fieldlink(stack.home, "device", "show", device).stdout.splitlines()
    assert shown[0] == f"id          {device}"
    assert shown[1] == "status      active"
    assert shown[4] == "labels      floor=3, site=plant-2"
    assert shown[6].split()[:2] == [cert.cert_id, cert.serial]
    assert shown[6].endswith("valid")
    listed = [line for line in fieldlink(stack.home, "device", "list").stdout.splitlines() if line.startswith(device)]
    assert listed[0].split()[:2] == [device, "active"]
    assert "last seen never" not in listed[0]


def test_revoke_without_a_broker_does_what_it_can_and_says_what_it_could_not(tmp_path: Path) -> None:
    from cryptography import x509

    from ingest import CertificateAuthority
    from tools._devices import add_device

    home = Home(tmp_path)
    home.ensure()
    CertificateAuthority(home.pki).create()
    device, _ = add_device(home, "lonely")
    result = fieldlink(tmp_path, "device", "revoke", "lonely")
    assert result.returncode == 4
    assert result.stdout.strip() == "device lonely revoked"
    assert result.stderr.strip() == (
        "error: revoked in the registry and the CRL, but: no running broker was signalled to re-read the CRL"
    )
    crl = x509.load_pem_x509_crl(home.pki_files.crl.read_bytes())
    assert [format(r.serial_number, "x") for r in crl] == [device.certificates[0].serial]
    registry = Registry(home.registry_path)
    try:
        assert registry.status("lonely") == "revoked"
    finally:
        registry.close()
