"""The bench's world: a private stack (Mosquitto and InfluxDB through `tools._stack.Stack`, on free
ports, in a temporary FIELDLINK_HOME), its devices (issued and registered as `fieldlink device add`
does), and what every phase needs of it: generator processes, the consumer's persistent session,
the ingest service, counts in InfluxDB, CPU time per process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import httpx

from bench.mqtt import connect, tls_context
from shared.identities import INGEST_IDENTITY
from shared.protocol import DATA_SUBSCRIPTION, STATUS_SUBSCRIPTION
from tools._devices import add_device
from tools._home import Home
from tools._process import free_port, stop_pid, wait_port
from tools._stack import Stack, influx_credentials

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOUR_MS = 3_600_000


class BenchError(Exception):
    pass


@dataclass
class Window:
    """A range of device time of its own: a phase's points are counted by it."""

    start_ms: int
    end_ms: int


@dataclass
class Process:
    """A process the bench started, its output file, and its name in the CPU split."""

    popen: subprocess.Popen[bytes]
    role: str
    log: Path


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a bench subprocess: this tree's code first, whatever the virtualenv holds."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **extra)
    env.pop("PYTHONSTARTUP", None)
    return env


@dataclass
class Bench:
    root: Path
    # The state folder of a stack already up (the tests'); by default the bench makes its own in `root`.
    home_path: Path | None = None
    home: Home = field(init=False)
    stack: Stack = field(init=False)
    devices: list[dict[str, Any]] = field(default_factory=list)
    storm_devices: list[dict[str, Any]] = field(default_factory=list)
    live_devices: list[dict[str, Any]] = field(default_factory=list)  # more for fast live phases
    _cursor_ms: int = 0
    started_processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home = Home(self.home_path or self.root / "home")
        self.stack = Stack(self.home)
        # Fill phases stamp their readings in the past, each in a range of its own; the service
        # refuses readings older than 30 days.
        self._cursor_ms = int(time.time() * 1000) - 20 * 24 * HOUR_MS

    # --- set-up -----------------------------------------------------------------------------------
    def up(self, devices: int, storm_devices: int) -> None:
        self.stack.up(free_port(), free_port(), free_port())
        self.devices = self.provision("bench", devices)
        self.storm_devices = self.provision("storm", storm_devices)

    def provision(self, prefix: str, count: int, start: int = 0) -> list[dict[str, Any]]:
        """Devices PREFIX-<start>.. issued, registered and bundled as `fieldlink device add` does; what
        the generator needs of each."""
        made = []
        for i in range(start, start + count):
            device_id = f"{prefix}-{i:03d}"
            _, bundle = add_device(self.home, device_id)
            config = json.loads((bundle / "config.json").read_text())
            made.append({"id": device_id, "index": i, "bundle": str(bundle), "cert_id": config.get("cert_id")})
        return made

    def down(self) -> None:
        for process in self.started_processes:
            if process.popen.poll() is None:
                stop_pid(process.popen.pid)
        self.stack.down()

    @property
    def state(self) -> Any:
        return self.home.load_state()

    @property
    def mqtt_port(self) -> int:
        return int(self.state.mqtt_port)

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.state.influx_port}"

    def pids(self) -> dict[str, int]:
        return dict(self.state.pids)

    def window(self, span_ms: int) -> Window:
        """A range of past device time no other phase uses."""
        start = self._cursor_ms
        self._cursor_ms += span_ms + HOUR_MS
        if self._cursor_ms > int(time.time() * 1000) - HOUR_MS:
            raise BenchError("out of past device time for fill phases: ask for fewer messages")
        return Window(start, start + span_ms)

    # --- InfluxDB ---------------------------------------------------------------------------------
    def admin_auth(self) -> tuple[str, str]:
        credentials = influx_credentials(self.home)
        assert credentials is not None
        return credentials.admin.auth()

    def writer_auth(self) -> tuple[str, str]:
        credentials = influx_credentials(self.home)
        assert credentials is not None
        return credentials.writer.auth()

    def query(self, q: str, timeout: float = 60) -> list[dict[str, Any]]:
        response = httpx.post(
            f"{self.influx_url}/query",
            data={"db": self.state.database, "q": q, "epoch": "ms"},
            auth=self.admin_auth(),
            timeout=timeout,
        )
        response.raise_for_status()
        result = response.json()["results"][0]
        if "error" in result:
            raise BenchError(f"InfluxDB: {result['error']}")
        return list(result.get("series", []))

    def count(self, start_ms: int | None, end_ms: int | None, where: str = "") -> int:
        """Points stored with start_ms <= time < end_ms (what `SELECT count(value)` says), and `where`
        (InfluxQL) holds. Without a time range, InfluxDB counts all time."""
        conditions = [where] if where else []
        if start_ms is not None:
            conditions.append(f"time >= {start_ms}ms")
        if end_ms is not None:
            conditions.append(f"time < {end_ms}ms")
        if start_ms is None and end_ms is None:
            conditions.append("time >= 0")  # InfluxQL's default range ends now; readings may be later
        series = self.query(f"SELECT count(value) FROM readings WHERE {' AND '.join(conditions)}")
        return int(series[0]["values"][0][1]) if series else 0

    def wait_count(
        self, start_ms: int, end_ms: int, expect: int, timeout: float, interval: float = 0.5, where: str = ""
    ) -> int:
        """The count once it reaches `expect`, or when `timeout` s have passed."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.count(start_ms, end_ms, where)
            if found >= expect or time.monotonic() > deadline:
                return found
            time.sleep(interval)

    # --- the consumer's persistent session --------------------------------------------------------
    def reset_session(self, subscribe: bool = True) -> None:
        """Throw away the service identity's session (and whatever it queued), then (with `subscribe`)
        make it again with a single service's subscriptions, offline: the broker queues everything
        published from now on."""
        pki = self.home.pki_files

        async def reset() -> None:
            context = tls_context(pki.ca_cert, pki.ingest_cert, pki.ingest_key)
            conn = await connect("127.0.0.1", self.mqtt_port, context, INGEST_IDENTITY, clean=True)
            conn.disconnect()
            await conn.closed
            if not subscribe:
                return
            conn = await connect("127.0.0.1", self.mqtt_port, context, INGEST_IDENTITY, clean=False)
            await conn.subscribe([(DATA_SUBSCRIPTION, 1), (STATUS_SUBSCRIPTION, 1)])
            await asyncio.sleep(0.2)  # the retained statuses arrive (and are acknowledged) first
            conn.disconnect()
            await conn.closed

        asyncio.run(reset())

    # --- processes --------------------------------------------------------------------------------
    def spawn(self, role: str, argv: list[str], env: dict[str, str] | None = None, stdin: bool = False) -> Process:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{role}-{len(self.started_processes)}.log"
        with log.open("wb") as err:
            popen = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env or python_env(FIELDLINK_HOME=str(self.home.root)),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        process = Process(popen, role, log)
        self.started_processes.append(process)
        return process

    def generators(self, spec: dict[str, Any], devices: list[dict[str, Any]], processes: int) -> list[Process]:
        """Start `processes` generator processes, the devices dealt out among them; `spec["rate"]` is
        the total and is divided."""
        started = []
        for n in range(processes):
            share = devices[n::processes]
            own = dict(spec, host="127.0.0.1", port=self.mqtt_port, devices=share)
            if "rate" in spec:
                own["rate"] = spec["rate"] * len(share) / len(devices)
            process = self.spawn("generator", [sys.executable, "-m", "bench.loadgen"], stdin=True)
            assert process.popen.stdin is not None
            process.popen.stdin.write((json.dumps(own) + "\n").encode())
            process.popen.stdin.flush()
            started.append(process)
        return started

    @staticmethod
    def read_line(process: Process, key: str, timeout: float = 900) -> dict[str, Any]:
        """The next JSON line of the process's output that has `key`."""
        stdout: IO[bytes] | None = process.popen.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                raise BenchError(
                    f"{process.role} exited ({process.popen.wait()}); see {process.log}:\n{_tail(process.log)}"
                )
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and key in data:
                value: dict[str, Any] = data[key] if isinstance(data[key], dict) else data
                return value
        raise BenchError(f"{process.role} said nothing with {key!r} within {timeout} s")

    def finish(self, processes: list[Process], timeout: float = 900) -> list[dict[str, Any]]:
        results = [self.read_line(p, "result", timeout) for p in processes]
        for p in processes:
            p.popen.wait(30)
        return results

    def start_service(self, port: int, workers: int = 1, settings: dict[str, str] | None = None) -> Process:
        """`fieldlink ingest` (the real command) against the bench's stack; FIELDLINK_* overrides
        from `settings` (lower-case names without the prefix)."""
        env = python_env(
            FIELDLINK_HOME=str(self.home.root),
            **{f"FIELDLINK_{k.upper()}": v for k, v in (settings or {}).items()},
        )
        argv = [sys.executable, "-m", "tools", "ingest", "--port", str(port), "--log-level", "warning"]
        if workers != 1:
            argv += ["--workers", str(workers)]
        process = self.spawn("service", argv, env)
        if not wait_port(port, 60):
            raise BenchError(f"the ingest service did not listen on {port}; see {process.log}:\n{_tail(process.log)}")
        return process

    _http: ClassVar[httpx.Client | None] = None

    @classmethod
    def health(cls, port: int) -> dict[str, Any]:
        """The service's /healthz (one client kept alive: polling it must cost the service little)."""
        if cls._http is None:
            cls._http = httpx.Client(timeout=10)
        result: dict[str, Any] = cls._http.get(f"http://127.0.0.1:{port}/healthz").json()
        return result

    def wait_connected(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.health(port)["mqtt_connected"]:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        raise BenchError(f"the ingest service did not connect to the broker within {timeout} s")

    @staticmethod
    def stop(process: Process) -> None:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
            try:
                process.popen.wait(30)
            except subprocess.TimeoutExpired:
                stop_pid(process.popen.pid)
        process.popen.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def has_connection(pid: int, port: int) -> bool:
    """True if process `pid` holds a TCP connection to `port` on this machine (any state)."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                return True
    return False


# --- CPU time ---------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, own CPU ticks, ticks of waited-for children) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    # Fields 4 (ppid), 14-17 (utime, stime, cutime, cstime), counted from 1; fields 3.. are left here.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _tree(root: int, table: dict[int, tuple[int, int, int]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def cpu_snapshot(roles: dict[str, list[int]]) -> dict[str, int]:
    """CPU ticks used so far by each role's processes and their descendants (those that ended and
    were waited for included)."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    totals: dict[str, int] = {}
    for role, roots in roles.items():
        ticks = 0
        for root in roots:
            for pid in _tree(root, table):
                ticks += table[pid][1]
            if root in table:
                ticks += table[root][2]
        totals[role] = ticks
    return totals


@contextmanager
def cpu_meter(roles: dict[str, list[int]]) -> Iterator[dict[str, Any]]:
    """Measures CPU per role over the `with` block: {"wall_s", "cores": {role: cores used on average}}.
    Processes started inside the block are counted if added to `roles` before it ends."""
    result: dict[str, Any] = {}
    before = cpu_snapshot(roles)
    started = time.monotonic()
    yield result
    wall = time.monotonic() - started
    after = cpu_snapshot(roles)
    result["wall_s"] = wall
    result["cores"] = {
        role: round((after.get(role, 0) - before.get(role, 0)) / CLOCK_TICKS / max(wall, 1e-9), 3) for role in roles
    }
