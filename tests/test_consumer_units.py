"""The consumer's message handling, limits, log hygiene and supervision, in-process against a real
SQLite registry and a fake database writer: milliseconds per test."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import Response

from ingest import Issued, Registry, Settings
from ingest._consumer import Consumer, LogLimiter, Stats, Verifier, escape, supervise
from ingest.routers.health import healthz
from shared.protocol import encode_batch, encode_status

DEVICE = "node-1"
SHA = "ab" * 32
CERT_ID = SHA[:16]
DATA = f"fl/v1/{DEVICE}/data"
STATUS = f"fl/v1/{DEVICE}/status"


class FakeWriter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def write(self, body: bytes) -> None:
        self.lines += body.decode().split("\n")

    async def close(self) -> None:
        pass


def now_ms() -> int:
    return int(time.time() * 1000)


def settings(**overrides: Any) -> Settings:
    return Settings(mqtt_tls=False, **overrides)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry.db")
    registry.add(DEVICE, Issued(serial="ab", sha256=SHA, not_after=0.0))
    return registry


class Harness:
    def __init__(self, registry: Registry, **overrides: Any) -> None:
        self.registry = registry
        self.stats = Stats()
        self.writer = FakeWriter()
        self.consumer = Consumer(settings(**overrides), registry, self.writer, self.stats)

    def send(self, topic: str, payload: bytes) -> None:
        asyncio.run(self.consumer.handle(topic, payload))

    def delta(self, before: dict[str, int]) -> dict[str, int]:
        return {k: v - before.get(k, 0) for k, v in self.stats.counters.items() if v != before.get(k, 0)}


@pytest.fixture
def harness(registry: Registry) -> Harness:
    return Harness(registry)


def good_batch(seq: int = 0, sensors: list[str] | None = None, t0: int | None = None) -> bytes:
    names = sensors or ["t"]
    return encode_batch(seq, now_ms() if t0 is None else t0, names, [(0, i, 1.5) for i in range(len(names))])


def test_a_valid_batch_is_stored_counted_and_touches_the_registry(harness: Harness) -> None:
    t0 = now_ms() - 5000
    harness.send(DATA, encode_batch(3, t0, ["t", "h"], [(0, 0, 21.5), (10, 1, float("nan")), (20, 1, 40.0)]))
    assert harness.writer.lines == [
        f"readings,device={DEVICE},sensor=t value=21.5 {t0}",
        f"readings,device={DEVICE},sensor=h value=40.0 {t0 + 20}",
    ]
    assert harness.delta({}) == {"received": 1, "stored_messages": 1, "stored_points": 2, "failed_reads": 1}
    device = harness.registry.get(DEVICE)
    assert device is not None and device.last_seen_ms == t0 + 20
    assert harness.registry.sensor_names(DEVICE) == {"t", "h"}


MALFORMED_DATA = [
    (b"{not json", "malformed"),
    (b"[" * 1000 + b"]" * 1000, "malformed"),
    (b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[' + b"[" * 8000 + b"]" * 8000 + b"]}", "malformed"),
    (b'{"v":1,"seq":0,"t0":1,"s":["t"],"r":[[0,0,1' + b"0" * 400 + b"]]}", "malformed"),
    (b'{"v":1,"seq":0,"t0":1,"s":["t"],"r":[[0,0,' + b"9" * 5000 + b"]]}", "malformed"),
    (b'{"v":1,"seq":1' + b"0" * 30 + b',"t0":1,"s":["t"],"r":[]}', "malformed"),
    (b'{"v":1,"v":1,"seq":0,"t0":1,"s":["t"],"r":[]}', "malformed"),
    (b'{"v":1,"seq":0,"t0":1,"s":["t"],"r":[[0,0,NaN]]}', "malformed"),
    (b"\xff\xfe{}", "malformed"),
    (b"x" * 20000, "too_large"),
    (b'{"v":true,"seq":0,"t0":1,"s":["t"],"r":[]}', "bad_version"),
    (b'{"v":1.0,"seq":0,"t0":1,"s":["t"],"r":[]}', "bad_version"),
]


@pytest.mark.parametrize(("payload", "reason"), MALFORMED_DATA)
def test_every_bad_batch_is_counted_under_its_reason(harness: Harness, payload: bytes, reason: str) -> None:
    harness.send(DATA, payload)
    assert harness.delta({}) == {"received": 1, "rejected": 1, f"rejected_{reason}": 1}
    assert harness.writer.lines == []


MALFORMED_STATUS = [
    (b"[" * 1000 + b"]" * 1000, "malformed"),  # the regression: RecursionError on CPython
    (b'{"v":1,"online":true,"counters":' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}", "malformed"),
    (b'{"v":1,"online":true,"error":"' + b"e" * 300 + b'"}', "malformed"),
    (b'{"v":1,"online":true,"online":false}', "malformed"),
    (b'{"v":1,"online":true,"counters":{"x":1' + b"0" * 100 + b"}}", "malformed"),
    (b'{"v":"1","online":true}', "bad_version"),
    (b" " * 3000, "too_large"),
]


@pytest.mark.parametrize(("payload", "reason"), MALFORMED_STATUS)
def test_every_bad_status_is_counted_under_its_reason(harness: Harness, payload: bytes, reason: str) -> None:
    harness.send(STATUS, payload)
    assert harness.delta({}) == {"status_received": 1, "rejected": 1, f"rejected_{reason}": 1}
    assert DEVICE not in harness.stats.status


def test_bad_topics_are_counted(harness: Harness) -> None:
    harness.send("fl/v1/Not Valid/data", good_batch())
    harness.send("fl/v1/Bad/status", encode_status(True))
    harness.send(f"fl/v1/{DEVICE}/other", good_batch())
    assert harness.delta({}) == {"received": 2, "status_received": 1, "rejected": 3, "rejected_bad_topic": 3}


def test_a_bug_costs_one_message_and_is_counted_as_internal_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> None:
        raise KeyError("boom\nforged line")

    monkeypatch.setattr(harness.registry, "sensor_names", broken)
    monkeypatch.setattr(harness.registry, "certificate_known", broken)
    with caplog.at_level(logging.ERROR, logger="fieldlink.ingest"):
        harness.send(DATA, good_batch())
        harness.send(STATUS, encode_status(True, None, None, CERT_ID))
    assert harness.delta({}) == {
        "received": 1,
        "status_received": 1,
        "rejected": 2,
        "rejected_internal_error": 1 + 1,
    }
    first = caplog.records[0].getMessage()
    assert first.startswith(f"failed to process a message on '{DATA}' (internal_error): KeyError: 'boom\\nforged line'")
    assert "forged line\n" not in first
    monkeypatch.undo()
    harness.send(DATA, good_batch(1))  # and the next message is stored
    assert harness.stats.counters["stored_messages"] == 1


def test_recursion_anywhere_in_handling_is_one_message(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def recurse(*_: Any) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(harness.registry, "status", recurse)
    harness.send(STATUS, encode_status(True))
    harness.send(DATA, good_batch())
    assert harness.stats.counters["rejected_internal_error"] == 2


def test_timestamps_in_the_future_and_too_old_are_refused(registry: Registry) -> None:
    h = Harness(registry, max_clock_skew_s=60, max_reading_age_s=3600)
    now = now_ms()
    h.send(DATA, good_batch(0, t0=now + 120_000))
    h.send(DATA, encode_batch(1, now, ["t"], [(0, 0, 1.0), (90_000, 0, 2.0)]))  # the newest is 90 s ahead
    h.send(DATA, good_batch(2, t0=now - 3_700_000))
    h.send(DATA, good_batch(3, t0=0))  # 1970
    h.send(DATA, b'{"v":1,"seq":4,"t0":0,"s":["t"],"r":[]}')  # even with no readings
    h.send(DATA, good_batch(5, t0=now - 3_500_000))
    assert h.delta({}) == {
        "received": 6,
        "rejected": 5,
        "rejected_clock_skew": 2,
        "rejected_too_old": 3,
        "stored_messages": 1,
        "stored_points": 1,
    }


def test_the_default_age_limit_is_thirty_days(registry: Registry) -> None:
    assert settings().max_reading_age_s == 30 * 24 * 3600
    verifier = Verifier(settings(), registry)
    now = now_ms()
    verifier.check(DATA, good_batch(t0=now - 29 * 86_400_000), now)
    with pytest.raises(Exception, match=r"31\.0 days in the past"):
        verifier.check(DATA, good_batch(t0=now - 31 * 86_400_000), now)


def test_sensor_names_are_bounded_per_device_and_the_bound_survives_a_restart(registry: Registry) -> None:
    h = Harness(registry, max_sensors_per_device=5)
    h.send(DATA, good_batch(0, ["a", "b", "c"]))
    h.send(DATA, good_batch(1, ["a", "d", "e"]))
    h.send(DATA, good_batch(2, ["f"]))  # the sixth name
    h.send(DATA, good_batch(3, ["a", "b", "c", "d", "e"]))  # known names keep passing
    # Names of failed reads only are not series: they do not count.
    h.send(DATA, encode_batch(4, now_ms(), ["g"], [(0, 0, None)]))
    assert h.delta({}) == {
        "received": 5,
        "rejected": 1,
        "rejected_too_many_sensors": 1,
        "stored_messages": 4,
        "stored_points": 11,
        "failed_reads": 1,
    }
    assert registry.sensor_names(DEVICE) == {"a", "b", "c", "d", "e"}
    again = Harness(registry, max_sensors_per_device=5)  # a restarted service
    again.send(DATA, good_batch(5, ["f"]))
    again.send(DATA, good_batch(6, ["e"]))
    assert again.delta({}) == {
        "received": 2,
        "rejected": 1,
        "rejected_too_many_sensors": 1,
        "stored_messages": 1,
        "stored_points": 1,
    }


def test_another_worker_adding_names_counts_against_the_bound(registry: Registry) -> None:
    h = Harness(registry, max_sensors_per_device=3)
    h.send(DATA, good_batch(0, ["a"]))
    registry.add_sensor_names(DEVICE, ["b", "c"])  # as another worker would
    h.send(DATA, good_batch(1, ["d"]))
    assert h.stats.counters["rejected_too_many_sensors"] == 1


def test_unknown_certificate_refuses_status_and_data_until_a_known_one_is_named(harness: Harness) -> None:
    harness.send(STATUS, encode_status(True, None, None, "0" * 16))
    harness.send(DATA, good_batch(0))
    assert harness.delta({}) == {
        "status_received": 1,
        "received": 1,
        "rejected": 2,
        "rejected_unknown_certificate": 2,
    }
    assert DEVICE not in harness.stats.status
    before = dict(harness.stats.counters)
    harness.send(STATUS, encode_status(True, None, None, "0" * 16))
    harness.send(STATUS, encode_status(True))  # naming none changes nothing
    harness.send(DATA, good_batch(1))
    assert harness.delta(before) == {
        "status_received": 2,
        "received": 1,
        "rejected": 2,
        "rejected_unknown_certificate": 2,
        "status_accepted": 1,
        "status_stored": 1,
    }
    before = dict(harness.stats.counters)
    harness.send(STATUS, encode_status(True, {"dropped": 1}, None, CERT_ID))
    harness.send(DATA, good_batch(2))
    assert harness.delta(before) == {
        "status_received": 1,
        "status_accepted": 1,
        "status_stored": 1,
        "received": 1,
        "stored_messages": 1,
        "stored_points": 1,
    }
    assert harness.stats.status[DEVICE] == {
        "online": True,
        "counters": {"dropped": 1},
        "error": None,
        "cert": CERT_ID,
        "t": None,
        "health": {},
    }
    device = harness.registry.get(DEVICE)
    assert device is not None and device.cert_in_use == SHA


def test_a_revoked_certificate_is_unknown(harness: Harness) -> None:
    harness.registry.revoke_certificates(DEVICE)
    harness.send(STATUS, encode_status(True, None, None, CERT_ID))
    assert harness.stats.counters["rejected_unknown_certificate"] == 1


def test_unregistered_and_revoked_devices(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fieldlink.ingest"):
        harness.send("fl/v1/ghost/data", good_batch())
        harness.send("fl/v1/ghost/status", encode_status(True))
        harness.registry.revoke(DEVICE)
        harness.send(DATA, good_batch())
    assert harness.delta({}) == {
        "received": 2,
        "status_received": 1,
        "rejected": 3,
        "rejected_unregistered": 2,
        "rejected_revoked": 1,
    }
    text = caplog.text
    assert "rejected message on 'fl/v1/ghost/data' (unregistered): device 'ghost' is not registered" in text
    assert "rejected status on 'fl/v1/ghost/status' (unregistered)" in text


def test_refusals_are_logged_once_a_minute_per_device_and_reason(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    harness.consumer.log_limiter = LogLimiter(60.0, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="fieldlink.ingest"):
        for _ in range(5):
            harness.send(DATA, b"{not json")
        harness.send(DATA, b"x" * 20000)  # another reason: logged
        harness.send("fl/v1/other/data", b"{not json")  # another device: logged
        clock[0] += 61
        harness.send(DATA, b"{not json")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0] == (
        f"rejected message on '{DATA}' (malformed): payload is not JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    )
    assert "(too_large)" in lines[1]
    assert "'fl/v1/other/data' (malformed)" in lines[2]
    assert lines[3].endswith("(4 more like it in the last minute not logged)")
    assert harness.stats.counters["rejected_malformed"] == 7  # every one counted all the same


def test_the_log_limiter_stays_bounded() -> None:
    clock = [0.0]
    limiter = LogLimiter(60.0, clock=lambda: clock[0], max_keys=10)
    for i in range(10):
        assert limiter.allow(("d", i)) == 0
    assert limiter.allow(("d", 0)) is None
    assert limiter.allow(("d", 99)) == 0  # over the bound: all still fresh, so all forgotten
    assert len(limiter._entries) == 1
    clock[0] = 100.0
    assert limiter.allow(("d", 99)) == 0


def test_device_text_is_escaped_in_the_log(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fieldlink.ingest"):
        harness.send(STATUS, encode_status(True, None, "x\n2026-01-01 CRITICAL forged"))
        harness.send("fl/v1/node\n2026-01-01 CRITICAL forged/data\x1b[2J" + "z" * 500, good_batch())
        harness.send(DATA, b'{"v":1,"seq":0,"t0":1,"s":["bad\\nname\\u001b[31m"],"r":[]}')
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"device {DEVICE} reports: x\\n2026-01-01 CRITICAL forged"
    assert harness.stats.status[DEVICE]["error"] == "x\n2026-01-01 CRITICAL forged"  # kept as sent
    for message in messages:
        assert "\n" not in message and "\x1b" not in message, message
        assert len(message) < 700, message
    assert "node\\n2026-01-01 CRITICAL forged/data\\x1b[2J" in messages[1]
    assert "more characters" in messages[1]


def test_escape() -> None:
    assert escape("plain text") == "plain text"
    assert escape("a\nb\rc\td\x00e\x1b\u2028\u202e\ud800") == "a\\nb\\rc\\td\\x00e\\x1b\\u2028\\u202e\\ud800"
    assert escape("é ü 温度") == "é ü 温度"
    assert escape("y" * 250) == "y" * 200 + "... (50 more characters)"


def test_healthz_answers_503_saying_why(registry: Registry) -> None:
    stats = Stats()
    response = Response()
    body = asyncio.run(healthz(stats, None, response, None))
    assert response.status_code == 503
    assert body["status"] == "unavailable" and body["mqtt_connected"] is False
    assert body["problems"] == ["the MQTT consumer is not running"]
    stats.consumer_running = True
    response = Response()
    body = asyncio.run(healthz(stats, None, response, None))
    assert response.status_code == 503 and body["problems"] == ["not connected to the MQTT broker"]
    stats.mqtt_connected = True
    stats.counters["received"] = 3
    response = Response()
    body = asyncio.run(healthz(stats, None, response, None))
    assert response.status_code != 503
    assert body == {
        "status": "ok",
        "mqtt_connected": True,
        "consumer_running": True,
        "problems": [],
        "counters": {"received": 3},
        "spool": None,
    }


class DyingConsumer:
    """Stands in for Consumer: its run() connects, then raises, a few times; then runs on."""

    def __init__(self, stats: Stats, deaths: int) -> None:
        self.stats = stats
        self.deaths = deaths
        self.runs = 0
        self.alive = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        self.stats.mqtt_connected = True
        await asyncio.sleep(0.01)
        if self.runs <= self.deaths:
            raise RuntimeError(f"death {self.runs}\nforged")
        self.alive.set()
        await asyncio.sleep(3600)


def test_the_supervisor_restarts_a_dying_consumer_and_healthz_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        stats = Stats()
        consumer = DyingConsumer(stats, deaths=3)
        task = asyncio.create_task(supervise(consumer, stats, first_backoff_s=0.05, max_backoff_s=0.1))  # type: ignore[arg-type]
        # While it waits to be restarted, the service is unhealthy and says why.
        for _ in range(200):
            await asyncio.sleep(0.005)
            if not stats.consumer_running:
                break
        response = Response()
        body = await healthz(stats, None, response, None)
        assert response.status_code == 503
        assert body["mqtt_connected"] is False and body["consumer_running"] is False
        assert body["problems"] == ["the MQTT consumer stopped (RuntimeError: death 1\\nforged) and is being restarted"]
        await asyncio.wait_for(consumer.alive.wait(), 5)
        assert consumer.runs == 4
        assert stats.counters["consumer_restarts"] == 3
        response = Response()
        body = await healthz(stats, None, response, None)
        assert response.status_code != 503 and body["status"] == "ok"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stats.consumer_running is False

    with caplog.at_level(logging.ERROR, logger="fieldlink.ingest"):
        asyncio.run(scenario())
    assert sum("the MQTT consumer stopped" in r.getMessage() for r in caplog.records) == 3


def test_the_service_reports_503_when_its_consumer_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real app and lifespan: a consumer whose run() fails at once is restarted, and /healthz says 503.
    from fastapi.testclient import TestClient

    from ingest import create_app
    from ingest._consumer import Consumer as RealConsumer

    async def failing_run(self: RealConsumer) -> None:
        raise OSError("no route to the broker")

    monkeypatch.setattr(RealConsumer, "run", failing_run)
    app = create_app(
        settings(registry_path=tmp_path / "r.db", influx_api="v1", allowed_hosts=["testserver"], admin_api=False)
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 5
        while client.get("/healthz").json()["counters"].get("consumer_restarts", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["mqtt_connected"] is False
        assert "OSError: no route to the broker" in json.dumps(response.json()["problems"])


class FailingWriter(FakeWriter):
    """InfluxDB down for the first `failures` writes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.on_failure: list[Any] = []

    async def write(self, body: bytes) -> None:
        from ingest import StorageError

        if self.failures:
            self.failures -= 1
            for hook in self.on_failure:
                hook()
            raise StorageError("connection refused")
        await super().write(body)


def test_a_device_revoked_while_its_message_waits_for_the_database_is_refused(registry: Registry) -> None:
    harness = Harness(registry, write_retry_max_s=0.01)
    writer = FailingWriter(failures=2)
    writer.on_failure.append(lambda: registry.revoke(DEVICE))  # revoked during the outage
    harness.consumer._storage._writer = writer
    before = dict(harness.stats.counters)
    harness.send(DATA, good_batch())
    assert writer.lines == []
    assert harness.delta(before) == {"received": 1, "write_retries": 1, "rejected": 1, "rejected_revoked": 1}


def test_a_registry_that_cannot_be_written_holds_the_message_instead_of_dropping_it(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    harness = Harness(registry, write_retry_max_s=0.01)
    failures = [sqlite3.OperationalError("database is locked")] * 2
    real = Registry.add_sensor_names

    def flaky(self: Registry, device_id: str, names: Any) -> None:
        if failures:
            raise failures.pop()
        real(self, device_id, names)

    monkeypatch.setattr(Registry, "add_sensor_names", flaky)
    before = dict(harness.stats.counters)
    harness.send(DATA, good_batch(sensors=["fresh"]))
    assert len(harness.writer.lines) == 1
    delta = harness.delta(before)
    assert (delta["received"], delta["registry_retries"], delta["stored_messages"]) == (1, 2, 1)
    assert "rejected" not in delta
