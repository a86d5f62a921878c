"""The service's spool: batches of points kept on disk while InfluxDB does not answer.

A folder of append-only segment files, `<index>.spool`, each a run of records:

    b"FLS1" | body length (u32, big-endian) | CRC-32 of the body (u32) | body (line protocol)

`append` writes one record and fsyncs it (and the folder, for a new segment) before it returns, so the
messages whose points it holds may be acknowledged. `peek`/`pop` read the records back in the order
written; a segment read to its end is deleted. On opening, every segment is checked: a record cut
short or not matching its checksum (a crash in the middle of a write, which can only hit the last
record) ends its segment there; the file is truncated to the records before it, which are kept.

The folder holds at most `max_bytes` (segment files as they are on disk): `append` raises `SpoolFull`
beyond that, and the caller keeps its messages unacknowledged (the broker holds them). One process
owns a folder: a lock (`flock` on `lock`) refuses a second one.

The methods block on disk I/O: the service calls them from a thread. A lock makes them safe to call
from two threads at once (the writer appends while the replay reads).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest._errors import SpoolDamaged, SpoolError, SpoolFull

MAGIC = b"FLS1"
_HEADER = struct.Struct(">4sII")
HEADER_BYTES = _HEADER.size
# Segments this size or smaller (one record can make a segment larger): the space of a segment read
# back is freed when its last record is.
SEGMENT_BYTES = 4 * 1024 * 1024
_SUFFIX = ".spool"


@dataclass(slots=True)
class _Segment:
    index: int
    path: Path
    size: int  # bytes of whole records on disk
    records: int  # whole records in it, read or not


@dataclass(frozen=True, slots=True)
class Recovery:
    """What opening the spool found: records kept, and the bytes of torn records cut off."""

    records: int
    bytes: int
    torn_records: int
    torn_bytes: int


def encode_record(body: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def scan(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """The whole records in `data` as (offset of the body, length), and where the first torn or
    corrupt one starts (len(data) if there is none)."""
    records: list[tuple[int, int]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER_BYTES:
            break
        magic, length, crc = _HEADER.unpack_from(data, offset)
        start = offset + HEADER_BYTES
        if magic != MAGIC or length > len(data) - start or zlib.crc32(data[start : start + length]) != crc:
            break
        records.append((start, length))
        offset = start + length
    return records, offset


class Spool:
    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._segment_bytes = max(1, min(segment_bytes, max_bytes // 4))
        self._fsync = fsync
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot use the spool folder {directory}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(
                f"the spool folder {directory} is in use by another ingest process; give each its own"
            ) from exc
        self._segments: list[_Segment] = []
        self.recovery = self._recover()
        self._append_fd: int | None = None  # the last segment, opened for appending by this process
        self._read_offset = 0  # in the first segment
        self._read_records = 0  # of the first segment, read and popped
        self._peeked: int | None = None  # the length of the record peek returned, for pop
        self._closed = False
        self._recount()

    # --- opening ------------------------------------------------------------------------------

    def _recover(self) -> Recovery:
        torn_records = torn_bytes = 0
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            stem = path.name.removesuffix(_SUFFIX)
            if not stem.isdigit():
                continue
            data = path.read_bytes()
            records, good = scan(data)
            if good < len(data):
                torn_records += 1
                torn_bytes += len(data) - good
                with path.open("r+b") as f:
                    f.truncate(good)
                    self._fsync(f.fileno())
            if not records:
                path.unlink()
                continue
            self._segments.append(_Segment(int(stem), path, good, len(records)))
        return Recovery(
            records=sum(s.records for s in self._segments),
            bytes=sum(s.size for s in self._segments),
            torn_records=torn_records,
            torn_bytes=torn_bytes,
        )

    # --- what it holds ------------------------------------------------------------------------
    # Plain integers, kept under the lock and read without it: /healthz must never wait on an fsync.

    @property
    def disk_bytes(self) -> int:
        """Bytes of segment files on disk (what the bound counts)."""
        return self._disk_bytes

    @property
    def records(self) -> int:
        """Records not yet popped."""
        return self._records

    def _recount(self) -> None:
        self._disk_bytes = sum(s.size for s in self._segments)
        self._records = sum(s.records for s in self._segments) - self._read_records

    # --- writing ------------------------------------------------------------------------------

    def append(self, body: bytes) -> None:
        """Add one record and make it durable (fsync) before returning. Raises SpoolFull when it
        would take the folder past `max_bytes`, SpoolError when the disk refuses it (any OSError)."""
        record = encode_record(body)
        with self._lock:
            self._check_open()
            if self._disk_bytes + len(record) > self.max_bytes:
                raise SpoolFull(f"the spool holds {self.max_bytes} bytes at most")
            try:
                fd = self._segment_for(len(record))
                segment = self._segments[-1]
                written = 0
                while written < len(record):
                    written += os.write(fd, record[written:])
                self._fsync(fd)
            except OSError as exc:
                # Whatever part of the record reached the file is cut off, so that the next one
                # starts at a record boundary; the reader never sees it (sizes count whole records).
                self._abandon_append_segment()
                raise SpoolError(f"cannot write the spool in {self.directory}: {exc.strerror or exc}") from exc
            segment.size += len(record)
            segment.records += 1
            self._recount()

    def _segment_for(self, length: int) -> int:
        """The descriptor to append a record of `length` bytes to: this process's last segment, or a
        new one when there is none or it is full."""
        if self._append_fd is not None:
            last = self._segments[-1]
            if last.size == 0 or last.size + length <= self._segment_bytes:
                return self._append_fd
            os.close(self._append_fd)
            self._append_fd = None
        index = self._segments[-1].index + 1 if self._segments else 1
        path = self.directory / f"{index:012d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._segments.append(_Segment(index, path, 0, 0))
        self._append_fd = fd
        self._fsync_directory()  # the new file's name must survive a crash too
        return fd

    def _abandon_append_segment(self) -> None:
        """After a failed append: cut the partial record, stop appending to this segment. Never
        raises: should the disk refuse this too, the torn tail is cut when the spool is next opened."""
        if self._append_fd is None:
            return
        segment = self._segments[-1]
        with contextlib.suppress(OSError):
            os.ftruncate(self._append_fd, segment.size)
        with contextlib.suppress(OSError):
            os.close(self._append_fd)
        self._append_fd = None
        if segment.records == 0:
            with contextlib.suppress(OSError):
                segment.path.unlink(missing_ok=True)
                self._segments.pop()

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    # --- reading back -------------------------------------------------------------------------

    def peek(self) -> bytes | None:
        """The oldest record not yet popped, or None. Raises SpoolDamaged when the record on disk is
        not what was written (its segment should be set aside), SpoolError when the disk cannot be
        read now (try again later: nothing is given up)."""
        with self._lock:
            self._check_open()
            while self._segments:
                first = self._segments[0]
                if self._read_records < first.records:
                    try:
                        with first.path.open("rb") as f:
                            f.seek(self._read_offset)
                            header = f.read(HEADER_BYTES)
                            body = b""
                            if len(header) == HEADER_BYTES:
                                magic, length, crc = _HEADER.unpack(header)
                                body = f.read(length)
                    except FileNotFoundError as exc:
                        raise SpoolDamaged(f"the spool segment {first.path} is gone") from exc
                    except OSError as exc:
                        raise SpoolError(f"cannot read the spool: {exc.strerror or exc}") from exc
                    if len(header) != HEADER_BYTES or magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
                        raise SpoolDamaged(f"the spool record at {first.path}:{self._read_offset} changed on disk")
                    self._peeked = HEADER_BYTES + length
                    return body
                if len(self._segments) == 1 and self._append_fd is not None:
                    return None  # the segment being appended to: more may come
                self._drop_first()
            return None

    def pop(self) -> None:
        """Forget the record `peek` returned (it is stored); a segment read to its end is deleted.
        SpoolError if the disk refuses that now (the record is then read again: an overwrite)."""
        with self._lock:
            self._check_open()
            if self._peeked is None or not self._segments:
                raise SpoolError("pop without peek")
            first = self._segments[0]
            self._read_offset += self._peeked
            self._read_records += 1
            self._peeked = None
            if self._read_records == first.records:
                if len(self._segments) > 1 or self._append_fd is None:
                    self._drop_first()
                elif first.size >= self._segment_bytes // 2:
                    # Read to the end and half full: start a new segment so that this one can go.
                    with contextlib.suppress(OSError):
                        os.close(self._append_fd)
                    self._append_fd = None
                    self._drop_first()
            self._recount()

    def set_aside(self) -> tuple[int, Path | None]:
        """Give up the oldest segment, which peek found damaged: it is renamed `<name>.damaged` (kept
        for inspection, outside the bound) rather than deleted. Returns its records not yet read and
        where it went. SpoolError if the disk refuses the rename now."""
        with self._lock:
            if not self._segments:
                return 0, None
            first = self._segments[0]
            lost = first.records - self._read_records
            aside: Path | None = first.path.with_suffix(".damaged")
            try:
                first.path.rename(first.path.with_suffix(".damaged"))
            except FileNotFoundError:
                aside = None
            except OSError as exc:
                raise SpoolError(f"cannot set the damaged segment {first.path} aside: {exc.strerror or exc}") from exc
            if len(self._segments) == 1 and self._append_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._append_fd)
                self._append_fd = None
            self._forget_first()
            return lost, aside

    def _drop_first(self) -> None:
        """Delete the oldest segment, read to its end. If the disk refuses, it stays (SpoolError)."""
        first = self._segments[0]
        try:
            first.path.unlink(missing_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot delete the spool segment {first.path}: {exc.strerror or exc}") from exc
        self._forget_first()

    def _forget_first(self) -> None:
        self._segments.pop(0)
        self._read_offset = 0
        self._read_records = 0
        self._peeked = None
        self._recount()

    # --- closing ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError("the spool is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._append_fd is not None:
                os.close(self._append_fd)
                self._append_fd = None
            os.close(self._lock_fd)  # releases the flock
