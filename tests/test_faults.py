"""Outages delay data; they don't lose it: the radio link, the database, the ingest service."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    IngestInfo,
    LinkCutter,
    StackInfo,
    batch,
    extra_ingest_identity,
    fieldlink,
    mqtt_client,
    publish,
    start_ingest,
    start_node,
    trace_readings,
    wait_until,
)
from tools._home import Home
from tools._process import stop_pid


def _point_bundle_at(bundle: Path, port: int, broker: dict[str, object] | None = None, **changes: object) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["broker"].update(broker or {}, port=port)
    config.update(changes)
    (bundle / "config.json").write_text(json.dumps(config))


def _final_counters(log: Path) -> dict[str, int]:
    counters: dict[str, int] = json.loads(log.read_text().rsplit("stopped: ", 1)[1].splitlines()[0])
    return counters


def _assert_nothing_lost_after_reconnecting(
    stack: StackInfo, link: LinkCutter, device: str, trace: Path, log: Path
) -> None:
    produced = trace_readings(trace)
    assert stack.wait_points(device, len(produced)) == produced
    counters = _final_counters(log)
    assert counters["dropped"] == 0
    assert counters["queued"] == 0
    assert counters["reconnects"] >= 1
    assert link.connections >= 2


@pytest.fixture
def link(stack: StackInfo) -> Iterator[LinkCutter]:
    cutter = LinkCutter(stack.mqtt_port)
    yield cutter
    cutter.close()


def test_network_outage_loses_nothing(
    stack: StackInfo, ingest: IngestInfo, link: LinkCutter, uid: str, workdir: Path
) -> None:
    device = f"outage-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=100, batch_max_readings=50, batch_max_age_ms=300)
    _point_bundle_at(bundle, link.port)
    trace, log = workdir / "trace.jsonl", workdir / "node.log"

    node = start_node(bundle, log, trace=trace, duration_s=4.0)
    wait_until(lambda: link.connections >= 1, timeout=10)
    time.sleep(1.0)
    link.cut()
    time.sleep(2.0)
    link.restore()
    assert node.wait(timeout=60) == 0, log.read_text()
    _assert_nothing_lost_after_reconnecting(stack, link, device, trace, log)


def test_silent_link_is_detected_and_loses_nothing(
    stack: StackInfo, ingest: IngestInfo, link: LinkCutter, uid: str, workdir: Path
) -> None:
    # The connection stays open but nothing gets through either way: no error, no reset. The node
    # must notice by the missing PUBACK (or CONNACK), reconnect, and send the batches again.
    device = f"silent-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=100, batch_max_readings=50, batch_max_age_ms=300)
    _point_bundle_at(bundle, link.port, broker={"timeout_ms": 1000})
    trace, log = workdir / "trace.jsonl", workdir / "node.log"

    node = start_node(bundle, log, trace=trace, duration_s=5.0)
    wait_until(lambda: link.connections >= 1, timeout=10)
    time.sleep(1.0)
    link.frozen = True
    time.sleep(3.0)
    link.frozen = False
    assert node.wait(timeout=60) == 0, log.read_text()
    _assert_nothing_lost_after_reconnecting(stack, link, device, trace, log)
    assert "no PUBACK for packet" in log.read_text()


def test_outage_longer_than_the_outbox_drops_oldest_and_counts(
    stack: StackInfo, ingest: IngestInfo, link: LinkCutter, uid: str, workdir: Path
) -> None:
    device = f"overflow-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=50, batch_max_readings=2, batch_max_age_ms=10000)
    _point_bundle_at(bundle, link.port, outbox={"capacity": 3})
    trace, log = workdir / "trace.jsonl", workdir / "node.log"
    link.cut()  # no network from the start

    node = start_node(bundle, log, trace=trace, duration_s=1.0)
    time.sleep(2.0)  # sampling is over: about 20 batches produced, 3 kept
    link.restore()
    assert node.wait(timeout=60) == 0, log.read_text()

    batches = [json.loads(line) for line in trace.read_bytes().splitlines()]
    counters = _final_counters(log)
    assert counters["dropped"] == len(batches) - 3
    kept = [b for b in batches if b["seq"] >= len(batches) - 3]  # the newest three survive
    expected = sorted((b["t0"] + off, b["s"][i], v) for b in kept for off, i, v in b["r"])
    assert stack.wait_points(device, len(expected)) == expected


def test_database_outage_loses_nothing(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    device = f"dbdown-{uid}"
    bundle = stack.add_device(device)
    home = Home(stack.home)
    stop_pid(home.load_state().pids["influxdb"])
    spooled_before = ingest.counters().get("spooled_points", 0)
    now = int(time.time() * 1000)
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    try:
        for seq in range(5):
            publish(client, f"fl/v1/{device}/data", batch(seq, now + seq * 1000, ["temp"], [[0, 0, seq + 0.5]]))
        # The service's spool takes them (and the broker's queue stays empty) while InfluxDB is down.
        wait_until(lambda: ingest.counters().get("spooled_points", 0) >= spooled_before + 5)
    finally:
        client.loop_stop()
        client.disconnect()
        result = fieldlink(stack.home, "stack", "up")
        assert result.returncode == 0, result.stderr

    expected = [(now + seq * 1000, "temp", seq + 0.5) for seq in range(5)]
    assert stack.wait_points(device, 5, timeout=60) == expected


def test_ingest_restart_loses_nothing(stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path) -> None:
    """A second service with an identity and a persistent session of its own: what arrives while it is
    down waits in the broker and is stored by it after it comes back."""
    env = dict(os.environ, FIELDLINK_HOME=str(stack.home), **extra_ingest_identity(stack, uid))
    log = workdir / "ingest.log"

    device = f"restart-{uid}"
    bundle = stack.add_device(device)
    service, _ = start_ingest(env, log)
    service.send_signal(signal.SIGKILL)  # a crash: no clean disconnect
    service.wait()
    now = int(time.time() * 1000)
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    try:
        for seq in range(10):
            publish(client, f"fl/v1/{device}/data", batch(seq, now + seq, ["temp"], [[0, 0, float(seq)]]))
    finally:
        client.loop_stop()
        client.disconnect()

    service, url = start_ingest(env, log)
    try:
        # Its own count proves it received the backlog (the session fixture's service stores the same
        # points too: a point's identity makes that an overwrite).
        wait_until(lambda: httpx.get(f"{url}/healthz").json()["counters"].get("stored_messages") == 10)
        assert stack.points(device) == [(now + seq, "temp", float(seq)) for seq in range(10)]
    finally:
        stop_pid(service.pid)
