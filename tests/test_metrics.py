"""GET /metrics: Prometheus text that prometheus-client's own parser accepts, with exact values after a
known set of messages (in-process: the real app, registry, spool and consumer; a fake database)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ingest import Issued, Registry, Settings, create_app, plan_workers
from ingest._consumer import Consumer, Stats
from ingest._spool import Spool
from ingest._storage import Storage
from ingest._worker import Reporter
from ingest._workers import Tally, WorkerPool, report_line
from shared.protocol import encode_batch
from tests.support import IngestInfo
from tests.test_consumer_units import FakeWriter

SHA = "cd" * 32


def status(online: bool, counters: dict[str, int], t: int) -> bytes:
    return json.dumps({"v": 1, "online": online, "counters": counters, "t": t}).encode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def service(tmp_path: Path) -> tuple[TestClient, Consumer, Registry]:
    settings = Settings(mqtt_tls=False, spool_dir=tmp_path / "spool")
    app = create_app(settings)
    registry = Registry(tmp_path / "registry.db")
    for device in ("m-1", "m-2", "m-3"):
        registry.add(device, Issued(serial=device, sha256=device.encode().hex().ljust(64, "0"), not_after=0.0))
    registry.revoke("m-3")
    stats = Stats()
    spool = Spool(settings.spool_path, 1 << 20)
    writer = app.state.metrics.timed(FakeWriter())  # what the lifespan does with the real writer
    storage = Storage.for_settings(settings, writer, spool, stats.counters, registry)
    pool = WorkerPool(plan_workers(settings, 2))  # worker 2 not started: "down"
    app.state.registry, app.state.stats, app.state.storage, app.state.workers = registry, stats, storage, pool
    consumer = Consumer(settings, registry, writer, stats, storage)
    yield TestClient(app, base_url="http://127.0.0.1"), consumer, registry
    spool.close()
    registry.close()


def test_metrics_count_a_known_set_of_messages_exactly(service: tuple[TestClient, Consumer, Registry]) -> None:
    client, consumer, _ = service
    now = int(time.time() * 1000)
    t0 = now - 10_000

    async def send() -> None:
        await consumer.handle("fl/v1/m-1/data", encode_batch(1, t0, ["t", "h"], [(0, 0, 21.5), (0, 1, None)]))
        await consumer.handle("fl/v1/m-1/data", encode_batch(2, t0 + 1000, ["t", "h"], [(0, 0, 21.6), (0, 1, 40.0)]))
        await consumer.handle("fl/v1/m-2/data", encode_batch(1, t0, ["t"], [(0, 0, 1.0), (500, 0, 2.0)]))
        await consumer.handle("fl/v1/m-2/data", b"{not json")
        await consumer.handle("fl/v1/m-3/data", encode_batch(1, t0, ["t"], [(0, 0, 1.0)]))  # revoked
        await consumer.handle("fl/v1/nobody/data", encode_batch(1, t0, ["t"], [(0, 0, 1.0)]))
        await consumer.handle("fl/v1/m-2/data", encode_batch(9, now + 3_600_000, ["t"], [(0, 0, 1.0)]))  # skew
        # (Statuses with their own time, as docs/protocol.md has them.)
        await consumer.handle("fl/v1/m-1/status", status(True, {"queued": 1}, now))
        await consumer.handle("fl/v1/m-2/status", status(False, {}, now))

    asyncio.run(send())
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)

    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("fieldlink_messages_received_total", kind="data") == 7
    assert value("fieldlink_messages_received_total", kind="status") == 2
    assert value("fieldlink_messages_stored_total") == 3
    assert value("fieldlink_points_written_total") == 5
    assert value("fieldlink_failed_reads_total") == 1
    assert value("fieldlink_statuses_stored_total") == 2
    rejections = {dict(labels)["reason"]: v for (n, labels), v in found.items() if n == "fieldlink_rejections_total"}
    assert rejections["malformed"] == rejections["revoked"] == rejections["unregistered"] == 1
    assert rejections["clock_skew"] == 1
    assert sum(rejections.values()) == 4
    assert len(rejections) == 12  # every reason, also those not seen yet: a bounded set
    # Five messages stored (3 data, 2 status), each written alone: five writes, none failed.
    assert value("fieldlink_write_duration_seconds_count", outcome="ok") == 5
    assert value("fieldlink_write_duration_seconds_count", outcome="error") == 0
    assert value("fieldlink_write_duration_seconds_bucket", outcome="ok", le="+Inf") == 5
    assert value("fieldlink_devices", status="active") == 2
    assert value("fieldlink_devices", status="revoked") == 1
    assert value("fieldlink_devices_online") == 1
    age = "fieldlink_device_last_seen_age_seconds"
    ages = {dict(labels)["device"]: v for (n, labels), v in found.items() if n == age}
    assert set(ages) == {"m-1", "m-2"}  # active devices that sent readings; never the revoked one
    assert 9 <= ages["m-1"] <= 60 and 9.5 <= ages["m-2"] <= 60  # from the devices' own timestamps
    assert value("fieldlink_mqtt_connected") == 0  # no broker in this test
    assert value("fieldlink_consumer_unacked_messages") == 0
    assert value("fieldlink_spool_enabled") == 1
    assert value("fieldlink_spool_records") == 0
    assert value("fieldlink_spool_max_bytes") == 1 << 20
    assert value("fieldlink_influx_outage") == 0
    assert value("fieldlink_worker_state", worker="1", state="running") == 1
    assert value("fieldlink_worker_state", worker="2", state="down") == 1
    assert value("fieldlink_worker_state", worker="2", state="running") == 0
    assert value("fieldlink_worker_restarts_total", worker="2") == 0
    assert value("fieldlink_events_total", event="status_accepted") == 2
    # No label holds a device id or a sensor name, but for the one per-device gauge.
    for (name, labels), _ in found.items():
        if name != age:
            assert not {v for _, v in labels} & {"m-1", "m-2", "m-3", "nobody", "t", "h"}, (name, labels)


def test_metrics_need_the_read_token_when_one_is_set(tmp_path: Path) -> None:
    token = "read-token-0123456789"
    app = create_app(Settings(mqtt_tls=False, read_token=token))  # type: ignore[arg-type]
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert "fieldlink_write_duration_seconds" in response.text  # before the lifespan: the histogram alone


def test_the_running_service_serves_metrics(ingest: IngestInfo) -> None:
    response = httpx.get(f"{ingest.url}/metrics", timeout=5)
    assert response.status_code == 200
    found = samples(response.text)
    assert found[("fieldlink_mqtt_connected", ())] == 1
    assert found[("fieldlink_consumer_running", ())] == 1
    assert found[("fieldlink_spool_enabled", ())] == 1
    assert ("process_resident_memory_bytes", ()) in found


# --- several workers: the sum, each worker's offset across restarts (no processes, milliseconds) ----------


def report(run: str, counters: dict[str, int], **state: object) -> bytes:
    """A worker's report line, as ingest._workers.report_line writes it."""
    stats = Stats()
    stats.counters.update(counters)
    stats.mqtt_connected = bool(state.get("connected", True))
    stats.consumer_running = True
    stats.queues = lambda: {"incoming": int(state.get("incoming", 0)), "unacked": int(state.get("unacked", 0))}  # type: ignore[call-overload]
    histogram = state.get("histogram", {})
    assert isinstance(histogram, dict)
    return report_line(run, stats, None, histogram)


def test_a_workers_counts_go_on_across_its_processes() -> None:
    now = [100.0]
    tally = Tally(clock=lambda: now[0])
    tally.take(2, report("a", {"stored_messages": 5, "rejected": 1}))
    tally.take(2, report("a", {"stored_messages": 9, "rejected": 1}))  # a state, not an increment
    tally.take(3, report("c", {"stored_messages": 4}))
    assert tally.counters(2) == {"stored_messages": 9, "rejected": 1}
    tally.end(2)  # process a died (SIGKILL): its last counts stay
    assert tally.live(2) is None and tally.counters(2) == {"stored_messages": 9, "rejected": 1}
    tally.take(2, report("a", {"stored_messages": 11}))  # a late line of the dead process: never counted
    assert tally.counters(2)["stored_messages"] == 9
    tally.take(2, report("b", {"stored_messages": 2}))  # its successor starts at 0
    assert tally.counters(2) == {"stored_messages": 11, "rejected": 1}
    # A new process's report before the old one was ended (no EOF seen yet) ends the old one first.
    tally.take(2, report("x", {"stored_messages": 1}))
    assert tally.counters(2)["stored_messages"] == 12
    tally.take(2, report("b", {"stored_messages": 7}))  # b ended with x's first report: ignored
    assert tally.counters(2)["stored_messages"] == 12
    assert tally.counters(3) == {"stored_messages": 4} and tally.workers() == {2, 3}
    # Histogram counts add up the same way.
    tally.take(3, report("c", {}, histogram={"ok|+Inf": 3.0, "ok|sum": 0.03}))
    tally.end(3)
    tally.take(3, report("d", {}, histogram={"ok|+Inf": 1.0, "ok|sum": 0.5}))
    assert tally.histogram(3) == {"ok|+Inf": 4.0, "ok|sum": 0.53}


def test_metrics_and_healthz_sum_the_workers(service: tuple[TestClient, Consumer, Registry]) -> None:
    client, consumer, _ = service
    t0 = int(time.time() * 1000) - 10_000
    asyncio.run(consumer.handle("fl/v1/m-1/data", encode_batch(1, t0, ["t"], [(0, 0, 21.5)])))
    pool: WorkerPool = client.app.state.workers  # type: ignore[attr-defined]
    # Worker 2 (not started here: "down") reported before it died, and its next process since.
    pool.tally.take(2, report("a", {"received": 6, "stored_messages": 6, "rejected": 1, "rejected_malformed": 1}))
    pool.tally.end(2)
    latency = {"ok|0.001": 1.0, "ok|0.005": 2.0, "ok|+Inf": 2.0, "ok|sum": 0.004}
    pool.tally.take(2, report("b", {"received": 3, "stored_messages": 3}, incoming=4, unacked=2, histogram=latency))
    found = samples(client.get("/metrics").text)

    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("fieldlink_messages_stored_total") == 1 + 6 + 3
    assert value("fieldlink_messages_received_total", kind="data") == 1 + 9
    assert value("fieldlink_rejections_total", reason="malformed") == 1
    assert value("fieldlink_worker_messages_stored_total", worker="1") == 1
    assert value("fieldlink_worker_messages_stored_total", worker="2") == 9
    assert value("fieldlink_consumer_queue_messages") == 4 and value("fieldlink_consumer_unacked_messages") == 2
    # Worker 1 wrote once (its own histogram), worker 2 twice.
    assert value("fieldlink_write_duration_seconds_count", outcome="ok") == 3
    assert value("fieldlink_write_duration_seconds_bucket", outcome="ok", le="0.005") == 3
    assert 0.004 <= value("fieldlink_write_duration_seconds_sum", outcome="ok") < 1
    health = client.get("/healthz").json()
    assert health["counters"]["stored_messages"] == 10 and health["counters"]["received"] == 10
    assert [row["counters"].get("stored_messages") for row in health["workers"]] == [1, 9]
    assert health["workers"][1]["mqtt_connected"] is True
    assert health["mqtt_connected"] is False  # no broker here, and worker 2 is not running
    service_view = client.get("/api/service").json()
    # The dashboard's figures cover every worker: latency, rejections by reason, queue depths.
    assert service_view["write_latency"]["count"] == 3
    assert service_view["rejections"].get("malformed") == 1
    assert (service_view["queue_messages"], service_view["unacked_messages"]) == (4, 2)


def test_a_worker_never_blocks_on_its_report_pipe() -> None:
    """A parent that reads nothing fills the pipe: the worker goes on, and what it finally reads are
    whole lines, the last one the newest state."""
    read_end, write_end = os.pipe()
    stats = Stats()
    reporter = Reporter(
        write_end, lambda: report_line("r", stats, None, {"ok|sum": 0.0} | {f"k{i}": 0 for i in range(1000)})
    )
    try:
        started = time.monotonic()
        for n in range(2000):  # far more than a pipe holds; lines longer than PIPE_BUF: written in parts
            stats.counters["stored_messages"] = n
            reporter.send()
        assert time.monotonic() - started < 5
        stats.counters["stored_messages"] = 5000
        os.set_blocking(read_end, False)
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 1 << 16):
                data += chunk
        reporter.last()
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 1 << 16):
                data += chunk
        lines = data.splitlines()
        assert len(lines) >= 2
        assert [json.loads(line)["run"] for line in lines] == ["r"] * len(lines)  # every line whole
        assert json.loads(lines[-1])["counters"]["stored_messages"] == 5000
    finally:
        os.close(read_end)
        os.close(write_end)
