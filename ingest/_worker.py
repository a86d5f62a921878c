"""One ingest worker without HTTP, started and watched by `WorkerPool` (ingest/_workers.py):
`python -m ingest._worker NUMBER --parent PID [--retire]`, its settings as JSON on stdin.

A worker runs the service's own lifespan (registry, writer, spool, consumer) until SIGTERM. A retiring
one (an identity of an earlier run with more workers) leaves the shared subscription, stores what its
session still holds and what its spool holds, and exits 0 once both are empty.

Either reports its counts to the pool on its stdout (`Reporter`): a line of JSON every second and one
as it ends. Anything else the process would print goes to stderr, with the logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from fastapi import FastAPI

from ingest._app import create_app, open_spool
from ingest._consumer import Consumer, Stats, mqtt_client
from ingest._logging import configure
from ingest._metrics import ServiceMetrics, histogram_counts
from ingest._registry import Registry
from ingest._settings import Settings
from ingest._storage import Storage
from ingest._workers import REPORT_EVERY_S, all_filters, drop_subscriptions, new_run, report_line, stale_filters
from ingest._writer import make_writer
from shared.protocol import STATUS_SUBSCRIPTION

log = logging.getLogger("fieldlink.ingest")

# A retiring identity is done once its messages are acknowledged and nothing more came for this long:
# after an acknowledgement the broker sends the next queued ones at once.
QUIET_S = 2.0


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM when the parent dies (Linux), so that a killed service leaves no
    worker behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before we asked
        sys.exit(0)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


class Reporter:
    """Writes the worker's report (`ingest._workers.report_line`) to `fd`, a pipe the pool reads, every
    `every_s`, without ever blocking the worker: a pipe that is full (a parent that reads nothing for
    a while) keeps the line's rest for the next turn, and no new line is made until it is written. The
    reports are states, not increments: a skipped one loses nothing. `last` writes a final one,
    waiting for the pipe (the process is ending)."""

    def __init__(self, fd: int, line: Callable[[], bytes], every_s: float = REPORT_EVERY_S) -> None:
        self._fd = fd
        self._line = line
        self._every_s = every_s
        self._pending = b""
        self._gone = False  # the parent closed the pipe: it is dying, and the kernel's SIGTERM comes
        os.set_blocking(fd, False)

    def send(self) -> None:
        if self._gone:
            return
        if not self._pending:
            self._pending = self._line()
        try:
            written = os.write(self._fd, self._pending)
        except BlockingIOError:
            return
        except OSError:  # EPIPE
            self._gone = True
            return
        self._pending = self._pending[written:]

    async def run(self) -> None:
        while True:
            try:
                self.send()
            except Exception:  # a report that cannot be made this time: the next one may
                log.exception("worker report failed")
            await asyncio.sleep(self._every_s)

    def last(self) -> None:
        if self._gone:
            return
        os.set_blocking(self._fd, True)
        with contextlib.suppress(OSError):
            os.write(self._fd, self._pending + self._line())
        self._pending = b""


def _app_report(app: FastAPI, run: str) -> Callable[[], bytes]:
    metrics: ServiceMetrics = app.state.metrics

    def line() -> bytes:
        stats: Stats = app.state.stats
        storage: Storage | None = getattr(app.state, "storage", None)
        return report_line(run, stats, storage, histogram_counts(metrics.write_seconds))

    return line


async def serve(settings: Settings, report_fd: int | None = None) -> None:
    stop = _stop_event()
    await drop_subscriptions(settings, stale_filters(settings.mqtt_shared_group))
    app = create_app(settings)
    reporter = None
    reporting: list[asyncio.Task[None]] = []
    try:
        async with app.router.lifespan_context(app):
            if report_fd is not None:
                reporter = Reporter(report_fd, _app_report(app, new_run()))
                reporting.append(asyncio.create_task(reporter.run()))
            await stop.wait()
        # Reports went on while the lifespan stored what the consumer held: a SIGKILL at the end of
        # the pool's patience loses at most a second of counts.
    finally:
        for task in reporting:
            task.cancel()
        await asyncio.gather(*reporting, return_exceptions=True)
    if reporter is not None:  # what the consumer stored as it stopped, counted too
        reporter.last()
    log.info("stopped")


async def retire(settings: Settings, quiet_s: float = QUIET_S, report_fd: int | None = None) -> bool:
    """Drain the identity's session and spool; True once both are empty, False if stopped before."""
    stop = _stop_event()
    registry = Registry(settings.registry_path)
    writer = make_writer(settings)
    stats = Stats()
    spool = open_spool(settings)
    # As the service's lifespan has it: during an outage the drained messages go to the spool.
    storage = Storage.for_settings(settings, writer, spool, stats.counters, registry)
    consumer = Consumer(settings, registry, writer, stats, storage)
    replay = asyncio.create_task(storage.replay(), name="spool-replay")
    run = new_run()
    reporter = None
    if report_fd is not None:  # what it stores counts for the service too (no write latency: not timed)
        reporter = Reporter(report_fd, lambda: report_line(run, stats, storage, {}))
    reporting = [asyncio.create_task(reporter.run())] if reporter is not None else []
    try:
        drain = asyncio.create_task(_drain(consumer, settings, storage, quiet_s))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([drain, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in (drain, stopped):
            task.cancel()
        await asyncio.gather(drain, stopped, return_exceptions=True)
        if drain.cancelled():
            return False
        if drain.exception() is not None:
            log.error("retiring %s failed: %s", settings.mqtt_client_id, drain.exception())
            return False
        return True
    finally:
        for task in (replay, *reporting):
            task.cancel()
        await asyncio.gather(replay, *reporting, return_exceptions=True)
        if reporter is not None:
            reporter.last()
        await writer.close()
        if spool is not None:
            spool.close()
        registry.close()


async def _drain(consumer: Consumer, settings: Settings, storage: Storage, quiet_s: float) -> None:
    last = time.monotonic()
    async with mqtt_client(settings) as client:
        paho_client = client._client

        def ack(token: tuple[int, int]) -> None:
            nonlocal last
            paho_client.ack(*token)
            last = time.monotonic()

        # The devices are told what is stored, as by the consumer (ingest/_consumer.py).
        consumer.device_acks = lambda topic, payload: paho_client.publish(topic, payload, qos=0)
        # Unsubscribed, the session gets no new messages; what it holds already still comes. Statuses
        # too: the live workers receive every one, and a fleet's statuses would never let it be quiet.
        await client.unsubscribe([*all_filters(settings.mqtt_shared_group), STATUS_SUBSCRIPTION], timeout=10)
        async with consumer.pipeline(ack) as pipeline:
            messages = client.messages
            while True:
                wait = quiet_s - (time.monotonic() - last)
                if wait <= 0 and pipeline.unacked == 0:
                    break
                try:
                    message = await asyncio.wait_for(anext(messages), max(wait, 0.1))
                except TimeoutError:
                    continue
                last = time.monotonic()
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode()
                await pipeline.submit(str(message.topic), bytes(payload), (message.mid, message.qos), message.retain)
    while storage.records:  # the spool's records go back to InfluxDB (the replay task writes them)
        await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest._worker")
    parser.add_argument("number", type=int)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument("--retire", action="store_true")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    # Stdout is the pipe the pool reads reports from: only reports go there, anything printed to stderr.
    report_fd = os.dup(1)
    os.dup2(2, 1)
    settings = Settings(**json.loads(sys.stdin.buffer.read()))
    configure(args.log_level, args.log_format, tag=f"[worker {args.number}]")
    if args.retire:
        log.info("retiring %s: storing what its session holds", settings.mqtt_client_id)
        return 0 if asyncio.run(retire(settings, report_fd=report_fd)) else 1
    log.info("worker %d up as %s", args.number, settings.mqtt_client_id)
    asyncio.run(serve(settings, report_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
