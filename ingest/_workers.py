"""Several ingest processes sharing the data subscription (`fieldlink ingest --workers N`).

What Mosquitto 2.0 does with a shared subscription decides the design (docs/architecture.md, "Workers
and shared subscriptions"; tests/test_workers.py): it deals messages round robin to every member's
session, connected or not. A member that is away keeps its share queued, and its unacknowledged
messages too, until it comes back under the same client id with a persistent session; no other member
ever gets them, and a member that comes back with a clean session loses them. So:

- each worker has an identity of its own for good (`shared.identities.worker_identity`): worker 1 is
  the process that serves HTTP, workers 2..N are child processes (`python -m ingest._worker`) that the
  `WorkerPool` starts again, with the same identity, whenever one dies;
- an identity no longer wanted (fewer workers than in an earlier run) is retired: it leaves the group
  and stores what its session still holds, as nothing else would;
- each worker drops the data subscriptions of another layout it may still hold (the plain one of a
  single service, the default group), which would give it messages twice.

Every worker 2..N writes a report of its counts to its stdout, a pipe the pool reads, once a second
and once more when it stops (`report_line`): its `Stats.counters`, its write-latency histogram, its
gauges (connection, queue depths, spool) and its problems. The pool keeps them in a `Tally`, which
adds the last counts of every process a worker had before (a restarted process starts at 0) to its
running process's, so a worker's totals never go backwards. Worker 1 (the HTTP server) adds its own
and serves the sum (ingest/_metrics.py, `whole`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from fastapi import FastAPI
from pydantic import SecretStr

from ingest._consumer import Stats, mqtt_client
from ingest._settings import Settings
from ingest._storage import Storage
from shared.identities import INGEST_SHARED_GROUP, worker_identity
from shared.protocol import DATA_SUBSCRIPTION

log = logging.getLogger("fieldlink.ingest")

# A dying worker is started again after this long, doubling up to the maximum; a worker that ran for
# a minute starts again after the first delay.
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_STEADY_S = 60.0
# On a stop, how long workers get to store what they hold after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 15.0
# How often a worker reports its counts to the pool; a running worker whose last report is older than
# REPORT_STALE_S is named in /healthz's problems (its event loop is stuck).
REPORT_EVERY_S = 1.0
REPORT_STALE_S = 10.0


def shared_filter(group: str) -> str:
    return f"$share/{group}/{DATA_SUBSCRIPTION}"


def stale_filters(group: str | None) -> list[str]:
    """Data subscriptions that a worker of a service with this group may still hold from another
    layout (one worker, or the default group), and must drop."""
    wanted = shared_filter(group) if group else DATA_SUBSCRIPTION
    return [f for f in (DATA_SUBSCRIPTION, shared_filter(INGEST_SHARED_GROUP)) if f != wanted]


def all_filters(group: str | None) -> list[str]:
    """Every data subscription an identity of a service with this group may hold: what a retiring
    identity drops."""
    return [*stale_filters(group), shared_filter(group) if group else DATA_SUBSCRIPTION]


def worker_credentials(cert: Path, key: Path, number: int) -> tuple[Path, Path]:
    """Worker `number`'s certificate and key: worker 1's files with `.worker-N` before the suffix
    (ingest.pem -> ingest.worker-2.pem), so that they sit next to them."""
    if number == 1:
        return cert, key
    return (
        cert.with_name(f"{cert.stem}.worker-{number}{cert.suffix}"),
        key.with_name(f"{key.stem}.worker-{number}{key.suffix}"),
    )


@dataclass(frozen=True)
class WorkerPlan:
    """Who runs: workers 1..count, and the identities of an earlier, larger run to retire."""

    base: Settings  # the service's settings, as configured
    count: int
    group: str | None  # the shared subscription's group; None: one worker with the plain subscription
    retired: tuple[int, ...]

    @property
    def needs_pool(self) -> bool:
        return self.count > 1 or bool(self.retired)

    def identity(self, number: int) -> str:
        return worker_identity(self.base.mqtt_client_id, number)

    def credentials(self, number: int) -> tuple[Path, Path] | None:
        """Worker `number`'s certificate and key; None without TLS."""
        s = self.base
        if not s.mqtt_tls or s.mqtt_cert is None or s.mqtt_key is None:
            return None
        return worker_credentials(s.mqtt_cert, s.mqtt_key, number)

    def settings(self, number: int) -> Settings:
        """Worker `number`'s settings: its identity and files, the group. Everything else, the spool
        folder included, is the service's: a spool lives in a folder named by the identity."""
        update: dict[str, Any] = {
            "mqtt_client_id": self.identity(number),
            "mqtt_shared_group": self.group,
            "store_health": number == 1,  # every worker receives every status: one stores them
        }
        files = self.credentials(number)
        if files is not None:
            update["mqtt_cert"], update["mqtt_key"] = files
        return self.base.model_copy(update=update)

    def missing_credentials(self) -> list[tuple[int, Path, Path]]:
        """Workers 2..count whose certificate or key file is not there."""
        missing = []
        for number in range(2, self.count + 1):
            files = self.credentials(number)
            if files is not None and not all(path.is_file() for path in files):
                missing.append((number, *files))
        return missing


def plan_workers(settings: Settings, count: int) -> WorkerPlan:
    """The plan for `count` workers. Identities of a larger run are found by their certificate files
    (workers count+1, count+2, ... while the files are there); without TLS there are none to find."""
    group = settings.mqtt_shared_group or (INGEST_SHARED_GROUP if count > 1 else None)
    plan = WorkerPlan(settings, count, group, ())
    retired = []
    number = count + 1
    while (files := plan.credentials(number)) is not None and files[0].is_file():
        retired.append(number)
        number += 1
    return WorkerPlan(settings, count, group, tuple(retired))


def settings_payload(settings: Settings) -> bytes:
    """The settings as JSON for a child process (secrets included: it goes down a pipe, never to disk)."""
    data = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data).encode()


async def drop_subscriptions(settings: Settings, filters: list[str]) -> None:
    """Unsubscribe the identity's session from `filters` before its consumer starts. Best effort: a
    stale subscription costs duplicates (a point overwrites itself), never data, so a broker that
    cannot be reached now is only logged."""
    try:
        async with mqtt_client(settings, timeout_s=5) as client:
            await client.unsubscribe(filters)
    except (aiomqtt.MqttError, OSError) as exc:
        log.warning(
            "could not drop old subscriptions of %s (%s); it may get some messages twice", settings.mqtt_client_id, exc
        )


# --- what a worker reports, and the pool's sum of it ------------------------------------------------------


def report_line(run: str, stats: Stats, storage: Storage | None, histogram: dict[str, float]) -> bytes:
    """One report of a worker process (`run` names the process): a line of JSON. Counters and the
    histogram's counts only grow during a run; the rest is the state now."""
    problems = stats.problems() + (storage.problems() if storage is not None else [])
    report = {
        "run": run,
        "counters": dict(stats.counters),
        "histogram": histogram,
        "mqtt_connected": stats.mqtt_connected,
        "consumer_running": stats.consumer_running,
        "queues": stats.queues() if stats.queues is not None else {},
        "spool": storage.snapshot() if storage is not None else None,
        "problems": problems,
    }
    return json.dumps(report, separators=(",", ":")).encode() + b"\n"


def new_run() -> str:
    """A name for this process's reports, unique even when the kernel reuses a pid."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


@dataclass
class Report:
    """A worker process's newest report, as the pool received it."""

    run: str
    received: float  # time.monotonic()
    counters: Counter[str]
    histogram: dict[str, float]
    mqtt_connected: bool
    consumer_running: bool
    queues: dict[str, int]
    spool: dict[str, Any] | None
    problems: list[str]

    @classmethod
    def parse(cls, line: bytes, received: float) -> Report:
        data = json.loads(line)
        return cls(
            run=str(data["run"]),
            received=received,
            counters=Counter({str(k): int(v) for k, v in data["counters"].items()}),
            histogram={str(k): float(v) for k, v in data["histogram"].items()},
            mqtt_connected=bool(data["mqtt_connected"]),
            consumer_running=bool(data["consumer_running"]),
            queues={str(k): int(v) for k, v in data["queues"].items()},
            spool=data["spool"],
            problems=[str(p) for p in data["problems"]],
        )


def add_into(total: dict[str, float], more: dict[str, float]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0.0) + value


@dataclass
class Tally:
    """Each worker's counts over all its processes: the last report of every process that ended
    (kept, as an offset) plus the newest report of the one running. A restarted process counts from
    0 again; its worker's totals go on from where the dead one's last report left them, never back.

    What a process counted after its last report (less than `REPORT_EVERY_S` of work, when it is
    killed with SIGKILL) is not known to anyone; what it had not acknowledged comes again to its
    successor and is counted then."""

    clock: Callable[[], float] = time.monotonic
    _ended: dict[int, Counter[str]] = field(default_factory=dict)
    _ended_histogram: dict[int, dict[str, float]] = field(default_factory=dict)
    _ended_runs: set[str] = field(default_factory=set)
    _live: dict[int, Report] = field(default_factory=dict)

    def take(self, worker: int, line: bytes) -> None:
        """A report line from worker `worker`'s current process."""
        report = Report.parse(line, self.clock())
        if report.run in self._ended_runs:  # a late line of a process already added up: never twice
            return
        live = self._live.get(worker)
        if live is not None and live.run != report.run:
            self.end(worker)
        self._live[worker] = report

    def end(self, worker: int) -> None:
        """Worker `worker`'s process ended (its pipe is read to the end): keep its last counts."""
        live = self._live.pop(worker, None)
        if live is None:
            return
        self._ended_runs.add(live.run)
        self._ended.setdefault(worker, Counter()).update(live.counters)
        add_into(self._ended_histogram.setdefault(worker, {}), live.histogram)

    def live(self, worker: int) -> Report | None:
        """The running process's newest report; None before its first one, and once it ended."""
        return self._live.get(worker)

    def counters(self, worker: int) -> Counter[str]:
        total = Counter(self._ended.get(worker, Counter()))
        live = self._live.get(worker)
        if live is not None:
            total.update(live.counters)
        return total

    def histogram(self, worker: int) -> dict[str, float]:
        total = dict(self._ended_histogram.get(worker, {}))
        live = self._live.get(worker)
        if live is not None:
            add_into(total, live.histogram)
        return total

    def workers(self) -> set[int]:
        return set(self._ended) | set(self._live)


@dataclass
class _Worker:
    number: int
    retire: bool
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    down: str | None = "not started yet"  # why it is not running; None while it runs
    retired: bool = False
    started_at: float = 0.0
    reader: asyncio.Task[None] | None = None  # reads the running process's reports


class WorkerPool:
    """Workers 2..N (and retiring identities) as child processes, each started again with backoff when
    it dies; stopped with SIGTERM, then SIGKILL after `stop_timeout_s`. Children die with the parent
    (PR_SET_PDEATHSIG), so a killed parent leaves no orphans."""

    def __init__(
        self,
        plan: WorkerPlan,
        log_level: str = "info",
        *,
        log_format: str = "text",
        command: Callable[[int, bool], list[str]] | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        first_backoff_s: float = _FIRST_BACKOFF_S,
    ) -> None:
        self.plan = plan
        self._log_level = log_level
        self._log_format = log_format
        self._command = command or self._worker_command
        self._stop_timeout_s = stop_timeout_s
        self._first_backoff_s = first_backoff_s
        self.workers = [_Worker(n, retire=False) for n in range(2, plan.count + 1)]
        self.workers += [_Worker(n, retire=True) for n in plan.retired]
        self._tasks: list[asyncio.Task[None]] = []
        self.tally = Tally()

    def _worker_command(self, number: int, retire: bool) -> list[str]:
        command = [sys.executable, "-m", "ingest._worker", str(number), "--parent", str(os.getpid())]
        command += ["--log-level", self._log_level, "--log-format", self._log_format]
        return [*command, "--retire"] if retire else command

    async def __aenter__(self) -> WorkerPool:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        # Worker 1 is this process, whose consumer has not connected yet; the others do it themselves.
        await drop_subscriptions(self.plan.settings(1), stale_filters(self.plan.group))
        self._tasks = [asyncio.create_task(self._keep(w), name=f"ingest-worker-{w.number}") for w in self.workers]

    async def _keep(self, worker: _Worker) -> None:
        backoff = self._first_backoff_s
        while True:
            worker.started_at = time.monotonic()
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._command(worker.number, worker.retire),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,  # its reports (_worker.py sends its own prints to stderr)
                    start_new_session=True,  # Ctrl-C reaches the parent alone, which stops the workers in order
                    limit=1 << 20,
                )
            except OSError as exc:
                ended = f"could not be started ({exc})"
            else:
                worker.process, worker.down = process, None
                assert process.stdout is not None
                worker.reader = asyncio.create_task(
                    self._read_reports(worker.number, process.stdout), name=f"ingest-worker-{worker.number}-reports"
                )
                doing = "retiring" if worker.retire else "started"
                log.info("ingest worker %d (%s) %s: pid %d", worker.number, self._name(worker), doing, process.pid)
                assert process.stdin is not None
                with contextlib.suppress(ConnectionError):  # it died at once: told below
                    process.stdin.write(settings_payload(self.plan.settings(worker.number)))
                    await process.stdin.drain()
                    process.stdin.close()
                code = await process.wait()
                await self._ended(worker)
                worker.process = None
                if worker.retire and code == 0:
                    worker.retired = True
                    log.info("ingest identity %s retired: its session holds nothing more", self._name(worker))
                    return
                ended = f"pid {process.pid} {_how_it_ended(code)}"
            if time.monotonic() - worker.started_at > _STEADY_S:
                backoff = self._first_backoff_s
            worker.down = f"{ended}; starting it again in {backoff:.1f} s"
            log.error("ingest worker %d is down: %s", worker.number, worker.down)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            worker.restarts += 1

    async def _read_reports(self, number: int, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line beyond the limit: not a report
                log.error("ingest worker %d wrote a line too long to be a report", number)
                continue
            if not line:
                return
            try:
                self.tally.take(number, line)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.error("ingest worker %d wrote something that is not a report: %.200r", number, line)

    async def _ended(self, worker: _Worker) -> None:
        """The process ended: read its last reports (its pipe ends with it), then keep its counts."""
        reader, worker.reader = worker.reader, None
        if reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(reader), 5.0)
            except TimeoutError:  # something else holds its stdout open: what was read is kept
                reader.cancel()
        self.tally.end(worker.number)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        live = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), self._stop_timeout_s)
        except TimeoutError:
            for process in live:
                if process.returncode is None:
                    log.error(
                        "ingest worker (pid %d) did not stop within %.0f s: killed", process.pid, self._stop_timeout_s
                    )
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in live))
        for worker in self.workers:  # their last reports, sent as they stopped
            await self._ended(worker)

    def _name(self, worker: _Worker) -> str:
        return self.plan.identity(worker.number)

    def problems(self) -> list[str]:
        """Why a worker is not running, or not well (its own problems, as it reported them; no report
        for `REPORT_STALE_S`), for /healthz; empty if all run well (or retired)."""
        found = []
        now = self.tally.clock()
        for w in self.workers:
            name = f"ingest worker {w.number} ({self._name(w)})"
            if w.retired:
                continue
            if w.down is not None:
                found.append(f"{name} is down: {w.down}")
                continue
            live = self.tally.live(w.number)
            age = now - (live.received if live is not None else w.started_at)
            if age > REPORT_STALE_S:
                found.append(f"{name} has not reported its counts for {age:.0f} s")
            elif live is not None and not w.retire:  # a retiring one runs no consumer of its own
                found += [f"{name}: {problem}" for problem in live.problems]
        return found

    def running(self, number: int) -> bool:
        """Whether worker `number` (2..N) runs, not retiring: its gauges count."""
        return any(w.number == number and not w.retire and w.down is None and not w.retired for w in self.workers)

    def status(self) -> list[dict[str, Any]]:
        """Each worker: number, identity, pid, restarts, state (running, down, retiring, retired);
        worker 1 is this process."""
        rows: list[dict[str, Any]] = [
            {"worker": 1, "identity": self.plan.identity(1), "pid": os.getpid(), "restarts": 0, "state": "running"}
        ]
        for w in self.workers:
            pid = w.process.pid if w.process is not None and w.process.returncode is None else None
            if w.retired:
                state = "retired"
            elif pid is None:
                state = "down"
            else:
                state = "retiring" if w.retire else "running"
            rows.append(
                {"worker": w.number, "identity": self._name(w), "pid": pid, "restarts": w.restarts, "state": state}
            )
        return rows


def _how_it_ended(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def serve_with_workers(app: FastAPI, pool: WorkerPool) -> None:
    """Run `pool` for as long as the app runs: started before its own consumer (worker 1), stopped after
    it. /healthz reports a worker that is down (`app.state.workers`)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with pool, inner(app) as state:
            yield state

    app.router.lifespan_context = lifespan
    app.state.workers = pool
