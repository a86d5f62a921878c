"""The device registry: which devices exist and whether they may send data. SQLite on one machine."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ingest._errors import RegistryError
from shared.protocol import valid_id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    cert_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Device:
    id: str
    status: str
    cert_sha256: str
    created_at: float

    @property
    def active(self) -> bool:
        return self.status == "active"


class Registry:
    """A registry in one SQLite file; safe to share between the CLI and a running service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the device registry {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def add(self, device_id: str, cert_sha256: str) -> Device:
        if not valid_id(device_id):
            raise RegistryError(
                f"{device_id!r} is not a valid device id: use 1-64 of a-z, 0-9, '-', '_', '.', "
                "starting with a letter or digit"
            )
        device = Device(device_id, "active", cert_sha256, time.time())
        try:
            self._db.execute(
                "INSERT INTO devices (id, status, cert_sha256, created_at) VALUES (?, ?, ?, ?)",
                (device.id, device.status, device.cert_sha256, device.created_at),
            )
        except sqlite3.IntegrityError as exc:
            raise RegistryError(f"device {device_id!r} is already registered") from exc
        return device

    def get(self, device_id: str) -> Device | None:
        row = self._db.execute(
            "SELECT id, status, cert_sha256, created_at FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
        return Device(*row) if row else None

    def list(self) -> list[Device]:
        rows = self._db.execute("SELECT id, status, cert_sha256, created_at FROM devices ORDER BY id")
        return [Device(*row) for row in rows]
