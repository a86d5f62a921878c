"""Where a batch of points goes: InfluxDB when it answers in time, the spool on disk when it does not.

`Storage.store` writes a batch to InfluxDB; when InfluxDB fails or does not answer within
`spool_after_s`, the batch is appended to the spool (fsynced) instead, and from then on (an outage)
batches go straight to the spool, so that the messages are acknowledged at the pace they come and
neither the broker's queue nor the service's memory grows. `Storage.replay` runs beside the consumer:
it writes the spool back, oldest record first, probing InfluxDB with backoff during an outage; the
first record it writes ends the outage, and new batches go to InfluxDB again while the rest of the
spool follows. A record's points of a device revoked in the meantime are left out.

When the spool is full (or the disk refuses it), `store` raises StorageError: the consumer keeps the
messages unacknowledged and tries again, and the broker holds what comes next (its own bounded
queue, then the devices' outboxes). Nothing is dropped here.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from ingest._errors import RejectedMessage, SpoolDamaged, SpoolError, SpoolFull, StorageError
from ingest._registry import Registry
from ingest._settings import Settings
from ingest._spool import Spool
from ingest._writer import PointWriter

log = logging.getLogger("fieldlink.ingest")

_DEVICE_TAG = b"device="


def device_of(line: bytes) -> str:
    """The device tag of one line of our line protocol (`readings,device=<id>,sensor=... value=...`,
    `health,device=<id> online=...`)."""
    parts = line.split(b",", 2)
    tag = parts[1].split(b" ", 1)[0] if len(parts) > 1 else b""  # `health,device=<id> online=...` too
    return tag[len(_DEVICE_TAG) :].decode("utf-8", "replace") if tag.startswith(_DEVICE_TAG) else ""


class Storage:
    def __init__(
        self,
        writer: PointWriter,
        spool: Spool | None,
        counters: dict[str, int],
        *,
        spool_after_s: float,
        retry_max_s: float,
        is_active: Callable[[str], bool],
    ) -> None:
        self._writer = writer
        self.spool = spool
        self._counters = counters
        self._spool_after_s = spool_after_s
        self._retry_max_s = retry_max_s
        self._is_active = is_active
        # InfluxDB failed a write and has not taken one since: batches go straight to the spool.
        self.outage = False
        self.full = False  # the last append found the spool full (cleared by the next one that fits)
        self._spooled = asyncio.Event()  # set when a record is appended: wakes `replay`

    @classmethod
    def for_settings(
        cls, settings: Settings, writer: PointWriter, spool: Spool | None, counters: dict[str, int], registry: Registry
    ) -> Storage:
        return cls(
            writer,
            spool,
            counters,
            spool_after_s=settings.spool_after_s,
            retry_max_s=settings.write_retry_max_s,
            is_active=registry.is_active,
        )

    async def store(self, body: bytes, points: int) -> bool:
        """Store one batch durably. True if it is in InfluxDB, False if in the spool. Raises
        StorageError if neither took it (retry later), RejectedMessage if InfluxDB refuses the points."""
        spool = self.spool
        if spool is None:
            await self._writer.write(body)
            return True
        if not self.outage:
            try:
                await asyncio.wait_for(self._writer.write(body), self._spool_after_s)
                return True
            except (StorageError, TimeoutError) as exc:
                self._begin_outage(exc)
        try:
            await asyncio.to_thread(spool.append, body)
        except SpoolError as exc:
            if isinstance(exc, SpoolFull):
                self._counters["spool_full"] += 1
                self.full = True
            # InfluxDB may answer by now; if not, the messages wait (unacknowledged) for the next try.
            try:
                await asyncio.wait_for(self._writer.write(body), self._spool_after_s)
            except (StorageError, TimeoutError) as write_exc:
                raise StorageError(f"InfluxDB does not take the batch ({_why(write_exc)}) and {exc}") from exc
            self._end_outage()
            return True
        self.full = False
        self._counters["spooled_batches"] += 1
        self._counters["spooled_points"] += points
        self._spooled.set()
        return False

    def _begin_outage(self, exc: BaseException) -> None:
        self._counters["write_failures"] += 1
        if not self.outage:
            self.outage = True
            log.warning("InfluxDB does not take writes (%s): batches go to the spool until it does", _why(exc))

    def _end_outage(self) -> None:
        if self.outage:
            self.outage = False
            log.info("InfluxDB takes writes again; the spool is written back (%d records)", self.records)

    @property
    def records(self) -> int:
        return self.spool.records if self.spool is not None else 0

    def snapshot(self) -> dict[str, Any]:
        """The spool's state for /healthz."""
        spool = self.spool
        if spool is None:
            return {"enabled": False, "influx_outage": self.outage}
        return {
            "enabled": True,
            "influx_outage": self.outage,
            "records": spool.records,
            "bytes": spool.disk_bytes,
            "max_bytes": spool.max_bytes,
            "full": self.full,
        }

    def problems(self) -> list[str]:
        if self.outage and self.full:
            return ["InfluxDB does not take writes and the spool is full: messages wait at the broker"]
        return []

    async def replay(self) -> None:
        """Write the spool back, oldest record first, until cancelled. Nothing ends it: whatever one
        round raises is logged and counted, and the write-back goes on after a pause."""
        spool = self.spool
        if spool is None:
            return
        delay = 0.2
        while True:
            try:
                await self._replay(spool)
            except Exception:  # a bug: keep every record and start again, never end the write-back
                log.exception("the spool's write-back failed; it starts again in %.1f s", delay)
                self._counters["spool_replay_errors"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)

    async def _replay(self, spool: Spool) -> None:
        delay = 0.2

        async def pause(exc: BaseException, counter: str) -> None:
            nonlocal delay
            self._counters[counter] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)

        while True:
            try:
                body = await asyncio.to_thread(spool.peek)
            except SpoolDamaged as exc:
                await self._set_aside(spool, exc)
                continue
            except SpoolError as exc:  # the disk cannot be read now (EMFILE, EIO...): nothing is given up
                log.warning("spool: %s; trying again", exc)
                await pause(exc, "spool_read_errors")
                continue
            if body is None:
                self._spooled.clear()
                if await asyncio.to_thread(spool.peek) is None:  # an append may have come in between
                    await self._spooled.wait()
                continue
            try:
                lines, revoked = self._active_lines(body)
                stored, refused, first_refusal = await self._write_back(lines)
            except (StorageError, TimeoutError, sqlite3.DatabaseError) as exc:
                self._begin_outage(exc)
                await pause(exc, "spool_replay_retries")
                continue
            if refused:
                log.warning("InfluxDB refuses %d points of a spool record, left out: %s", refused, first_refusal)
            try:
                await asyncio.to_thread(spool.pop)
            except SpoolError as exc:  # popped again later: its points are written again, an overwrite
                log.warning("spool: %s; trying again", exc)
                await pause(exc, "spool_read_errors")
                continue
            delay = 0.2
            counters = self._counters
            counters["spool_replayed_batches"] += 1
            counters["spool_replayed_points"] += stored
            counters["stored_points"] += stored
            counters["spool_refused_points"] += refused
            counters["spool_revoked_points"] += revoked
            self._end_outage()

    async def _set_aside(self, spool: Spool, exc: BaseException) -> None:
        """A segment changed or removed under the spool: it is set aside with what is left of it."""
        try:
            lost, aside = await asyncio.to_thread(spool.set_aside)
        except SpoolError as error:
            log.warning("spool: %s; trying again", error)
            self._counters["spool_read_errors"] += 1
            await asyncio.sleep(1.0)
            return
        self._counters["spool_damaged_records"] += lost
        log.error("spool: %s; the segment's %d records left are set aside as %s", _why(exc), lost, aside or "(gone)")

    def _active_lines(self, body: bytes) -> tuple[list[bytes], int]:
        """The record's lines without those of devices no longer active, and how many those were."""
        lines = body.split(b"\n")
        devices = {device_of(line) for line in lines}
        inactive = {device for device in devices if not self._is_active(device)}
        if not inactive:
            return lines, 0
        kept = [line for line in lines if device_of(line) not in inactive]
        return kept, len(lines) - len(kept)

    async def _write_back(self, lines: list[bytes]) -> tuple[int, int, str]:
        """Write `lines`: (points stored, points refused, the first refusal's words). Each request
        has `spool_after_s` to answer. A partial write (InfluxDB stored the others and says how many it
        dropped) ends there; otherwise the lines are halved until each refused one is alone."""
        if not lines:
            return 0, 0, ""
        try:
            await asyncio.wait_for(self._writer.write(b"\n".join(lines)), self._spool_after_s)
        except RejectedMessage as exc:
            if exc.dropped is not None:
                refused = min(exc.dropped, len(lines))
                return len(lines) - refused, refused, str(exc)[:300]
            if len(lines) == 1:
                return 0, 1, str(exc)[:300]
            half = len(lines) // 2
            first = await self._write_back(lines[:half])
            second = await self._write_back(lines[half:])
            return first[0] + second[0], first[1] + second[1], first[2] or second[2]
        return len(lines), 0, ""


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc)[:300]
