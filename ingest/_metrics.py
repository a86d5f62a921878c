"""Prometheus metrics (`GET /metrics`), read from what the service already counts.

Nothing here adds work to the message path: the counters are `Stats.counters` (the same numbers
`/healthz` shows), read at scrape time by a collector; the only thing measured here is the time of
each InfluxDB write, by wrapping the writer. Label sets are bounded: a rejection's `reason` (a fixed
list), a message's `kind`, a worker's number (at most 64), a device's state; per-device series exist
only in the one deliberate gauge `fieldlink_device_last_seen_age_seconds` (one per registered
device). The names and labels are listed in docs/metrics.md; a test parses the output with
prometheus-client's own parser.

With `--workers N` the numbers are the whole service's. Worker 1 (the process serving HTTP) answers
`/metrics` and `/healthz`; workers 2..N report their counters, write-latency histogram and gauges to it
once a second over their stdout pipe (ingest/_workers.py: `report_line`, `Tally`), and `whole` adds
them to worker 1's own at scrape time: every counter is the sum over the workers, each worker's part
kept across its restarts (the last report of a process that died stays in the sum), so no counter
goes backwards while worker 1 runs. A worker's counts reach the sum up to a second late. Gauges are
summed (queue depths, spool), or true only when true of every running worker (connected, running).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ingest._consumer import Stats
from ingest._registry import Registry
from ingest._storage import Storage
from ingest._workers import WorkerPool, add_into
from ingest._writer import PointWriter

# Every reason a message can be refused for (docs/protocol.md, docs/security.md): always exported, so
# a rate over a reason that has not happened yet is 0, not absent.
REJECTION_REASONS = (
    "bad_topic",
    "bad_version",
    "clock_skew",
    "internal_error",
    "malformed",
    "revoked",
    "storage_rejected",
    "too_large",
    "too_many_sensors",
    "too_old",
    "unknown_certificate",
    "unregistered",
)

# Counters of Stats.counters exported under a name of their own: (metric name without _total,
# counter, help). Anything else the service counts goes to fieldlink_events_total{event=...}.
_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("fieldlink_messages_stored", "stored_messages", "Data messages whose points are stored (InfluxDB or spool)."),
    ("fieldlink_points_written", "stored_points", "Points written to InfluxDB (directly or from the spool)."),
    ("fieldlink_failed_reads", "failed_reads", "Readings sent as null (a failed sensor read): not stored."),
    ("fieldlink_statuses_stored", "status_stored", "Status messages stored as points of the health measurement."),
    ("fieldlink_write_retries", "write_retries", "Write batches tried again (no InfluxDB, no spool took them)."),
    ("fieldlink_write_failures", "write_failures", "Writes InfluxDB failed or did not answer in time (to the spool)."),
    ("fieldlink_spooled_batches", "spooled_batches", "Write batches appended to the spool during an InfluxDB outage."),
    ("fieldlink_spooled_points", "spooled_points", "Points appended to the spool."),
    ("fieldlink_spool_replayed_points", "spool_replayed_points", "Points written back from the spool to InfluxDB."),
    ("fieldlink_mqtt_disconnects", "mqtt_disconnects", "Connections to the broker lost."),
    ("fieldlink_consumer_restarts", "consumer_restarts", "Times the supervisor restarted a dead consumer."),
    ("fieldlink_device_acks", "device_acks", "Ack messages published to devices."),
    ("fieldlink_dropped_qos0", "dropped_qos0", "QoS 0 messages dropped beyond the window (nodes send none)."),
)
_NAMED = {counter for _, counter, _ in _COUNTERS} | {"received", "status_received", "rejected"}

# Write latency buckets, seconds: a batch to InfluxDB on loopback takes a few ms; spool_after_s is 2 s.
_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
# The `le` labels, as prometheus-client writes them.
_LE = (*(floatToGoString(b) for b in _WRITE_BUCKETS), "+Inf")  # type: ignore[no-untyped-call]
_OUTCOMES = ("ok", "error")
_WRITE_NAME = "fieldlink_write_duration_seconds"
_WRITE_HELP = "Time of each write request to InfluxDB (consumer batches and spool write-backs), by outcome."

_WORKER_STATES = ("running", "down", "retiring", "retired")


def histogram_counts(histogram: Histogram) -> dict[str, float]:
    """A write-latency histogram as flat counts that only grow, to add up over processes:
    `<outcome>|<le>` (cumulative bucket counts) and `<outcome>|sum`."""
    counts: dict[str, float] = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            outcome = sample.labels.get("outcome")
            if sample.name.endswith("_bucket"):
                counts[f"{outcome}|{sample.labels['le']}"] = sample.value
            elif sample.name.endswith("_sum"):
                counts[f"{outcome}|sum"] = sample.value
    return counts


def _histogram_family(counts: dict[str, float]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(_WRITE_NAME, _WRITE_HELP, labels=["outcome"])
    for outcome in _OUTCOMES:
        buckets = [(le, counts.get(f"{outcome}|{le}", 0.0)) for le in _LE]
        family.add_metric([outcome], buckets, sum_value=counts.get(f"{outcome}|sum", 0.0))
    return family


@dataclass
class Whole:
    """The whole service's numbers: worker 1's own (`Stats`, its storage) plus what workers 2..N
    reported (`WorkerPool.tally`)."""

    counters: Counter[str]  # sums over every worker, each worker's over all its processes
    mqtt_connected: bool  # worker 1 and every running worker 2..N connected (one not reported yet: not known, False)
    consumer_running: bool
    queues: dict[str, int]  # summed
    spool: dict[str, Any] | None  # records, bytes, max_bytes summed; influx_outage, full: any
    workers: list[dict[str, Any]] | None  # the pool's rows, each with its worker's counters and connection


def whole(stats: Stats, storage: Storage | None, pool: WorkerPool | None) -> Whole:
    counters = Counter(stats.counters)
    connected, running = stats.mqtt_connected, stats.consumer_running
    queues = dict(stats.queues() if stats.queues is not None else {})
    spool = storage.snapshot() if storage is not None else None
    if pool is None:
        return Whole(counters, connected, running, queues, spool, None)
    rows = []
    now = pool.tally.clock()
    for row in pool.status():
        number = row["worker"]
        if number == 1:
            rows.append({**row, "counters": dict(stats.counters), "mqtt_connected": connected, "report_age_ms": None})
            continue
        mine = pool.tally.counters(number)
        counters.update(mine)
        live = pool.tally.live(number)
        if pool.running(number):
            connected = connected and live is not None and live.mqtt_connected
            running = running and live is not None and live.consumer_running
        if live is not None:
            for key, depth in live.queues.items():
                queues[key] = queues.get(key, 0) + depth
            spool = _spool_sum(spool, live.spool)
        rows.append(
            {
                **row,
                "counters": dict(mine),
                "mqtt_connected": live.mqtt_connected if live is not None else None,
                "report_age_ms": round((now - live.received) * 1000) if live is not None else None,
            }
        )
    return Whole(counters, connected, running, queues, spool, rows)


def _spool_sum(mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> dict[str, Any] | None:
    if mine is None or theirs is None:
        return mine if theirs is None else theirs
    total = {**mine, "influx_outage": bool(mine["influx_outage"] or theirs["influx_outage"])}
    if mine["enabled"] and theirs["enabled"]:
        for key in ("records", "bytes", "max_bytes"):
            total[key] = mine[key] + theirs[key]
        total["full"] = bool(mine["full"] or theirs["full"])
    return total


class TimedWriter:
    """A PointWriter that observes how long each write takes, by outcome (ok, error)."""

    def __init__(self, writer: PointWriter, histogram: Histogram) -> None:
        self._writer = writer
        self._ok = histogram.labels(outcome="ok")
        self._error = histogram.labels(outcome="error")

    async def write(self, body: bytes) -> None:
        started = time.perf_counter()
        try:
            await self._writer.write(body)
        except BaseException:
            self._error.observe(time.perf_counter() - started)
            raise
        self._ok.observe(time.perf_counter() - started)

    async def close(self) -> None:
        await self._writer.close()


class ServiceCollector(Collector):
    """Reads the service's state at scrape time. Each source is a callable, as the app's state (the
    registry, the storage, the worker pool) is set up by the lifespan after the collector exists."""

    def __init__(
        self,
        stats: Callable[[], Stats | None],
        registry: Callable[[], Registry | None],
        storage: Callable[[], Storage | None],
        workers: Callable[[], WorkerPool | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stats = stats
        self._registry = registry
        self._storage = storage
        self._workers = workers
        self._clock = clock
        self.own_histogram: Histogram | None = None  # this process's write latency (ServiceMetrics.watch)

    def write_counts(self) -> dict[str, float]:
        """The write-latency histogram's counts, this process's and every other worker's."""
        counts = histogram_counts(self.own_histogram) if self.own_histogram is not None else {}
        pool = self._workers()
        if pool is not None:
            for number in pool.tally.workers():
                add_into(counts, pool.tally.histogram(number))
        return counts

    def collect(self) -> Iterator[Metric]:
        yield _histogram_family(self.write_counts())
        stats = self._stats()
        storage = self._storage()
        workers = self._workers()
        service = whole(stats, storage, workers) if stats is not None else None
        if service is not None:
            yield from _stats_metrics(service)
        registry = self._registry()
        if registry is not None:
            yield from _device_metrics(registry, stats, self._clock())
        spool = service.spool if service is not None else storage.snapshot() if storage is not None else None
        if spool is not None:
            yield from _spool_metrics(spool)
        if workers is not None:
            rows = service.workers if service is not None and service.workers is not None else workers.status()
            yield from _worker_metrics(rows)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _stats_metrics(service: Whole) -> Iterator[Metric]:
    counters = service.counters
    received = CounterMetricFamily(
        "fieldlink_messages_received", "Messages received from the broker, by kind.", labels=["kind"]
    )
    received.add_metric(["data"], counters.get("received", 0))
    received.add_metric(["status"], counters.get("status_received", 0))
    yield received
    rejected = CounterMetricFamily(
        "fieldlink_rejections", "Messages refused (counted and acknowledged), by reason.", labels=["reason"]
    )
    prefix = "rejected_"
    reasons = set(REJECTION_REASONS) | {k[len(prefix) :] for k in counters if k.startswith(prefix)}
    for reason in sorted(reasons):
        rejected.add_metric([reason], counters.get(prefix + reason, 0))
    yield rejected
    for name, counter, documentation in _COUNTERS:
        yield _counter(name, documentation, counters.get(counter, 0))
    events = CounterMetricFamily(
        "fieldlink_events",
        "Everything else the service counts (the names of /healthz's counters), by event.",
        labels=["event"],
    )
    for event in sorted(k for k in counters if k not in _NAMED and not k.startswith(prefix)):
        events.add_metric([event], counters[event])
    yield events
    yield _gauge(
        "fieldlink_mqtt_connected",
        "1 while the consumer (of every running worker) is connected to the broker.",
        service.mqtt_connected,
    )
    yield _gauge(
        "fieldlink_consumer_running",
        "1 while the MQTT consumer (of every running worker) runs.",
        service.consumer_running,
    )
    queues = service.queues
    yield _gauge(
        "fieldlink_consumer_queue_messages",
        "Messages received from the broker and not yet taken by the pipeline.",
        queues.get("incoming", 0),
    )
    yield _gauge(
        "fieldlink_consumer_unacked_messages",
        "Messages read and not yet acknowledged to the broker (the window: max_unacked_messages).",
        queues.get("unacked", 0),
    )


def _device_metrics(registry: Registry, stats: Stats | None, now_s: float) -> Iterator[Metric]:
    devices = registry.devices()
    by_status = GaugeMetricFamily("fieldlink_devices", "Registered devices, by status.", labels=["status"])
    for status in ("active", "revoked"):
        by_status.add_metric([status], sum(1 for d in devices if d.status == status))
    yield by_status
    reports = stats.status if stats is not None else {}
    online = sum(1 for d in devices if d.active and (reports.get(d.id) or {}).get("online") is True)
    yield _gauge("fieldlink_devices_online", "Active devices whose retained status says online.", online)
    age = GaugeMetricFamily(
        "fieldlink_device_last_seen_age_seconds",
        "Seconds since the device's own timestamp of its newest stored reading (active devices that sent any).",
        labels=["device"],
    )
    for d in devices:
        if d.active and d.last_seen_ms is not None:
            age.add_metric([d.id], max(0.0, now_s - d.last_seen_ms / 1000))
    yield age


def _spool_metrics(snapshot: dict[str, Any]) -> Iterator[Metric]:
    yield _gauge("fieldlink_spool_enabled", "1 when the service has a spool for InfluxDB outages.", snapshot["enabled"])
    yield _gauge("fieldlink_influx_outage", "1 while InfluxDB takes no writes (spooling).", snapshot["influx_outage"])
    if snapshot["enabled"]:
        yield _gauge("fieldlink_spool_records", "Records (write batches) in the spool.", snapshot["records"])
        yield _gauge("fieldlink_spool_bytes", "Bytes of the spool's segment files.", snapshot["bytes"])
        yield _gauge("fieldlink_spool_max_bytes", "The spool's bound (spool_max_bytes).", snapshot["max_bytes"])
        yield _gauge("fieldlink_spool_full", "1 when the last append found the spool full.", snapshot["full"])


def _worker_metrics(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "fieldlink_worker_state", "1 for each worker process's current state.", labels=["worker", "state"]
    )
    restarts = CounterMetricFamily(
        "fieldlink_worker_restarts", "Times the pool started a worker process again.", labels=["worker"]
    )
    stored = CounterMetricFamily(
        "fieldlink_worker_messages_stored",
        "fieldlink_messages_stored_total's part of each worker (over all its processes).",
        labels=["worker"],
    )
    connected = GaugeMetricFamily(
        "fieldlink_worker_mqtt_connected",
        "1 while the worker's consumer is connected to the broker, as it last reported.",
        labels=["worker"],
    )
    for row in rows:
        worker = str(row["worker"])
        for name in _WORKER_STATES:
            state.add_metric([worker, name], 1 if row["state"] == name else 0)
        restarts.add_metric([worker], row["restarts"])
        if "counters" in row:
            stored.add_metric([worker], row["counters"].get("stored_messages", 0))
            connected.add_metric([worker], 1 if row["mqtt_connected"] else 0)
    yield state
    yield restarts
    yield stored
    yield connected


class ServiceMetrics:
    """The service's metrics registry: the write-latency histogram and the collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        # Observed here, exported by the collector: summed with the other workers' (not registered).
        self.write_seconds = Histogram(
            _WRITE_NAME, _WRITE_HELP, labelnames=["outcome"], buckets=_WRITE_BUCKETS, registry=None
        )
        self._collector: ServiceCollector | None = None

    def timed(self, writer: PointWriter) -> TimedWriter:
        return TimedWriter(writer, self.write_seconds)

    def watch(self, collector: ServiceCollector) -> None:
        collector.own_histogram = self.write_seconds
        self._collector = collector
        self.registry.register(collector)

    def write_counts(self) -> dict[str, float]:
        """The whole service's write-latency counts (`histogram_counts`' keys)."""
        if self._collector is not None:
            return self._collector.write_counts()
        return histogram_counts(self.write_seconds)


def write_latency(metrics: ServiceMetrics) -> tuple[int, float, float | None]:
    """Successful writes so far, of every worker: (count, total seconds, the upper bound of the bucket
    that holds the 99th percentile; None without writes, inf past the last bucket)."""
    counts = metrics.write_counts()
    count, total = counts.get("ok|+Inf", 0.0), counts.get("ok|sum", 0.0)
    if not count:
        return 0, 0.0, None
    wanted = 0.99 * count
    buckets = [(float(le), counts.get(f"ok|{le}", 0.0)) for le in _LE]
    p99 = next((le for le, cumulative in buckets if cumulative >= wanted), float("inf"))
    return int(count), total, p99
