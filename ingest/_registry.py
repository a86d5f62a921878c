"""The device registry: which devices exist, which certificates they hold, whether they may send data.

SQLite on one machine, shared by the `fieldlink` command and a running service (WAL, short
transactions). The schema is versioned (`PRAGMA user_version`) and migrated on open:

- version 0/1 (before versions): `devices(id, status, cert_sha256, created_at)`;
- version 2: devices (status, created, revoked, last seen = the device's own newest timestamp, labels,
  the certificate it last reported in use), their certificates (serial, SHA-256, expiry, revoked) and
  the sensor names each device has used (the bound on its InfluxDB series). Certificates outlive
  their device (`remove`), so that the CRL keeps refusing them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest._errors import InvalidDeviceId, InvalidLabels, RegistryError, UnknownDevice
from ingest._pki import Issued
from shared.protocol import CERT_ID_LENGTH, valid_id

SCHEMA_VERSION = 2
# Labels are the operator's notes on a device (site, floor): bounded, so a caller cannot grow the registry.
MAX_LABELS = 32
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 256

_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at REAL NOT NULL,
    revoked_at REAL,
    last_seen_ms INTEGER,
    labels TEXT NOT NULL DEFAULT '{}',
    cert_in_use TEXT
);
CREATE TABLE IF NOT EXISTS certificates (
    sha256 TEXT PRIMARY KEY,
    serial TEXT,
    device_id TEXT NOT NULL,
    issued_at REAL NOT NULL,
    not_after REAL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS certificates_device ON certificates (device_id);
CREATE TABLE IF NOT EXISTS sensors (
    device_id TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (device_id, name)
);
"""

_DEVICE_COLUMNS = "id, status, created_at, revoked_at, last_seen_ms, labels, cert_in_use"


@dataclass(frozen=True)
class Certificate:
    sha256: str
    serial: str | None  # None only for certificates migrated from a version-1 registry
    issued_at: float
    not_after: float | None
    revoked_at: float | None

    @property
    def cert_id(self) -> str:
        """How a device names this certificate in its status (shared.protocol.CERT_ID_LENGTH)."""
        return self.sha256[:CERT_ID_LENGTH]


@dataclass(frozen=True)
class Device:
    id: str
    status: str
    created_at: float
    revoked_at: float | None = None
    last_seen_ms: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    cert_in_use: str | None = None
    certificates: tuple[Certificate, ...] = ()

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def valid_certificates(self) -> tuple[Certificate, ...]:
        return tuple(c for c in self.certificates if c.revoked_at is None)


def check_device_id(device_id: str) -> str:
    """The id itself if it is a valid device id; RegistryError otherwise. Call before any file or
    row is touched: an id names a folder, a certificate CN and an MQTT topic level."""
    if not valid_id(device_id):
        shown = repr(device_id)[:80]
        raise InvalidDeviceId(
            f"{shown} is not a valid device id: use 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter or digit"
        )
    return device_id


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels themselves if they are within the bounds; RegistryError naming the first that is not."""
    if len(labels) > MAX_LABELS:
        raise InvalidLabels(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not 0 < len(key) <= MAX_LABEL_KEY or len(value) > MAX_LABEL_VALUE:
            raise InvalidLabels(
                f"label {key[:MAX_LABEL_KEY]!r}: keys take 1-{MAX_LABEL_KEY} characters, values up to {MAX_LABEL_VALUE}"
            )
    return labels


class Registry:
    """A registry in one SQLite file; safe to share between the CLI and a running service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise RegistryError(f"cannot open the device registry {path}: {exc}") from exc

    # --- schema ---------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"the registry {self.path} has schema version {version}; this fieldlink knows up to "
                    f"{SCHEMA_VERSION}: upgrade fieldlink"
                )
            if version == SCHEMA_VERSION:
                return
            old = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'devices'").fetchone()
            if old is not None:
                db.execute("ALTER TABLE devices RENAME TO devices_v1")
            for statement in _SCHEMA_V2.split(";"):
                if statement.strip():
                    db.execute(statement)
            if old is not None:
                db.execute("INSERT INTO devices (id, status, created_at) SELECT id, status, created_at FROM devices_v1")
                # Version 1 kept only the fingerprint; the CLI fills the serial in from the bundle.
                db.execute(
                    "INSERT OR IGNORE INTO certificates (sha256, serial, device_id, issued_at, revoked_at) "
                    "SELECT cert_sha256, NULL, id, created_at, "
                    "CASE status WHEN 'revoked' THEN created_at END FROM devices_v1"
                )
                db.execute("DROP TABLE devices_v1")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    # --- reading --------------------------------------------------------------------------------------

    def _certificates(self, device_id: str) -> tuple[Certificate, ...]:
        rows = self._db.execute(
            "SELECT sha256, serial, issued_at, not_after, revoked_at FROM certificates "
            "WHERE device_id = ? ORDER BY issued_at, rowid",
            (device_id,),
        )
        return tuple(Certificate(*row) for row in rows)

    def _device(self, row: tuple[Any, ...] | None) -> Device | None:
        if row is None:
            return None
        device_id, status, created_at, revoked_at, last_seen_ms, labels, cert_in_use = row
        return Device(
            device_id,
            status,
            created_at,
            revoked_at,
            last_seen_ms,
            json.loads(labels),
            cert_in_use,
            self._certificates(device_id),
        )

    def get(self, device_id: str) -> Device | None:
        return self._device(
            self._db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ?", (device_id,)).fetchone()
        )

    def status(self, device_id: str) -> str | None:
        """The device's status ('active', 'revoked') or None if unknown: the one query per message."""
        row = self._db.execute("SELECT status FROM devices WHERE id = ?", (device_id,)).fetchone()
        return row[0] if row else None

    def is_active(self, device_id: str) -> bool:
        return self.status(device_id) == "active"

    def devices(self) -> list[Device]:
        rows = self._db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY id").fetchall()
        return [d for d in (self._device(row) for row in rows) if d is not None]

    def revoked_certificates(self) -> list[tuple[str, float]]:
        """(serial, revoked at) of every revoked certificate whose serial is known: the CRL's content."""
        rows = self._db.execute(
            "SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL AND serial IS NOT NULL "
            "ORDER BY revoked_at, serial"
        )
        return [(serial, revoked_at) for serial, revoked_at in rows]

    def certificate_known(self, device_id: str, cert_id: str) -> bool:
        """True if `cert_id` names a certificate of this device that is not revoked; remembers it as
        the certificate in use."""
        rows = self._db.execute(
            "SELECT sha256 FROM certificates WHERE device_id = ? AND revoked_at IS NULL AND substr(sha256, 1, ?) = ?",
            (device_id, CERT_ID_LENGTH, cert_id),
        ).fetchall()
        if rows:
            self._db.execute("UPDATE devices SET cert_in_use = ? WHERE id = ?", (rows[0][0], device_id))
        return bool(rows)

    def sensor_names(self, device_id: str) -> set[str]:
        return {name for (name,) in self._db.execute("SELECT name FROM sensors WHERE device_id = ?", (device_id,))}

    # --- changing -------------------------------------------------------------------------------------

    def add(self, device_id: str, certificate: Issued, labels: dict[str, str] | None = None) -> Device:
        check_device_id(device_id)
        check_labels(labels or {})
        now = time.time()
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO devices (id, status, created_at, labels) VALUES (?, 'active', ?, ?)",
                    (device_id, now, json.dumps(labels or {}, sort_keys=True)),
                )
                self._insert_certificate(db, device_id, certificate, now)
        except sqlite3.IntegrityError as exc:
            raise RegistryError(f"device {device_id!r} is already registered") from exc
        return self._require(device_id)

    @staticmethod
    def _insert_certificate(db: sqlite3.Connection, device_id: str, cert: Issued, now: float) -> None:
        db.execute(
            "INSERT INTO certificates (sha256, serial, device_id, issued_at, not_after) VALUES (?, ?, ?, ?, ?)",
            (cert.sha256, cert.serial, device_id, now, cert.not_after),
        )

    def _require(self, device_id: str) -> Device:
        device = self.get(device_id)
        if device is None:
            raise UnknownDevice(f"device {device_id!r} is not registered")
        return device

    def add_certificate(self, device_id: str, certificate: Issued) -> None:
        """A further certificate for an active device (rotation); the older ones stay valid."""
        with self._transaction() as db:
            if self._require(device_id).status != "active":
                raise RegistryError(f"device {device_id!r} is revoked; it gets no new certificate")
            self._insert_certificate(db, device_id, certificate, time.time())

    def revoke_certificates(self, device_id: str, keep: str | None = None) -> int:
        """Revoke every valid certificate of the device but `keep` (a SHA-256); returns how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE certificates SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL AND sha256 IS NOT ?",
                (time.time(), device_id, keep),
            )
            return cursor.rowcount

    def revoke(self, device_id: str) -> Device:
        """The device may send nothing from now on, and none of its certificates is valid."""
        self._require(device_id)
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE devices SET status = 'revoked', revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                (now, device_id),
            )
            db.execute(
                "UPDATE certificates SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL", (now, device_id)
            )
        return self._require(device_id)

    def remove(self, device_id: str) -> None:
        """Forget a revoked device; its certificates stay listed (revoked) for the CRL."""
        if self._require(device_id).status != "revoked":
            raise RegistryError(f"device {device_id!r} is active; revoke it first")
        with self._transaction() as db:
            db.execute("DELETE FROM devices WHERE id = ?", (device_id,))
            db.execute("DELETE FROM sensors WHERE device_id = ?", (device_id,))

    def certificates_without_serial(self) -> list[tuple[str, str]]:
        """(device id, SHA-256) of certificates migrated from a version-1 registry, serial unknown."""
        rows = self._db.execute("SELECT device_id, sha256 FROM certificates WHERE serial IS NULL")
        return [(device_id, sha256) for device_id, sha256 in rows]

    def set_serial(self, sha256: str, serial: str) -> None:
        """Fill in the serial of a certificate migrated from a version-1 registry."""
        self._db.execute("UPDATE certificates SET serial = ? WHERE sha256 = ? AND serial IS NULL", (serial, sha256))

    def touch(self, device_id: str, newest_ms: int) -> None:
        """The device's own newest timestamp, if newer than what is known."""
        self._db.execute(
            "UPDATE devices SET last_seen_ms = ? WHERE id = ? AND (last_seen_ms IS NULL OR last_seen_ms < ?)",
            (newest_ms, device_id, newest_ms),
        )

    def add_sensor_names(self, device_id: str, names: Iterable[str]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO sensors (device_id, name) VALUES (?, ?)", [(device_id, n) for n in names]
        )
