"""The pipelined consumer: batches, the writer task, the window and the order of acknowledgements, in-process
against a real SQLite registry and a fake database writer that can be slow, fail and refuse."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ingest import Issued, Registry, RejectedMessage, Settings, StorageError
from ingest._consumer import Consumer, Pipeline, Stats
from shared.protocol import encode_batch, encode_status

DEVICES = ["node-a", "node-b"]


def now_ms() -> int:
    return int(time.time() * 1000)


def data(device: str, seq: int, points: int = 1) -> tuple[str, bytes]:
    t0 = now_ms()
    return f"fl/v1/{device}/data", encode_batch(seq, t0, ["t"], [(i, 0, float(seq)) for i in range(points)])


def bad(device: str = "node-a") -> tuple[str, bytes]:
    return f"fl/v1/{device}/data", b"{not json"


class Writer:
    """A database that can be slow (`gate` closed), down (`failures` writes fail) and refuse the points
    of one device (`refuse`)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = 0
        self.on_failure: list[Callable[[], None]] = []
        self.refuse: str | None = None
        self.bodies: list[list[str]] = []
        self.lines: list[str] = []

    async def write(self, body: bytes) -> None:
        await self.gate.wait()
        lines = body.decode().split("\n")
        if self.failures:
            self.failures -= 1
            for hook in self.on_failure:
                hook()
            raise StorageError("connection refused")
        if self.refuse is not None and any(f"device={self.refuse}," in line for line in lines):
            raise RejectedMessage("storage_rejected", "field type conflict")
        self.bodies.append(lines)
        self.lines += lines

    async def close(self) -> None:
        pass


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry.db")
    for i, device in enumerate(DEVICES):
        registry.add(device, Issued(serial=f"a{i}", sha256=f"{i:02x}" * 32, not_after=0.0))
    return registry


class Rig:
    """A pipeline whose acknowledgements are recorded, each checked against what the writer stored."""

    def __init__(self, registry: Registry, **overrides: Any) -> None:
        self.stats = Stats()
        self.writer = Writer()
        settings = Settings(mqtt_tls=False, write_retry_max_s=0.01, **overrides)
        self.consumer = Consumer(settings, registry, self.writer, self.stats)
        self.acks: list[int] = []
        self.sent: dict[int, tuple[str, bytes]] = {}
        self.max_unacked = 0
        self.pipeline: Pipeline | None = None

    def ack(self, token: int) -> None:
        assert token in self.sent
        self.acks.append(token)

    async def submit(self, pipeline: Pipeline, message: tuple[str, bytes]) -> int:
        token = len(self.sent)
        self.sent[token] = message
        await pipeline.submit(*message, token)
        self.max_unacked = max(self.max_unacked, pipeline.unacked)
        return token

    def run(self, scenario: Callable[[Pipeline], Awaitable[None]]) -> None:
        async def main() -> None:
            async with self.consumer.pipeline(self.ack) as pipeline:
                await asyncio.wait_for(scenario(pipeline), 10)

        asyncio.run(main())


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.005)


def test_acks_leave_in_receive_order_and_only_after_their_batch_is_stored(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=3, write_batch_ms=20)
    stored_at_ack: list[bool] = []
    record = rig.ack

    def ack(token: int) -> None:
        topic, payload = rig.sent[token]
        if topic.endswith("/data"):
            device, seq = topic.split("/")[2], json.loads(payload)["seq"]
            stored_at_ack.append(f"device={device},sensor=t value={float(seq)!r}" in " ".join(rig.writer.lines))
        record(token)

    rig.ack = ack  # type: ignore[method-assign]

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.gate.clear()  # a slow database
        for seq in range(8):
            await rig.submit(pipeline, data(DEVICES[seq % 2], seq))
        await rig.submit(pipeline, ("fl/v1/node-a/status", encode_status(True)))
        await asyncio.sleep(0.1)
        assert rig.acks == []  # nothing is stored yet, so nothing is acknowledged
        assert rig.stats.counters["status_accepted"] == 1
        rig.writer.gate.set()
        await pipeline.drain()

    rig.run(scenario)
    assert rig.acks == list(range(9))
    assert len(stored_at_ack) == 8 and all(stored_at_ack)
    # Batches of N points, then by age; the status's health point joins the last.
    assert [len(body) for body in rig.writer.bodies] == [3, 3, 3]
    assert rig.writer.bodies[-1][-1].startswith("health,device=node-a online=true ")
    assert rig.stats.counters["stored_messages"] == 8 and rig.stats.counters["stored_points"] == 8
    assert set(rig.stats.latest) == set(DEVICES)


def test_a_rejected_message_between_stored_ones_is_acked_in_order(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=1)

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.gate.clear()
        await rig.submit(pipeline, data("node-a", 0))
        await rig.submit(pipeline, bad())
        await rig.submit(pipeline, data("node-b", 1))
        await asyncio.sleep(0.05)
        # The refusal is counted at once, but not acknowledged ahead of the message still being written.
        assert rig.stats.counters["rejected_malformed"] == 1
        assert rig.acks == []
        rig.writer.gate.set()
        await pipeline.drain()

    rig.run(scenario)
    assert rig.acks == [0, 1, 2]
    assert rig.stats.counters["stored_messages"] == 2


def test_the_window_bounds_unacked_messages(registry: Registry) -> None:
    # Neither the point count nor the age would send the batch: a full window does.
    rig = Rig(registry, max_unacked_messages=5, write_batch_points=1000, write_batch_ms=60_000)

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.gate.clear()

        async def feed() -> None:
            for seq in range(20):
                await rig.submit(pipeline, data(DEVICES[seq % 2], seq) if seq % 3 else bad())

        feeder = asyncio.create_task(feed())
        await asyncio.sleep(0.1)
        assert pipeline.unacked == 5 and not feeder.done()  # it waits for the window
        assert rig.acks == [0]  # a refusal with nothing before it is acknowledged at once
        assert len(rig.sent) == 7  # the seventh message waits to be taken
        rig.writer.gate.set()
        await feeder
        await pipeline.drain()

    rig.run(scenario)
    assert rig.max_unacked <= 5
    assert rig.acks == list(range(20))
    assert rig.stats.counters["stored_messages"] + rig.stats.counters["rejected"] == 20


def test_a_flood_of_rejected_messages_never_stalls_the_pipeline(registry: Registry) -> None:
    rig = Rig(registry, max_unacked_messages=10, write_batch_ms=10)

    async def scenario(pipeline: Pipeline) -> None:
        for i in range(3000):
            await rig.submit(pipeline, data("node-a", i) if i % 500 == 499 else bad())
        await pipeline.drain()

    rig.run(scenario)
    assert rig.acks == list(range(3000))
    assert rig.stats.counters["rejected_malformed"] == 2994
    assert rig.stats.counters["stored_messages"] == 6


def test_a_batch_is_written_at_n_points(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=10, write_batch_ms=60_000)

    async def scenario(pipeline: Pipeline) -> None:
        for seq in range(3):
            await rig.submit(pipeline, data("node-a", seq, points=4))
        await until(lambda: len(rig.writer.bodies) == 1)
        assert len(rig.writer.bodies[0]) == 12  # three messages: the third passes 10 points
        assert rig.acks == [0, 1, 2]
        await rig.submit(pipeline, data("node-a", 3, points=4))
        await asyncio.sleep(0.05)
        assert len(rig.writer.bodies) == 1 and rig.acks == [0, 1, 2]  # neither full nor old yet

    rig.run(scenario)


def test_a_batch_is_written_at_t_ms(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=5000, write_batch_ms=100)

    async def scenario(pipeline: Pipeline) -> None:
        started = time.monotonic()
        await rig.submit(pipeline, data("node-a", 0))
        await rig.submit(pipeline, data("node-b", 1))
        await asyncio.sleep(0.03)
        assert rig.writer.bodies == [] and rig.acks == []
        await until(lambda: rig.acks == [0, 1])
        assert time.monotonic() - started >= 0.09
        assert len(rig.writer.bodies) == 1 and len(rig.writer.bodies[0]) == 2  # one write for both

    rig.run(scenario)


def test_a_database_outage_holds_every_later_ack_until_the_batch_is_stored(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=2)

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.failures = 3
        await rig.submit(pipeline, data("node-a", 0))
        await rig.submit(pipeline, data("node-b", 1))  # the batch is full: written, and refused
        await rig.submit(pipeline, bad())
        await rig.submit(pipeline, ("fl/v1/node-a/status", encode_status(True)))
        await until(lambda: rig.stats.counters["write_retries"] >= 1)
        assert rig.acks == []
        await pipeline.drain()

    rig.run(scenario)
    assert rig.stats.counters["write_retries"] == 3
    assert rig.acks == [0, 1, 2, 3]
    assert len(rig.writer.lines) == 3  # two readings and the status's health point


def test_a_device_revoked_during_a_write_outage_gets_nothing_stored(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=4)
    rig.writer.on_failure.append(lambda: registry.revoke("node-a"))

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.failures = 2
        for seq in range(4):
            await rig.submit(pipeline, data(DEVICES[seq % 2], seq))
        await pipeline.drain()

    rig.run(scenario)
    assert rig.writer.lines and all("device=node-b," in line for line in rig.writer.lines)
    assert len(rig.writer.lines) == 2
    assert rig.stats.counters["rejected_revoked"] == 2
    assert rig.stats.counters["stored_messages"] == 2
    assert "node-a" not in rig.stats.latest
    assert rig.acks == [0, 1, 2, 3]


def test_points_the_database_refuses_cost_only_their_own_message(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=4)
    rig.writer.refuse = "node-b"

    async def scenario(pipeline: Pipeline) -> None:
        for seq in range(4):
            await rig.submit(pipeline, data(DEVICES[seq % 2], seq))
        await pipeline.drain()

    rig.run(scenario)
    assert len(rig.writer.lines) == 2 and all("device=node-a," in line for line in rig.writer.lines)
    assert rig.stats.counters["rejected_storage_rejected"] == 2
    assert rig.stats.counters["stored_messages"] == 2
    assert rig.acks == [0, 1, 2, 3]


def test_a_dead_writer_ends_the_receive_loop(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    # The supervisor restarts a consumer whose run() raised; a pipeline must never just hang.
    rig = Rig(registry, max_unacked_messages=2, write_batch_points=1)

    async def broken(self: Consumer, batch: list[Any]) -> None:
        raise RuntimeError("writer bug")

    monkeypatch.setattr(Consumer, "store", broken)

    async def scenario(pipeline: Pipeline) -> None:
        with pytest.raises(RuntimeError, match="writer stopped"):
            for seq in range(5):
                await rig.submit(pipeline, data("node-a", seq))

    rig.run(scenario)
    assert rig.acks == []


def acks_by_device(sent: list[tuple[str, bytes]]) -> dict[str, dict[str, list[int]]]:
    """What the devices were told on their ack topics, merged per device."""
    told: dict[str, dict[str, list[int]]] = {}
    for topic, payload in sent:
        root, version, device, kind = topic.split("/")
        assert (root, version, kind) == ("fl", "v1", "ack")
        body = json.loads(payload)
        assert body["v"] == 1
        entry = told.setdefault(device, {"stored": [], "refused": []})
        for key in ("stored", "refused"):
            entry[key] += body.get(key, [])
    return told


def test_devices_are_told_which_batches_are_stored_and_which_refused(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=3)
    sent: list[tuple[str, bytes]] = []
    rig.consumer.device_acks = lambda topic, payload: sent.append((topic, payload))
    rig.writer.refuse = "node-b"  # InfluxDB refuses node-b's points: refused for good
    registry.add("node-c", Issued(serial="c", sha256="cc" * 32, not_after=0.0))

    async def scenario(pipeline: Pipeline) -> None:
        await rig.submit(pipeline, data("node-a", 0))
        await rig.submit(pipeline, data("node-a", 1))
        await rig.submit(pipeline, ("fl/v1/node-c/data", encode_batch(5, 1000, ["t"], [(0, 0, 1.0)])))  # 1970
        await rig.submit(pipeline, bad("node-a"))  # no sequence to name: nothing to tell
        await rig.submit(pipeline, data("node-b", 2))
        registry.revoke("node-c")
        await rig.submit(pipeline, data("node-c", 6))  # not trusted any more: told nothing
        await rig.submit(pipeline, data("node-a", 3))
        await pipeline.drain()

    rig.run(scenario)
    assert acks_by_device(sent) == {
        "node-a": {"stored": [0, 1, 3], "refused": []},
        "node-b": {"stored": [], "refused": [2]},
        "node-c": {"stored": [], "refused": [5]},
    }
    assert rig.stats.counters["rejected_too_old"] == 1 and rig.stats.counters["rejected_revoked"] == 1


def test_nothing_is_told_before_the_batch_is_stored(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=1)
    sent: list[tuple[str, bytes]] = []
    rig.consumer.device_acks = lambda topic, payload: sent.append((topic, payload))

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.failures = 2
        await rig.submit(pipeline, data("node-a", 7))
        await until(lambda: rig.stats.counters["write_retries"] >= 1)
        assert sent == []
        await pipeline.drain()

    rig.run(scenario)
    assert acks_by_device(sent) == {"node-a": {"stored": [7], "refused": []}}


def test_a_status_is_stored_as_a_health_point_at_the_devices_time(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=1000, write_batch_ms=10)
    t = now_ms() - 5000
    report = {"dropped": 2, "queued": 1}
    health = {"uptime_s": 60, "rssi_dbm": -67, "reset_cause": "watchdog", "ntp": "synced", "fw": "0.2.0"}
    with_time = json.dumps({"v": 1, "online": True, "t": t, "counters": report, "health": health}).encode()
    far_future = json.dumps({"v": 1, "online": False, "t": now_ms() + 10**9}).encode()

    async def scenario(pipeline: Pipeline) -> None:
        await rig.submit(pipeline, ("fl/v1/node-a/status", with_time))
        await rig.submit(pipeline, ("fl/v1/node-b/status", far_future))  # its time is not trusted: now
        await pipeline.drain()

    before = now_ms()
    rig.run(scenario)
    first, second = rig.writer.lines
    assert first == (
        "health,device=node-a online=true,dropped=2i,queued=1i,"
        f'fw="0.2.0",ntp="synced",reset_cause="watchdog",rssi_dbm=-67i,uptime_s=60i {t}'
    )
    fields, stamp = second.rsplit(" ", 1)
    assert fields == "health,device=node-b online=false" and before <= int(stamp) <= now_ms()
    assert rig.stats.counters["status_stored"] == 2 and rig.acks == [0, 1]
    assert rig.stats.status["node-a"]["health"] == health


def test_a_retained_status_without_a_time_of_its_own_is_not_stored_again(registry: Registry) -> None:
    rig = Rig(registry, write_batch_points=1000, write_batch_ms=10)
    t = now_ms() - 5000
    will = json.dumps({"v": 1, "online": False}).encode()
    timed = json.dumps({"v": 1, "online": True, "t": t}).encode()

    async def scenario(pipeline: Pipeline) -> None:
        await pipeline.submit("fl/v1/node-a/status", will, 0)  # live: stored at receipt
        await pipeline.submit("fl/v1/node-a/status", will, 1, retained=True)  # the broker's copy: not again
        await pipeline.submit("fl/v1/node-b/status", timed, 2, retained=True)  # its own time: an overwrite
        await pipeline.drain()

    rig.sent.update({0: ("", b""), 1: ("", b""), 2: ("", b"")})
    rig.run(scenario)
    assert [line.split(" ")[0] for line in rig.writer.lines] == ["health,device=node-a", "health,device=node-b"]
    assert rig.writer.lines[1].endswith(f" {t}")
    assert rig.stats.counters["status_accepted"] == 3 and rig.stats.counters["status_stored"] == 2
    assert rig.acks == [0, 1, 2]


def test_only_the_worker_that_stores_health_stores_statuses(registry: Registry) -> None:
    rig = Rig(registry, store_health=False, write_batch_ms=10)

    async def scenario(pipeline: Pipeline) -> None:
        await rig.submit(pipeline, ("fl/v1/node-a/status", encode_status(True)))
        await pipeline.drain()

    rig.run(scenario)
    assert rig.writer.lines == [] and rig.acks == [0]
    assert rig.stats.status["node-a"]["online"] is True  # still known to this worker's API and checks


def test_qos0_messages_beyond_the_window_are_dropped_and_counted_qos1_never() -> None:
    from collections import Counter

    from ingest._consumer import incoming_queue

    class Message:
        def __init__(self, qos: int) -> None:
            self.qos = qos

    counters: Counter[str] = Counter()
    queue = incoming_queue(counters, 3)()
    for _ in range(5):
        queue.put_nowait(Message(0))
    for _ in range(4):
        queue.put_nowait(Message(1))
    queue.put_nowait(Message(0))
    assert [queue.get_nowait().qos for _ in range(queue.qsize())] == [0, 0, 0, 1, 1, 1, 1]
    assert counters["dropped_qos0"] == 3
