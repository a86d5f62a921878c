"""The phases of `make bench`, one function each. A phase takes the `Run` (the bench's stack, sizes,
and what earlier phases found) and returns a JSON-able dict; `check` entries compare the points the
generator had acknowledged with the points InfluxDB holds (exactly equal, or the phase failed)."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import httpx

from bench.env import Bench, BenchError, Process, Window, cpu_snapshot, has_connection
from bench.influx import Target as InfluxTarget
from bench.influx import batches, ceiling
from bench.payloads import PROBE, span_ms, ticks
from tools._process import free_port, pid_alive

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    repeat: int = 3  # rounds of the rate phases (medians reported)
    fill_1: int = 1200  # messages per device, 1 reading each (50 devices: 60,000 messages)
    fill_60: int = 400  # messages per device, 60 readings each (20,000 messages, 1.2 M points)
    diy_1: int = 60  # the do-it-yourself script is slow: fewer messages, same rate method
    diy_60: int = 40
    ceiling_1: int = 6000  # InfluxDB's ceiling: messages per device whose points are written
    ceiling_60: int = 400
    workers_fill: int = 1200  # messages per device (1 reading each) for one worker against two
    live_s: float = 20.0  # latency phases
    probes_per_s: float = 100.0  # latency probes, whatever the load: the poller's queries stay small
    storm_devices: int = 500
    storm_s: float = 10.0  # publishing after the reconnect
    spool_s: float = 80.0  # the spool phase's load; InfluxDB stopped 10-40 s, killed and restarted at 50 s
    spool_rate: float = 0.5  # of fieldlink's measured maximum at 60 readings per message
    clients_rounds: int = 3
    clients_batches: int = 8
    generators: int = 2  # generator processes
    devices: int = 50


FULL = Sizes()
QUICK = Sizes(
    repeat=1,
    fill_1=300,
    fill_60=100,
    diy_1=20,
    diy_60=12,
    ceiling_1=1500,
    ceiling_60=100,
    workers_fill=200,
    live_s=5.0,
    storm_devices=500,
    storm_s=3.0,
    spool_s=16.0,
    clients_rounds=1,
    clients_batches=2,
)


@dataclass
class Run:
    bench: Bench
    sizes: Sizes
    results: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print

    @property
    def devices(self) -> list[dict[str, Any]]:
        return self.bench.devices


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _check(expected: int, counted: int) -> dict[str, Any]:
    return {"expected": expected, "counted": counted, "ok": expected == counted}


# --- building blocks -------------------------------------------------------------------------------
def fill(run: Run, shape: int, per_device: int) -> tuple[Window, dict[str, Any]]:
    """Publish `per_device` messages from every device while no consumer reads: the broker queues them
    for the consumer's persistent session. Returns the phase's window and what the generator says."""
    b = run.bench
    window = b.window(per_device * span_ms(shape))
    spec = {"mode": "fill", "shape": shape, "messages": per_device, "base_ms": window.start_ms, "window": 20}
    results = b.finish(b.generators(spec, run.devices, run.sizes.generators))
    acked = sum(r["acked_messages"] for r in results)
    points = sum(r["acked_points"] for r in results)
    expected = per_device * len(run.devices)
    if acked != expected:
        raise BenchError(f"the generator had {acked} of {expected} messages acknowledged")
    seconds = max(r["last_ack"] for r in results) - min(r["first_ack"] for r in results)
    return window, {"messages": acked, "points": points, "seconds": seconds, "msgs_per_s": acked / seconds}


def _roles(b: Bench, **more: list[int]) -> dict[str, list[int]]:
    pids = b.pids()
    return {"broker": [pids["mosquitto"]], "database": [pids["influxdb"]], **more}


def _cores(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    return {role: round((after[role] - before.get(role, 0)) / CLOCK_TICKS / seconds, 3) for role in after}


def _system_busy() -> int:
    """CPU ticks the whole machine has been busy since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields[:8]) - idle


class CpuWindow:
    """CPU per role, the harness itself, and everyone else on the machine, between `start` and `stop`."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles
        self._before: dict[str, int] = {}

    def start(self) -> None:
        self._before = cpu_snapshot(self.roles)
        self._busy = _system_busy()
        self._own = time.process_time()
        self._t = time.monotonic()

    def stop(self, extra_cpu_s: dict[str, float] | None = None) -> dict[str, Any]:
        seconds = time.monotonic() - self._t
        cores = _cores(self._before, cpu_snapshot(self.roles), seconds)
        for role, cpu_s in (extra_cpu_s or {}).items():
            cores[role] = round(cpu_s / seconds, 3)
        cores["harness"] = round((time.process_time() - self._own) / seconds, 3)
        busy = (_system_busy() - self._busy) / CLOCK_TICKS / seconds
        cores["others"] = round(max(0.0, busy - sum(cores.values())), 3)
        return {"seconds": round(seconds, 3), "cores": cores, "machine_busy": round(busy, 3)}


def _spawn_subscriber(run: Run, mode: str, expect: int) -> Process:
    b = run.bench
    pki = b.home.pki_files
    spec = {
        "mode": mode,
        "ca": str(pki.ca_cert),
        "cert": str(pki.ingest_cert),
        "key": str(pki.ingest_key),
        "port": b.mqtt_port,
        "expect": expect,
        "influx_url": b.influx_url,
        "influx_auth": list(b.writer_auth()),
        "database": b.state.database,
    }
    process = b.spawn(mode, [sys.executable, "-m", "bench.subscriber"], stdin=True)
    assert process.popen.stdin is not None
    process.popen.stdin.write((json.dumps(spec) + "\n").encode())
    process.popen.stdin.flush()
    return process


def measure_reference(run: Run, mode: str, shape: int, per_device: int) -> dict[str, Any]:
    """The bare subscriber or the do-it-yourself script draining a queue filled for it."""
    b = run.bench
    b.reset_session()
    window, filled = fill(run, shape, per_device)
    process = _spawn_subscriber(run, mode, filled["messages"])
    cpu = CpuWindow(_roles(b, consumer=[process.popen.pid]))
    cpu.start()
    result = b.finish([process])[0]
    seconds = result["last"] - result["first"]
    rate = (result["messages"] - 1) / seconds if seconds > 0 else float("nan")
    out: dict[str, Any] = {
        "shape": shape,
        "messages": result["messages"],
        "msgs_per_s": rate,
        "points_per_s": rate * shape,
        "seconds": seconds,
        "fill": filled,
        "cpu": cpu.stop({"consumer": result["cpu_s"]}),
        "received": _check(filled["messages"], result["messages"]),
    }
    if mode == "diy":
        out["check"] = _check(filled["points"], b.count(window.start_ms, window.end_ms))
        out["write_errors"] = result["errors"]
    return out


def measure_influx(run: Run, shape: int, per_device: int) -> dict[str, Any]:
    """InfluxDB alone: the points of `per_device` messages per device in 5,000-point batches, over one
    connection and over two at once; the better is the ceiling."""
    b = run.bench
    devices = [d["id"] for d in run.devices]
    target = InfluxTarget.v1(int(b.state.influx_port), b.state.database, b.writer_auth())
    out: dict[str, Any] = {"shape": shape}
    for connections in (1, 2):
        window = b.window(per_device * span_ms(shape))
        bodies = batches(devices, per_device, shape, window.start_ms)
        cpu = CpuWindow(_roles(b))
        cpu.start()
        result = ceiling(target, bodies, connections)
        result["cpu"] = cpu.stop()
        result["check"] = _check(result["points"], b.count(window.start_ms, window.end_ms))
        out[f"connections_{connections}"] = result
    out["points_per_s"] = max(out["connections_1"]["points_per_s"], out["connections_2"]["points_per_s"])
    return out


def workers_supported() -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "tools", "ingest", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return "--workers" in result.stdout


def _counters(port: int) -> dict[str, int] | None:
    try:
        counters: dict[str, int] = Bench.health(port).get("counters", {})
        return counters
    except (httpx.HTTPError, ValueError):
        return None


def prepare_service_session(run: Run, workers: int, settings: dict[str, str]) -> None:
    """Make the service's persistent session(s) with the subscriptions the service itself makes, then
    leave them offline: the service identity's session is thrown away first (a persistent session keeps
    every subscription it ever made: one of an earlier run with another number of workers would get
    the messages a second time), then `fieldlink ingest` runs until each of its workers is connected
    (and the identities of a larger earlier run are retired), and stops."""
    b = run.bench
    b.reset_session(subscribe=False)
    port = free_port()
    log = b.home.logs / "mosquitto.log"
    offset = log.stat().st_size if log.exists() else 0
    service = b.start_service(port, workers, settings)
    b.wait_connected(port)
    deadline = time.monotonic() + 60
    while True:
        health = Bench.health(port)
        rows = health.get("workers") or []
        busy = [r for r in rows if r["state"] not in ("running", "retired")]
        connected = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""
        waiting = [r for r in rows if r["state"] == "running" and f" as {r['identity']} (" not in connected]
        if not busy and not waiting:
            break
        if time.monotonic() > deadline:
            b.stop(service)
            raise BenchError(f"the service's workers did not all connect: {rows}")
        time.sleep(0.1)
    time.sleep(0.5)  # their subscriptions made
    b.stop(service)


def _wait_workers_connecting(b: Bench, port: int, workers: int, timeout: float = 60) -> None:
    """Until each of the service's `workers` processes has a TCP connection to the broker open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = Bench.health(port).get("workers") or []
        except (httpx.HTTPError, ValueError):
            rows = []
        pids = [r["pid"] for r in rows if r["state"] == "running" and r["pid"]]
        if workers == 1 and not rows:
            pids = [p.popen.pid for p in b.started_processes[-1:]]
        if len(pids) >= workers and all(has_connection(pid, b.mqtt_port) for pid in pids):
            return
        time.sleep(0.1)
    raise BenchError(f"the service's {workers} worker(s) did not connect within {timeout} s")


def measure_fieldlink(
    run: Run,
    shape: int,
    per_device: int,
    workers: int = 1,
    settings: dict[str, str] | None = None,
    progress: str = "healthz",
    hold_broker: bool = False,
) -> dict[str, Any]:
    """`fieldlink ingest` (every check on, acknowledging after storage) draining a queue filled for its
    session: messages per second from the first stored message to the last, and the CPU split.
    Progress is read from /healthz's counters (`progress="healthz"`, one worker's own) or from InfluxDB's
    count (`"influx"`, polled every 0.2 s, for any number of workers). With `hold_broker`, the broker is
    stopped (SIGSTOP) until every worker process has its connection open, so that all start draining
    at once (a child worker starts a second or so after the first)."""
    b = run.bench
    settings = settings or {}
    if workers > 1:
        progress = "influx"  # what is stored; /healthz has workers 2..N's counts only as of their last report
    prepare_service_session(run, workers, settings)
    window, filled = fill(run, shape, per_device)
    expect_messages, expect_points = filled["messages"], filled["points"]
    port = free_port()
    started = time.monotonic()
    broker = b.pids()["mosquitto"]
    if hold_broker:
        os.kill(broker, signal.SIGSTOP)
    try:
        service = b.start_service(port, workers, settings)
        if hold_broker:
            _wait_workers_connecting(b, port, workers)
    finally:
        if hold_broker:
            os.kill(broker, signal.SIGCONT)
    cpu = CpuWindow(_roles(b, service=[service.popen.pid]))
    first: tuple[float, int] | None = None
    last_change = time.monotonic()
    stored = -1
    use_influx = progress == "influx"
    done_at = 0.0
    while True:
        if use_influx:
            now_stored = b.count(window.start_ms, window.end_ms) // shape
        else:
            now_stored = (_counters(port) or {}).get("stored_messages", 0)
        now = time.monotonic()
        if now_stored > 0 and first is None:
            first = (now, now_stored)
            cpu.start()
        if now_stored != stored:
            stored, last_change = now_stored, now
        if stored >= expect_messages:
            done_at = now
            split = cpu.stop()
            break
        if now - last_change > 60:
            b.stop(service)
            raise BenchError(f"fieldlink stalled at {stored} of {expect_messages} messages; see {service.log}")
        if service.popen.poll() is not None:
            raise BenchError(f"the ingest service exited; see {service.log}")
        time.sleep(0.2 if use_influx else 0.1)
    health = _counters(port) or {}
    b.stop(service)
    assert first is not None
    seconds = done_at - first[0]
    rate = (expect_messages - first[1]) / seconds if seconds > 0 else float("nan")
    return {
        "shape": shape,
        "workers": workers,
        "progress": progress,
        "messages": expect_messages,
        "msgs_per_s": rate,
        "points_per_s": rate * shape,
        "seconds": seconds,
        "from_start_s": done_at - started,
        "fill": filled,
        "cpu": split,
        "counters": health,
        "check": _check(expect_points, b.count(window.start_ms, window.end_ms)),
    }


def _summarise(runs: list[dict[str, Any]], key: str = "msgs_per_s") -> dict[str, Any]:
    values = [r[key] for r in runs if key in r]
    return {"median": median(values), "values": values, "runs": runs}


# --- the phases ------------------------------------------------------------------------------------
def phase_rates(run: Run) -> dict[str, Any]:
    """The bare subscriber, InfluxDB alone, the do-it-yourself script and fieldlink, at 1 and at 60
    readings per message, in rounds (each round all of them, side by side); medians over rounds."""
    s = run.sizes
    measured: dict[str, list[dict[str, Any]]] = {}
    for r in range(s.repeat):
        for shape in (1, 60):
            one = shape == 1
            steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                (f"bare_{shape}", partial(measure_reference, run, "bare", shape, s.fill_1 if one else s.fill_60)),
                (f"influx_{shape}", partial(measure_influx, run, shape, s.ceiling_1 if one else s.ceiling_60)),
                (f"diy_{shape}", partial(measure_reference, run, "diy", shape, s.diy_1 if one else s.diy_60)),
                (f"fieldlink_{shape}", partial(measure_fieldlink, run, shape, s.fill_1 if one else s.fill_60)),
            ]
            for name, step in steps:
                run.log(f"rates: round {r + 1}/{s.repeat}: {name}")
                result = step()
                measured.setdefault(name, []).append(result)
                rate = result.get("msgs_per_s", result.get("points_per_s"))
                run.log(f"  {name}: {rate:,.0f} {'points' if name.startswith('influx') else 'msgs'}/s")
    out: dict[str, Any] = {}
    for name, runs in measured.items():
        out[name] = _summarise(runs, "points_per_s" if name.startswith("influx") else "msgs_per_s")
    return out


class ProbePoller(threading.Thread):
    """Asks InfluxDB every `interval` s for the probe readings stored in the last `lookback_ms` of device
    time before the newest one seen; a probe's latency is the time the first answer holding it came
    back, less its device timestamp (so at most one interval and one query late: an upper bound). A
    probe more than `lookback_ms` behind the newest one is found by `sweep` at the end, and counted as
    late with the sweep's time."""

    def __init__(self, b: Bench, since_ms: int, interval: float = 0.025, lookback_ms: int = 3000) -> None:
        super().__init__(daemon=True)
        self.b = b
        self.since_ms = since_ms
        self.interval = interval
        self.lookback_ms = lookback_ms
        self.seen: dict[tuple[str, int], float] = {}
        self.swept = 0
        self.queries = 0
        self.query_ms: list[float] = []
        self.stop_event = threading.Event()
        self.error: str | None = None
        self._client = httpx.Client(auth=b.admin_auth(), timeout=30)

    def _probes(self, since_ms: int) -> list[tuple[str, int]]:
        q = f"SELECT value, device FROM readings WHERE sensor = '{PROBE}' AND time >= {since_ms}ms"
        response = self._client.post(
            f"{self.b.influx_url}/query", data={"db": self.b.state.database, "q": q, "epoch": "ms"}
        )
        found = []
        for series in response.json()["results"][0].get("series", []):
            found += [(device, t) for t, _, device in series["values"]]
        return found

    def run(self) -> None:
        since = newest = self.since_ms
        try:
            while not self.stop_event.is_set():
                tick = time.monotonic()
                found = self._probes(since)
                answered = time.time() * 1000
                self.queries += 1
                self.query_ms.append((time.monotonic() - tick) * 1000)
                for key in found:
                    if key not in self.seen:
                        self.seen[key] = answered
                        newest = max(newest, key[1])
                since = max(self.since_ms, newest - self.lookback_ms)
                time.sleep(max(0.0, self.interval - (time.monotonic() - tick)))
        except Exception as exc:
            self.error = repr(exc)

    def sweep(self) -> None:
        """After the poller stopped: every probe stored since the start, those not seen yet as late."""
        now = time.time() * 1000
        for key in self._probes(self.since_ms):
            if key not in self.seen:
                self.seen[key] = now
                self.swept += 1
        self._client.close()

    def latencies(self, since_ms: int = 0) -> list[float]:
        """Latencies of the probes stamped at `since_ms` or later (the warm-up's are not)."""
        return sorted(seen - t for (_, t), seen in self.seen.items() if t >= since_ms)


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return values[index]


def live_load(
    run: Run,
    shape: int,
    rate: float,
    duration: float,
    service: Process,
    during: Callable[[float], None] | None = None,
    devices: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the generator live at `rate` messages per second for `duration` s against a running service;
    `during(elapsed)` is called about every 0.1 s meanwhile. Returns the generator's totals, the CPU
    split over the load and the phase's time range."""
    b = run.bench
    start_ms = int(time.time() * 1000)
    spec = {
        "mode": "live",
        "shape": shape,
        "rate": rate,
        "duration": duration,
        "window": 20,
    }
    devices = devices or run.devices
    spec["probe_every"] = max(1, round(rate / run.sizes.probes_per_s))
    generators = b.generators(spec, devices, run.sizes.generators)
    warm_at = max(b.read_line(g, "warm", 300)["at"] for g in generators)
    cpu = CpuWindow(_roles(b, service=[service.popen.pid], generator=[g.popen.pid for g in generators]))
    cpu.start()
    clock = time.monotonic()
    split: dict[str, Any] | None = None
    while any(g.popen.poll() is None for g in generators):
        elapsed = time.monotonic() - clock
        if split is None and elapsed >= max(duration - 0.5, duration * 0.8):
            split = cpu.stop()  # a little before the generators end and take their CPU time along
        if during is not None:
            during(elapsed)
        time.sleep(0.1)
        # The generators print their results and exit once everything they sent is acknowledged.
        if split is not None:
            break
    results = b.finish(generators)
    if split is None:
        split = cpu.stop()
    return {
        "start_ms": start_ms,
        "made": sum(r["made"] for r in results),
        "acked_messages": sum(r["acked_messages"] for r in results),
        "acked_points": sum(r["acked_points"] for r in results),
        "msgs_per_s": sum(r["made"] - r["warm_up"] for r in results) / duration,
        "warm_at_ms": int(warm_at * 1000),
        "max_backlog": max(r["max_backlog"] for r in results),
        "connect_failures": sum(r["connect_failures"] for r in results),
        "devices": len(devices),
        "probes": sum(r["probes"] for r in results),
        "max_ahead_ms": max(r["max_ahead_ms"] for r in results),
        "finished": max(r["finished"] for r in results),
        "cpu": split,
    }


def live_devices(run: Run, shape: int, rate: float) -> list[dict[str, Any]]:
    """Enough devices for `rate` live messages per second: a device stamps a message's ticks 1 ms apart
    and never reuses a millisecond, so one device sends at most 1000 / ticks messages a second before its
    stamps run ahead of the clock; keep each at half that, adding devices to the 50 where needed."""
    per_device = 1000 / ticks(shape) / 2
    needed = max(len(run.devices), math.ceil(rate / per_device))
    b = run.bench
    extra = needed - len(run.devices)
    if extra > len(b.live_devices):
        b.live_devices += b.provision("live", extra - len(b.live_devices), start=len(b.live_devices))
    return run.devices + b.live_devices[:extra]


def measure_latency(run: Run, shape: int, rate: float) -> dict[str, Any]:
    b = run.bench
    b.reset_session()
    port = free_port()
    service = b.start_service(port)
    b.wait_connected(port)
    since = int(time.time() * 1000)
    poller = ProbePoller(b, since)
    poller.start()
    load = live_load(run, shape, rate, run.sizes.live_s, service, devices=live_devices(run, shape, rate))
    end_ms = int(load["finished"] * 1000) + 60_000
    counted = b.wait_count(load["start_ms"], end_ms, load["acked_points"], timeout=60)
    time.sleep(0.3)  # the last probes found
    poller.stop_event.set()
    poller.join(30)
    poller.sweep()
    counters = _counters(port) or {}
    b.stop(service)
    latencies = poller.latencies(load["warm_at_ms"])
    return {
        "shape": shape,
        "rate_asked": rate,
        "load": load,
        "probes": len(latencies),
        "probes_late": poller.swept,
        "polls": poller.queries,
        "poll_ms_median": median(poller.query_ms),
        "poll_error": poller.error,
        "latency_ms": {
            "p50": _percentile(latencies, 50),
            "p90": _percentile(latencies, 90),
            "p99": _percentile(latencies, 99),
            "max": latencies[-1] if latencies else float("nan"),
        },
        "counters": counters,
        "check": _check(load["acked_points"], counted),
    }


def phase_latency(run: Run) -> dict[str, Any]:
    """End-to-end latency (device timestamp to queryable) at half of fieldlink's measured maximum."""
    out: dict[str, Any] = {}
    rates = run.results.get("rates", {})
    for shape, fallback in ((1, 2000.0), (60, 1000.0)):
        measured = rates.get(f"fieldlink_{shape}", {}).get("median")
        rate = 0.5 * measured if measured and measured == measured else fallback
        run.log(f"latency: {shape} reading(s) per message at {rate:,.0f} msgs/s")
        out[f"latency_{shape}"] = measure_latency(run, shape, rate)
        lat = out[f"latency_{shape}"]["latency_ms"]
        run.log(f"  p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms")
    return out


def phase_workers(run: Run) -> dict[str, Any]:
    """One worker against two (`fieldlink ingest --workers N`), 1 reading per message, side by side."""
    if not workers_supported():
        return {"skipped": "`fieldlink ingest` has no --workers option yet"}
    s = run.sizes
    measured: dict[str, list[dict[str, Any]]] = {"workers_1": [], "workers_2": []}
    for r in range(s.repeat):
        for workers in (1, 2):
            run.log(f"workers: round {r + 1}/{s.repeat}: {workers}")
            result = measure_fieldlink(run, 1, s.workers_fill, workers=workers, progress="influx", hold_broker=True)
            measured[f"workers_{workers}"].append(result)
            run.log(f"  {workers} worker(s): {result['msgs_per_s']:,.0f} msgs/s")
    return {name: _summarise(runs) for name, runs in measured.items()}


def phase_storm(run: Run) -> dict[str, Any]:
    """500 devices over TLS connected and publishing; every connection dropped at once, every device
    reconnecting at once: how long until all are connected again, and until each has a message
    acknowledged after the reconnect. The service runs throughout; every point is counted."""
    b = run.bench
    devices = b.storm_devices[: run.sizes.storm_devices]
    b.reset_session()
    port = free_port()
    service = b.start_service(port)
    b.wait_connected(port)
    start_ms = int(time.time() * 1000)
    spec = {"mode": "storm", "shape": 1, "duration": run.sizes.storm_s, "storm_rate": 1.0, "window": 5}
    generators = b.generators(spec, devices, run.sizes.generators)
    ready = [b.read_line(g, "ready", 300) for g in generators]
    cpu = CpuWindow(_roles(b, service=[service.popen.pid], generator=[g.popen.pid for g in generators]))
    cpu.start()
    for g in generators:
        assert g.popen.stdin is not None
        g.popen.stdin.write(b"go\n")
        g.popen.stdin.flush()
    results = b.finish(generators, timeout=300)
    split = cpu.stop()
    dropped = min(r["dropped"] for r in results)
    connack = sorted(t - dropped for r in results for t in r["connack_at"])
    back = sorted(t - dropped for r in results for t in r["back_at"] if t)
    points = sum(r["acked_points"] for r in results)
    end_ms = int(time.time() * 1000) + 60_000
    counted = b.wait_count(start_ms, end_ms, points, timeout=60)
    counters = _counters(port) or {}
    b.stop(service)
    return {
        "devices": len(devices),
        "first_connect_s": max(r["connect_s"] for r in ready),
        "all_connected_s": connack[-1] if connack else None,
        "connected_p50_s": _percentile(connack, 50),
        "all_publishing_s": back[-1] if len(back) == len(devices) else None,
        "publishing_p50_s": _percentile(back, 50),
        "publishing": len(back),
        "connect_failures": sum(r["connect_failures"] for r in results),
        "messages": sum(r["acked_messages"] for r in results),
        "cpu": split,
        "counters": counters,
        "check": _check(points, counted),
    }


def _influx_pid(b: Bench) -> int:
    return int(b.pids()["influxdb"])


def phase_spool(run: Run) -> dict[str, Any]:
    """Live load through a database outage: InfluxDB stopped (SIGTERM) for 30 s, started again, then
    killed (SIGKILL) and restarted at once, while the generator publishes; afterwards every point must
    be stored exactly once. With the service's disk spool (settings `spool_dir`, ...) batches go there
    while InfluxDB is away; its counters are reported."""
    b = run.bench
    s = run.sizes
    scale = s.spool_s / FULL.spool_s
    stop_at, start_at, kill_at = 10 * scale, 40 * scale, 50 * scale
    measured = run.results.get("rates", {}).get("fieldlink_60", {}).get("median")
    rate = s.spool_rate * measured if measured and measured == measured else 500.0
    spool_dir = b.root / "spool"
    settings = {"spool_dir": str(spool_dir)}
    b.reset_session()
    port = free_port()
    service = b.start_service(port, settings=settings)
    b.wait_connected(port)
    events: list[dict[str, Any]] = []
    done: set[str] = set()
    peak: dict[str, int] = {}

    def during(elapsed: float) -> None:
        counters = _counters(port)
        if counters:
            for key, value in counters.items():
                peak[key] = max(peak.get(key, 0), value)
        if elapsed >= stop_at and "stop" not in done:
            done.add("stop")
            pid = _influx_pid(b)
            os.kill(pid, signal.SIGTERM)
            while pid_alive(pid):
                time.sleep(0.05)
            events.append({"at_s": round(elapsed, 2), "event": "InfluxDB stopped (SIGTERM)"})
        elif elapsed >= start_at and "start" not in done:
            done.add("start")
            b.stack.up()
            events.append({"at_s": round(elapsed, 2), "event": "InfluxDB started"})
        elif elapsed >= kill_at and "kill" not in done:
            done.add("kill")
            pid = _influx_pid(b)
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.01)
            b.stack.up()
            events.append({"at_s": round(elapsed, 2), "event": "InfluxDB killed (SIGKILL) and restarted"})

    load = live_load(run, 60, rate, s.spool_s, service, during, live_devices(run, 60, rate))
    end_ms = int(load["finished"] * 1000) + 60_000
    counted = b.wait_count(load["start_ms"], end_ms, load["acked_points"], timeout=240, interval=1.0)
    caught_up = time.time() - load["finished"]
    counters = _counters(port) or {}
    b.stop(service)
    return {
        "rate_asked": rate,
        "events": events,
        "load": load,
        "caught_up_s": caught_up,
        "counters": counters,
        "peak_counters": peak,
        "spool_supported": any(k.startswith("spool") for k in peak),
        "check": _check(load["acked_points"], counted),
    }


def phase_clients(run: Run) -> dict[str, Any]:
    from bench.clients import compare

    return compare(run.bench, run.sizes.clients_rounds, run.sizes.clients_batches)


PHASES: dict[str, Callable[[Run], dict[str, Any]]] = {
    "rates": phase_rates,
    "latency": phase_latency,
    "storm": phase_storm,
    "spool": phase_spool,
    "workers": phase_workers,
    "clients": phase_clients,
}


def sizes_dict(sizes: Sizes) -> dict[str, Any]:
    return asdict(sizes)
