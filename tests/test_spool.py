"""The service's spool: the record format, torn records cut at every byte, the bound, the lock; and the
pipeline with a spool during a database outage (fsync before the acknowledgement, the write-back in
order, revocation and refusals at write-back), in-process with a fake database writer."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from ingest import Registry, RejectedMessage, SpoolError, SpoolFull
from ingest._consumer import Consumer, Pipeline, Stats
from ingest._settings import Settings
from ingest._spool import HEADER_BYTES, Spool, encode_record
from ingest._storage import Storage
from tests.test_pipeline import DEVICES, Writer, acks_by_device, bad, data, registry, until

__all__ = ["registry"]  # the fixture, shared with test_pipeline


def bodies(n: int, size: int = 20) -> list[bytes]:
    return [f"record-{i:04d}-".encode().ljust(size, b"x") for i in range(n)]


def read_all(spool: Spool) -> list[bytes]:
    out = []
    while (body := spool.peek()) is not None:
        out.append(body)
        spool.pop()
    return out


def test_records_come_back_in_order_across_segments_and_read_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    written = bodies(12)
    for body in written:
        spool.append(body)
    segments = sorted(tmp_path.glob("*.spool"))
    assert len(segments) == 4  # three 32-byte records per 100-byte segment
    assert spool.records == 12 and spool.disk_bytes == 12 * (HEADER_BYTES + 20)
    assert [spool.peek(), spool.peek()] == [written[0], written[0]]  # peek does not consume
    assert read_all(spool) == written
    assert spool.records == 0
    # Every segment read to its end is gone, the one being appended to too (it was over half full).
    assert sorted(tmp_path.glob("*.spool")) == []
    spool.append(b"after")
    assert read_all(spool) == [b"after"]


def test_records_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    written = bodies(5)
    for body in written:
        spool.append(body)
    assert spool.peek() == written[0]
    spool.pop()
    spool.close()  # the process ends (a crash would leave the same files: every append is fsynced)
    again = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    # The popped record's segment still holds its partner, so the segment is read again from its start:
    # written back twice, which a point's identity makes an overwrite.
    assert again.recovery.torn_records == 0
    assert read_all(again) == written[:]
    again.append(b"new")
    assert read_all(again) == [b"new"]


def test_a_torn_last_record_is_cut_at_every_byte_and_the_records_before_it_are_kept(tmp_path: Path) -> None:
    written = bodies(3)
    whole = b"".join(encode_record(body) for body in written)
    last_start = len(whole) - len(encode_record(written[-1]))
    for cut in range(last_start + 1, len(whole)):  # a crash at every byte of the last record's write
        folder = tmp_path / f"cut-{cut}"
        folder.mkdir()
        (folder / "000000000001.spool").write_bytes(whole[:cut])
        spool = Spool(folder, max_bytes=10_000)
        assert spool.recovery.torn_records == 1 and spool.recovery.torn_bytes == cut - last_start
        assert spool.recovery.records == 2
        assert (folder / "000000000001.spool").stat().st_size == last_start
        spool.append(b"next")  # appends go on after the kept records
        assert read_all(spool) == [*written[:2], b"next"]
        spool.close()


@pytest.mark.parametrize("where", ["magic", "length", "crc", "body"])
def test_a_damaged_record_ends_its_segment(tmp_path: Path, where: str) -> None:
    written = bodies(3)
    data_ = bytearray(b"".join(encode_record(body) for body in written))
    second = len(encode_record(written[0]))
    offset = {"magic": 0, "length": 4, "crc": 8, "body": HEADER_BYTES + 3}[where]
    data_[second + offset] ^= 0x40
    (tmp_path / "000000000001.spool").write_bytes(bytes(data_))
    spool = Spool(tmp_path, max_bytes=10_000)
    assert spool.recovery.torn_records == 1
    assert read_all(spool) == written[:1]


def test_an_empty_or_foreign_file_is_harmless(tmp_path: Path) -> None:
    (tmp_path / "000000000001.spool").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a segment")
    (tmp_path / "abc.spool").write_bytes(b"junk")
    spool = Spool(tmp_path, max_bytes=10_000)
    assert spool.records == 0 and not (tmp_path / "000000000001.spool").exists()
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "abc.spool").exists()


def test_the_bound_refuses_a_record_whole_and_frees_space_as_segments_are_read(tmp_path: Path) -> None:
    record = HEADER_BYTES + 20
    spool = Spool(tmp_path, max_bytes=8 * record, segment_bytes=2 * record)
    for body in bodies(8):
        spool.append(body)
    with pytest.raises(SpoolFull):
        spool.append(b"x" * 20)
    assert spool.records == 8 and spool.disk_bytes == 8 * record  # nothing of the refused one on disk
    assert sum(p.stat().st_size for p in tmp_path.glob("*.spool")) == 8 * record
    spool.peek()
    spool.pop()
    with pytest.raises(SpoolFull):  # its segment still holds an unread record
        spool.append(b"x" * 20)
    spool.peek()
    spool.pop()
    spool.append(b"y" * 20)
    assert spool.records == 7


def test_one_process_owns_a_folder(tmp_path: Path) -> None:
    first = Spool(tmp_path, max_bytes=1000)
    with pytest.raises(SpoolError, match="in use by another ingest process"):
        Spool(tmp_path, max_bytes=1000)
    first.close()
    Spool(tmp_path, max_bytes=1000).close()


def test_an_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match="cannot use the spool folder"):
        Spool(blocker / "spool", max_bytes=1000)


def test_a_failed_fsync_leaves_no_record(tmp_path: Path) -> None:
    failing = [True]

    def fsync(fd: int) -> None:
        if failing[0]:
            raise OSError(28, "No space left on device")
        os.fsync(fd)

    spool = Spool(tmp_path, max_bytes=10_000, fsync=fsync)
    failing[0] = False
    spool.append(b"first")
    failing[0] = True
    with pytest.raises(SpoolError, match="No space left"):
        spool.append(b"second")
    failing[0] = False
    spool.append(b"third")
    spool.close()
    assert read_all(Spool(tmp_path, max_bytes=10_000)) == [b"first", b"third"]


# --- the pipeline with a spool ---------------------------------------------------------------------


class SpoolRig:
    """A pipeline with a spool and the replay task, its acknowledgements recorded."""

    def __init__(self, registry: Registry, folder: Path, fsync: Any = os.fsync, **overrides: Any) -> None:
        settings = Settings(mqtt_tls=False, write_retry_max_s=0.02, spool_after_s=0.2, **overrides)
        self.stats = Stats()
        self.writer = Writer()
        self.spool = Spool(folder, settings.spool_max_bytes, fsync=fsync)
        self.storage = Storage(
            self.writer,
            self.spool,
            self.stats.counters,
            spool_after_s=settings.spool_after_s,
            retry_max_s=settings.write_retry_max_s,
            is_active=registry.is_active,
        )
        self.consumer = Consumer(settings, registry, self.writer, self.stats, self.storage)
        self.acks: list[int] = []
        self.sent = 0

    async def submit(self, pipeline: Pipeline, message: tuple[str, bytes]) -> None:
        token = self.sent
        self.sent += 1
        await pipeline.submit(*message, token)

    def run(self, scenario: Any) -> None:
        async def main() -> None:
            replay = asyncio.create_task(self.storage.replay())
            try:
                async with self.consumer.pipeline(self.acks.append) as pipeline:
                    await asyncio.wait_for(scenario(pipeline), 10)
            finally:
                replay.cancel()
                await asyncio.gather(replay, return_exceptions=True)

        asyncio.run(main())


def test_an_outage_spools_and_acknowledges_then_writes_back_in_order(registry: Registry, tmp_path: Path) -> None:
    rig = SpoolRig(registry, tmp_path, write_batch_points=2)
    told: list[tuple[str, bytes]] = []
    rig.consumer.device_acks = lambda topic, payload: told.append((topic, payload))

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.failures = 10**6  # InfluxDB down
        for seq in range(10):
            await rig.submit(pipeline, data(DEVICES[seq % 2], seq))
        await rig.submit(pipeline, bad())
        await until(lambda: rig.acks == list(range(11)))  # acknowledged: they are on disk
        # The devices are told too: a spooled batch is stored as far as they are concerned.
        assert acks_by_device(told) == {
            "node-a": {"stored": [0, 2, 4, 6, 8], "refused": []},
            "node-b": {"stored": [1, 3, 5, 7, 9], "refused": []},
        }
        assert rig.writer.lines == []
        assert rig.spool.records == 5 and rig.storage.outage
        assert rig.stats.counters["spooled_points"] == 10 and rig.stats.counters["stored_messages"] == 10
        assert rig.stats.counters["stored_points"] == 0  # not in InfluxDB yet
        rig.writer.failures = 0  # InfluxDB back: the replay's next probe writes the spool back
        await until(lambda: rig.spool.records == 0 and not rig.storage.outage)
        await rig.submit(pipeline, data("node-a", 10))  # new data goes straight to InfluxDB
        await pipeline.drain()

    rig.run(scenario)
    values = [float(line.split("value=")[1].split()[0]) for line in rig.writer.lines]
    assert values == [float(seq) for seq in range(11)]  # written back in order, each once
    assert rig.stats.counters["stored_points"] == 11
    assert rig.stats.counters["spool_replayed_points"] == 10
    assert rig.stats.counters["spool_replayed_batches"] == 5


def test_no_message_is_acknowledged_before_its_record_is_fsynced(registry: Registry, tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the record's fsync, not the folder's
            entered.set()
            release.wait(5)
        os.fsync(fd)

    rig = SpoolRig(registry, tmp_path, fsync=slow_fsync, write_batch_points=1)

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.failures = 10**6
        await rig.submit(pipeline, data("node-a", 0))
        await until(entered.is_set)
        await asyncio.sleep(0.05)
        assert rig.acks == []  # the record is written but not yet durable
        release.set()
        await until(lambda: rig.acks == [0])

    rig.run(scenario)
    rig.spool.close()
    assert len(read_all(Spool(tmp_path, max_bytes=1024**2))) == 1


def test_a_full_spool_holds_the_messages_unacknowledged_until_influxdb_answers(
    registry: Registry, tmp_path: Path
) -> None:
    rig = SpoolRig(registry, tmp_path, write_batch_points=1, spool_max_bytes=400, max_unacked_messages=4)

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.failures = 10**6

        async def feed() -> None:
            for seq in range(12):
                await rig.submit(pipeline, data("node-a", seq))

        feeder = asyncio.create_task(feed())
        await until(lambda: rig.stats.counters["spool_full"] >= 2)
        spooled = rig.spool.records
        assert 0 < spooled < 12 and rig.acks == list(range(spooled))  # the rest wait, in the window
        assert rig.storage.problems() and not feeder.done()
        rig.writer.failures = 0
        await feeder
        await pipeline.drain()
        await until(lambda: rig.spool.records == 0)

    rig.run(scenario)
    assert rig.acks == list(range(12))
    assert sorted(float(line.split("value=")[1].split()[0]) for line in rig.writer.lines) == [
        float(seq) for seq in range(12)
    ]
    assert rig.stats.counters["stored_points"] == 12 and not rig.storage.problems()


def test_a_device_revoked_during_the_outage_gets_nothing_written_back(registry: Registry, tmp_path: Path) -> None:
    rig = SpoolRig(registry, tmp_path, write_batch_points=4)

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.failures = 10**6
        for seq in range(4):
            await rig.submit(pipeline, data(DEVICES[seq % 2], seq))
        await until(lambda: rig.spool.records == 1)
        registry.revoke("node-a")
        rig.writer.failures = 0
        await until(lambda: rig.spool.records == 0)

    rig.run(scenario)
    assert len(rig.writer.lines) == 2 and all("device=node-b," in line for line in rig.writer.lines)
    assert rig.stats.counters["spool_revoked_points"] == 2


def test_points_influxdb_refuses_at_write_back_cost_only_themselves(registry: Registry, tmp_path: Path) -> None:
    rig = SpoolRig(registry, tmp_path, write_batch_points=8)

    async def scenario(pipeline: Pipeline) -> None:
        rig.writer.failures = 10**6
        for seq in range(8):
            await rig.submit(pipeline, data(DEVICES[seq % 2], seq))
        await until(lambda: rig.spool.records == 1)
        rig.writer.refuse = "node-b"
        rig.writer.failures = 0
        await until(lambda: rig.spool.records == 0)

    rig.run(scenario)
    assert sorted(rig.writer.lines) == sorted(line for line in rig.writer.lines if "device=node-a," in line)
    assert len(rig.writer.lines) == 4
    assert rig.stats.counters["spool_refused_points"] == 4 and rig.stats.counters["stored_points"] == 4


def test_a_clean_stop_stores_or_spools_what_it_holds_and_acknowledges_it(registry: Registry, tmp_path: Path) -> None:
    rig = SpoolRig(registry, tmp_path, write_batch_points=5000, write_batch_ms=60_000)

    async def main() -> None:
        rig.writer.failures = 10**6

        async def consume() -> None:
            async with rig.consumer.pipeline(rig.acks.append) as pipeline:
                for seq in range(3):
                    await rig.submit(pipeline, data("node-a", seq))
                await asyncio.sleep(3600)  # waiting for the next message when SIGTERM comes

        task = asyncio.create_task(consume())
        await until(lambda: rig.sent == 3)
        assert rig.acks == []  # the batch is open: neither full nor old
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert rig.acks == [0, 1, 2] and rig.spool.records == 1


def test_a_stop_while_nothing_can_store_acknowledges_nothing(registry: Registry, tmp_path: Path) -> None:
    rig = SpoolRig(registry, tmp_path, spool_max_bytes=0, write_batch_points=1)
    rig.storage.spool = None  # the spool is off: an outage holds the messages

    async def main() -> None:
        rig.writer.failures = 10**6

        async def consume() -> None:
            pipeline = Pipeline(
                rig.consumer, rig.acks.append, window=10, batch_points=1, batch_ms=10, stop_timeout_s=0.3
            )
            async with pipeline:
                for seq in range(3):
                    await rig.submit(pipeline, data("node-a", seq))
                await asyncio.sleep(3600)

        task = asyncio.create_task(consume())
        await until(lambda: rig.stats.counters["write_retries"] >= 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert rig.acks == [] and rig.writer.lines == []


def test_a_segment_damaged_under_the_write_back_costs_only_its_own_records(registry: Registry, tmp_path: Path) -> None:
    rig = SpoolRig(registry, tmp_path / "unused", write_batch_points=1)
    spool = Spool(tmp_path / "spool", max_bytes=10_000, segment_bytes=200)
    rig.storage.spool = spool
    for seq in range(6):  # two segments of three records
        spool.append(f"readings,device=node-a,sensor=t value={seq}.0 {seq}".encode())
    first = sorted((tmp_path / "spool").glob("*.spool"))[0]
    first.write_bytes(first.read_bytes()[:-1] + b"!")  # changed on disk, not by us

    async def scenario(pipeline: Pipeline) -> None:
        await until(lambda: spool.records == 0)

    rig.run(scenario)
    assert [line.split("value=")[1].split()[0] for line in rig.writer.lines] == ["0.0", "1.0", "3.0", "4.0", "5.0"]
    assert rig.stats.counters["spool_damaged_records"] == 1
    aside = first.with_suffix(".damaged")  # set aside for a person to look at, never deleted
    assert aside.exists() and not first.exists() and aside.read_bytes().endswith(b"!")


def test_a_disk_that_cannot_be_read_for_a_while_costs_nothing(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = SpoolRig(registry, tmp_path / "unused", write_batch_points=1)
    spool = Spool(tmp_path / "spool", max_bytes=10_000, segment_bytes=200)
    rig.storage.spool = spool
    for seq in range(6):
        spool.append(f"readings,device=node-a,sensor=t value={seq}.0 {seq}".encode())
    failures = [5]
    real_open = Path.open

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.suffix == ".spool" and failures[0]:
            failures[0] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)

    async def scenario(pipeline: Pipeline) -> None:
        await until(lambda: spool.records == 0)

    rig.run(scenario)
    assert [line.split("value=")[1].split()[0] for line in rig.writer.lines] == [f"{seq}.0" for seq in range(6)]
    assert rig.stats.counters["spool_read_errors"] == 5 and rig.stats.counters["spool_damaged_records"] == 0
    assert not list((tmp_path / "spool").glob("*.damaged"))


def test_a_bug_in_the_write_back_keeps_the_record_and_goes_on(registry: Registry, tmp_path: Path) -> None:
    rig = SpoolRig(registry, tmp_path, write_batch_points=1)
    rig.spool.append(b"readings,device=node-a,sensor=t value=1.0 1")
    real = rig.storage._active_lines
    bugs = [RuntimeError("a bug"), KeyError("another")]

    def buggy(body: bytes) -> Any:
        if bugs:
            raise bugs.pop()
        return real(body)

    rig.storage._active_lines = buggy  # type: ignore[method-assign]

    async def scenario(pipeline: Pipeline) -> None:
        await until(lambda: rig.spool.records == 0)

    rig.run(scenario)
    assert rig.writer.lines == ["readings,device=node-a,sensor=t value=1.0 1"]
    assert rig.stats.counters["spool_replay_errors"] == 2


def test_a_partial_write_at_write_back_is_not_searched(registry: Registry, tmp_path: Path) -> None:
    # InfluxDB stored the other points and says how many it dropped (beyond the retention policy):
    # nothing to halve, however many there are.
    rig = SpoolRig(registry, tmp_path, write_batch_points=1)
    rig.spool.append(b"\n".join(f"readings,device=node-a,sensor=t value=1.0 {t}".encode() for t in range(5000)))
    calls: list[int] = []

    async def partial(body: bytes) -> None:
        calls.append(body.count(b"\n") + 1)
        raise RejectedMessage(
            "storage_rejected", "partial write: points beyond retention policy dropped=4990", dropped=4990
        )

    rig.writer.write = partial  # type: ignore[method-assign]

    async def scenario(pipeline: Pipeline) -> None:
        await until(lambda: rig.spool.records == 0)

    rig.run(scenario)
    assert calls == [5000]
    assert rig.stats.counters["spool_refused_points"] == 4990 and rig.stats.counters["stored_points"] == 10


def test_an_append_the_disk_refuses_in_every_way_is_a_spool_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)

    def eio(*_: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    def erofs(*_: Any, **__: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(os, "write", eio)
        m.setattr(Path, "unlink", erofs)
        with pytest.raises(SpoolError, match="Input/output error"):
            spool.append(b"lost")
    spool.append(b"kept")
    assert read_all(spool) == [b"kept"]
