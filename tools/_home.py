"""The state folder (`.fieldlink/` or $FIELDLINK_HOME): PKI, stack configs, registry, device bundles."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ingest import PkiLayout, RegistryError, check_device_id, write_atomic
from tools._errors import UsageError

BROKER_NAMES = ("localhost", "127.0.0.1")


@dataclass
class ProcessMark:
    """What tells the process `stack up` started from a later one that got its PID."""

    start_time: int  # clock ticks since boot, field 22 of /proc/PID/stat
    program: str  # /proc/PID/comm


@dataclass
class StackState:
    # Off the standard ports, so that a system Mosquitto or InfluxDB does not stand in the way.
    mqtt_port: int = 18883
    influx_port: int = 18086
    influx_rpc_port: int = 18088
    database: str = "fieldlink"
    pids: dict[str, int] = field(default_factory=dict)
    # Per service in `pids`. Files written before it existed lack it: those PIDs are checked by name only.
    started: dict[str, ProcessMark] = field(default_factory=dict)
    # Names and addresses field nodes reach the broker by (`stack up --public-name`): the broker's
    # certificate carries them besides BROKER_NAMES, and the broker then listens on every interface.
    public_names: list[str] = field(default_factory=list)


class Home:
    def __init__(self, root: Path | None = None, *, writable: bool | None = None) -> None:
        """The state folder `root`, or the user's ($FIELDLINK_HOME, else ./.fieldlink). The user's is
        checked at once (a UsageError saying why it cannot be used), as a folder that exists or can be
        made, and with `writable` (default: for the user's) one this user can write to."""
        named = root or Path(os.environ.get("FIELDLINK_HOME") or ".fieldlink")
        self.root = named.resolve()
        if root is None or writable:
            self.check(writable=writable is not False)

    def check(self, writable: bool = True) -> None:
        """UsageError unless the state folder is a folder, or could be made one (no file where it or
        a folder above it should be), and, with `writable`, one this user can make files in (tried: a
        temporary folder made and removed at once, which also catches read-only file systems and root's
        folders that refuse everyone, as /sys does)."""
        where = "FIELDLINK_HOME" if os.environ.get("FIELDLINK_HOME") else "the state folder"
        fix = "point FIELDLINK_HOME at a folder of your own (default ./.fieldlink)"
        try:
            existing = self.root
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if not existing.is_dir():
                what = "is a file" if existing == self.root else f"lies under {existing}, which is a file"
                raise UsageError(f"{where} {self.root} cannot be used: it {what}; {fix}")
            if writable:
                try:
                    os.rmdir(tempfile.mkdtemp(prefix=".fieldlink-probe-", dir=existing))
                except OSError as exc:
                    what = "" if existing == self.root else f" (it does not exist, and cannot be made in {existing})"
                    raise UsageError(
                        f"{where} {self.root} cannot be used: {exc.strerror.lower() if exc.strerror else exc}"
                        f"{what}; {fix}"
                    ) from exc
        except OSError as exc:  # e.g. a folder above it that may not be searched
            raise UsageError(f"{where} {self.root} cannot be used: {exc}; {fix}") from exc

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def devices(self) -> Path:
        return self.root / "devices"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_path(self) -> Path:
        return self.root / "stack.json"

    @property
    def broker_pid_path(self) -> Path:
        """The running broker's PID (decimal text), for sending it SIGHUP to re-read the CRL."""
        return self.root / "mosquitto" / "mosquitto.pid"

    @property
    def influx_credentials_path(self) -> Path:
        """The local InfluxDB's users and passwords (JSON, mode 0600)."""
        return self.root / "influxdb" / "credentials.json"

    @property
    def influx_netrc_path(self) -> Path:
        """The local InfluxDB's admin login for `curl --netrc-file` (mode 0600)."""
        return self.root / "influxdb" / "admin.netrc"

    def device_dir(self, device_id: str) -> Path:
        """The device's bundle folder; the id is checked first, so no path is built from an unchecked name."""
        try:
            return self.devices / check_device_id(device_id)
        except RegistryError as exc:
            raise UsageError(str(exc)) from exc

    @property
    def pki_files(self) -> PkiLayout:
        """The fleet CA, its CRL, and the broker's, the service's and the administrator's keys."""
        return PkiLayout(self.pki)

    def load_state(self) -> StackState:
        if not self.state_path.is_file():
            return StackState()
        try:
            data = json.loads(self.state_path.read_text())
            started = {name: ProcessMark(**mark) for name, mark in data.pop("started", {}).items()}
            state = StackState(**data, started=started)
            if not all(isinstance(pid, int) and pid > 0 for pid in state.pids.values()):
                raise ValueError("a PID that is not a positive integer")
            return state
        except (ValueError, TypeError, AttributeError) as exc:
            raise UsageError(f"{self.state_path} is damaged ({exc}); remove it and run `stack up`") from exc

    def save_state(self, state: StackState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_path, (json.dumps(asdict(state), indent=2) + "\n").encode())

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Keys live here: keep the folder private and out of version control.
        os.chmod(self.root, 0o700)
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            write_atomic(ignore, b"*\n")
