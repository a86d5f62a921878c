"""The MQTT consumer: receive, verify, write, and only then acknowledge.

Messages arrive at QoS 1 on a persistent session with manual acknowledgement, so a message the service
has not stored is delivered again after a crash or a disconnect. A message that can never be stored
(malformed, too large, wrong version, unknown device, out of bounds) is counted by reason, logged (at
most once a minute per device and reason) and acknowledged so that it does not block the ones behind
it. Messages flow through a `Pipeline`: checked on receipt, their points gathered into one write batch
(by points and age), written by a task of its own while the next messages arrive, and acknowledged in
the order received once their batch is stored, with a bounded window of unacknowledged messages.
No message can end the consumer: whatever handling one raises costs that message alone (counted as
`internal_error`, acknowledged). Should the consumer task end anyway, `supervise` restarts it with
backoff, and /healthz answers 503 until it is connected again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import ssl
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from ingest._errors import RejectedMessage, StorageError
from ingest._registry import Registry
from ingest._settings import Settings
from ingest._storage import Storage
from ingest._writer import PointWriter, health_text, to_text
from shared import decode, protocol

log = logging.getLogger("fieldlink.ingest")

# On a clean stop, how long the pipeline may take, beyond one write's time, to store (or spool) and
# acknowledge what it has read, while the connection to the broker is still open.
_STOP_GRACE_S = 5.0

# Longest text from a device (topic, error message, refusal detail) that goes into a log line.
MAX_LOGGED_CHARS = 200


def escape(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """`text` fit for one log line: every non-printable character (newlines, control bytes, escape
    sequences, bidi overrides, lone surrogates) written as a backslash escape, cut at `limit`."""
    head = text[:limit]
    if not head.isprintable():
        head = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in head)
    if len(text) > limit:
        head += f"... ({len(text) - limit} more characters)"
    return head


def _quote(text: str) -> str:
    """A topic as the log shows it: quoted like repr (which escapes non-printables), cut short."""
    if len(text) > MAX_LOGGED_CHARS:
        return repr(text[:MAX_LOGGED_CHARS]) + f"... ({len(text) - MAX_LOGGED_CHARS} more characters)"
    return repr(text)


class LogLimiter:
    """At most one log line per key (device or topic, kind of message, reason) per interval; the next line says
    how many were left out. Keys are bounded: past `max_keys`, expired ones are forgotten (and with
    them their count of lines left out), then all of them."""

    def __init__(
        self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        self._entries: dict[Hashable, list[float]] = {}  # key -> [logged at, left out since]

    def allow(self, key: Hashable) -> int | None:
        """None if a line for `key` must be left out now; otherwise how many were left out before it."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            return None
        if entry is None and len(self._entries) >= self._max_keys:
            self._prune(now)
        self._entries[key] = [now, 0]
        return int(entry[1]) if entry is not None else 0

    def _prune(self, now: float) -> None:
        self._entries = {k: e for k, e in self._entries.items() if now - e[0] < self.interval_s}
        if len(self._entries) >= self._max_keys:
            self._entries.clear()


class Stats:
    """Counters for /healthz: everything received, stored, rejected (by reason) and retried; and
    whether the consumer runs and is connected."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.mqtt_connected = False
        # Set by `supervise`: False before it starts and while a dead consumer waits to be restarted.
        self.consumer_running = False
        self.consumer_error: str | None = None
        self.latest: dict[str, dict[str, dict[str, Any]]] = {}
        self.last_seen: dict[str, int] = {}
        # The newest status message of each device: online, its health counters, a config error.
        self.status: dict[str, dict[str, Any]] = {}
        # While connected: the depths of the receive queue and of the window (for /metrics), read
        # only when asked, so the message path pays nothing for them.
        self.queues: Callable[[], dict[str, int]] | None = None

    def reject(self, reason: str) -> None:
        self.counters["rejected"] += 1
        self.counters[f"rejected_{reason}"] += 1

    def problems(self) -> list[str]:
        """Why the service is not healthy; empty if it is."""
        if not self.consumer_running:
            if self.consumer_error is None:
                return ["the MQTT consumer is not running"]
            return [f"the MQTT consumer stopped ({self.consumer_error}) and is being restarted"]
        if not self.mqtt_connected:
            return ["not connected to the MQTT broker"]
        return []


class Verifier:
    """Everything a message must pass before its points are written."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self._registry = registry
        self._max_skew_ms = int(settings.max_clock_skew_s * 1000)
        self._max_age_ms = int(settings.max_reading_age_s * 1000)
        self._max_sensors = settings.max_sensors_per_device
        # Sensor names each device has used, as the registry knows them (read again when a new one comes).
        self._sensors: dict[str, set[str]] = {}
        # Devices whose last status named a certificate the registry does not know for them.
        self._unknown_certificate: set[str] = set()

    def require_active(self, device_id: str) -> None:
        # Read for every message, never cached: a revocation holds from the next message on.
        status = self._registry.status(device_id)
        if status is None:
            raise RejectedMessage("unregistered", f"device {device_id!r} is not registered")
        if status != "active":
            raise RejectedMessage("revoked", f"device {device_id!r} is {status}")

    def check_status(self, device_id: str, payload: bytes) -> dict[str, Any]:
        """A registered device's status message as a dict, or raise RejectedMessage. A status naming a
        certificate the registry does not know for the device is refused, and so is the device's data
        from then on, until a status names a known one."""
        try:
            report: dict[str, Any] = decode.decode_status_report(payload)
        except decode.ProtocolError as exc:
            raise RejectedMessage(exc.reason, str(exc)) from exc
        self.require_active(device_id)
        cert = report["cert"]
        if cert is not None:
            if not self._registry.certificate_known(device_id, cert):
                self._unknown_certificate.add(device_id)
                raise RejectedMessage(
                    "unknown_certificate", f"device {device_id!r} reports certificate {cert}, which it was not issued"
                )
            self._unknown_certificate.discard(device_id)
        return report

    def status_time(self, report: dict[str, Any], now_ms: int) -> int:
        """When a status is stored: the device's own time if it gave one within the skew and age
        limits (so a retained status delivered again overwrites its own point), else now."""
        t = report["t"]
        if t is not None and now_ms - self._max_age_ms <= t <= now_ms + self._max_skew_ms:
            return int(t)
        return now_ms

    def check(self, topic: str, payload: bytes, now_ms: int) -> tuple[str, int, list[tuple[int, str, float]], int]:
        """Return (device, seq, readings with values, count of failed reads) or raise RejectedMessage."""
        return self.check_batch(topic, payload, now_ms)[:4]

    def check_batch(
        self, topic: str, payload: bytes, now_ms: int
    ) -> tuple[str, int, list[tuple[int, str, float]], int, int | None, dict[str, tuple[int, float]]]:
        """`check`, and the batch's newest timestamp (None without readings) as the fifth element, and
        each sensor's newest stored reading (time, value) as the sixth."""
        try:
            device_id, kind = decode.parse_topic(topic)
            if kind != "data":
                raise decode.BadTopic(f"topic {_quote(topic)} is not a data topic")
            seq, t0, readings = decode.decode_batch_t0(payload)
        except decode.ProtocolError as exc:
            raise RejectedMessage(exc.reason, str(exc)) from exc
        self.require_active(device_id)
        if device_id in self._unknown_certificate:
            raise RejectedMessage(
                "unknown_certificate", f"device {device_id!r} last reported a certificate it was not issued"
            )
        # One pass over the readings (the service's hot loop at many readings per message).
        newest = t0
        stored: list[tuple[int, str, float]] = []
        latest: dict[str, tuple[int, float]] = {}
        for t, sensor, value in readings:
            if t > newest:
                newest = t
            if value is not None:
                stored.append((t, sensor, value))
                seen = latest.get(sensor)
                if seen is None or seen[0] <= t:
                    latest[sensor] = (t, value)
        try:
            if newest > now_ms + self._max_skew_ms:
                raise RejectedMessage(
                    "clock_skew",
                    f"device {device_id!r} stamps readings {(newest - now_ms) / 1000:.0f} s in the future",
                )
            if t0 < now_ms - self._max_age_ms:  # t0 is the oldest: offsets are not negative
                days = (now_ms - t0) / 86_400_000
                raise RejectedMessage("too_old", f"device {device_id!r} stamps readings {days:.1f} days in the past")
            self._check_sensors(device_id, set(latest))
        except RejectedMessage as exc:  # refused for what the batch holds: the device is told
            exc.batch = (device_id, seq)
            raise
        return device_id, seq, stored, len(readings) - len(stored), newest if readings else None, latest

    def _check_sensors(self, device_id: str, names: set[str]) -> None:
        """At most max_sensors_per_device distinct names per device, ever: new ones are recorded in the
        registry before their points are written, so the bound holds across restarts."""
        known = self._sensors.get(device_id)
        if known is not None and names <= known:
            return
        known = self._registry.sensor_names(device_id)  # another worker may have added some
        self._sensors[device_id] = known
        new = names - known
        if not new:
            return
        if len(known) + len(new) > self._max_sensors:
            raise RejectedMessage(
                "too_many_sensors",
                f"device {device_id!r} would have {len(known) + len(new)} sensor names; "
                f"at most {self._max_sensors} are kept",
            )
        self._registry.add_sensor_names(device_id, sorted(new))
        known |= new


@dataclass(slots=True)
class Accepted:
    """A message that passed every check and waits for its batch to be stored: a data message, or
    a status (`is_status`, its health point in `text`, no sequence)."""

    topic: str
    device_id: str
    seq: int
    readings: list[tuple[int, str, float]]
    failed: int
    newest: int | None
    text: str  # its points' line protocol ("" without any)
    is_status: bool = False
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)  # each sensor's newest (time, value)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.mqtt_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.mqtt_ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.mqtt_cert), str(settings.mqtt_key))
    return context


def incoming_queue(counters: dict[str, int], bound: int) -> type[asyncio.Queue[Any]]:
    """aiomqtt's queue of received messages, bounded where the broker does not bound it: QoS 1
    messages are (by the broker's in-flight window), QoS 0 ones are not, and no fieldlink node sends
    any. Once `bound` messages wait, a QoS 0 message is dropped and counted (`dropped_qos0`), so a
    device flooding at QoS 0 cannot grow the service's memory; QoS 1 is never dropped."""

    class IncomingQueue(asyncio.Queue[Any]):
        def put_nowait(self, item: Any) -> None:
            if getattr(item, "qos", 1) == 0 and self.qsize() >= bound:
                counters["dropped_qos0"] += 1
                return
            super().put_nowait(item)

    return IncomingQueue


def mqtt_client(
    settings: Settings, timeout_s: float | None = None, counters: dict[str, int] | None = None
) -> aiomqtt.Client:
    """A client on the identity's persistent session that acknowledges nothing by itself: whatever it
    is sent and does not acknowledge stays in the session and comes again. QoS 0 messages beyond
    the window are dropped (`incoming_queue`), counted in `counters`."""
    queue = incoming_queue(counters if counters is not None else Counter(), settings.max_unacked_messages)
    client = aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        identifier=settings.mqtt_client_id,
        clean_session=False,  # never True: a clean session throws away what the broker keeps for us
        keepalive=settings.mqtt_keepalive_s,
        tls_context=tls_context(settings),
        tls_insecure=False,
        timeout=timeout_s,
        queue_type=queue,
    )
    # Acknowledge only after the write (aiomqtt 2.x would acknowledge on receipt).
    client._client.manual_ack_set(True)
    return client


class Consumer:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        writer: PointWriter,
        stats: Stats,
        storage: Storage | None = None,
    ) -> None:
        """`storage` decides where batches go (InfluxDB, or the spool during an outage); without one,
        they go to `writer` alone, and an outage holds the messages unacknowledged."""
        self._settings = settings
        self._registry = registry
        self._verifier = Verifier(settings, registry)
        self._storage = storage or Storage.for_settings(settings, writer, None, stats.counters, registry)
        self._stats = stats
        self.log_limiter = LogLimiter()
        # Publishes (topic, payload) at QoS 0 while connected to the broker: the devices' acks.
        self.device_acks: Callable[[str, bytes], Any] | None = None

    def _subscriptions(self) -> list[tuple[str, int]]:
        group = self._settings.mqtt_shared_group
        data = f"$share/{group}/{protocol.DATA_SUBSCRIPTION}" if group else protocol.DATA_SUBSCRIPTION
        # Status is small and retained: every worker keeps all of it, so it is never shared.
        return [(data, 1), (protocol.STATUS_SUBSCRIPTION, 1)]

    def pipeline(self, ack: Callable[[Any], None]) -> Pipeline:
        """A pipeline with this consumer's settings; `ack(token)` acknowledges one message."""
        s = self._settings
        return Pipeline(
            self,
            ack,
            window=s.max_unacked_messages,
            batch_points=s.write_batch_points,
            batch_ms=s.write_batch_ms,
            stop_timeout_s=s.spool_after_s + _STOP_GRACE_S,
        )

    async def run(self) -> None:
        """Consume until cancelled, reconnecting with backoff."""
        s = self._settings
        backoff = 0.5
        while True:
            client = mqtt_client(s, counters=self._stats.counters)
            paho_client = client._client

            def ack(token: tuple[int, int], paho_client: Any = paho_client) -> None:
                paho_client.ack(*token)

            def publish(topic: str, payload: bytes, paho_client: Any = paho_client) -> None:
                paho_client.publish(topic, payload, qos=0)

            try:
                async with client:
                    self.device_acks = publish
                    self._stats.mqtt_connected = True
                    backoff = 0.5
                    log.info("connected to mqtts://%s:%s", s.mqtt_host, s.mqtt_port)
                    await client.subscribe(self._subscriptions())
                    # What the pipeline holds unacknowledged when the connection ends is delivered again.
                    async with self.pipeline(ack) as pipeline:
                        self._stats.queues = functools.partial(_queue_depths, client, pipeline)
                        async for message in client.messages:
                            payload = message.payload
                            if not isinstance(payload, bytes | bytearray):
                                payload = str(payload).encode()
                            await pipeline.submit(
                                str(message.topic), bytes(payload), (message.mid, message.qos), message.retain
                            )
            except aiomqtt.MqttError as exc:
                self._stats.mqtt_connected = False
                self._stats.counters["mqtt_disconnects"] += 1
                log.warning("MQTT connection lost (%s); reconnecting in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self.device_acks = None
                self._stats.mqtt_connected = False
                self._stats.queues = None

    async def handle(self, topic: str, payload: bytes) -> None:
        """Process one message to its end, alone: stored, or counted by reason. Never raises (but when
        cancelled), so that the message can be acknowledged whatever it holds."""
        accepted = await self.prepare(topic, payload)
        if accepted is not None:
            await self.store([accepted])

    async def prepare(self, topic: str, payload: bytes, retained: bool = False) -> Accepted | None:
        """Count, decode and check one message. A status message is handled to its end; a data message
        that passed comes back to be stored; a refused one is counted and logged (None). Never raises
        (but when cancelled)."""
        is_status = topic.endswith("/status")
        self._stats.counters["status_received" if is_status else "received"] += 1
        try:
            return await self._prepare_until_settled(topic, payload, is_status, retained)
        except RejectedMessage as exc:
            self._refuse(topic, "status" if is_status else "message", exc)
        except Exception as exc:  # a bug must cost one message, never the consumer
            self._internal_error(topic, exc)
        return None

    def _refuse(self, topic: str, kind: str, exc: RejectedMessage) -> None:
        self._stats.reject(exc.reason)
        self._log_refusal(topic, kind, exc.reason, str(exc))
        if exc.batch is not None:
            self._tell_device(exc.batch[0], [], [exc.batch[1]])

    def _tell_device(self, device_id: str, stored: list[int], refused: list[int]) -> None:
        """Publish on the device's ack topic which of its batches are stored and which are refused for
        good, so that it stops keeping and resending them. At QoS 0: a lost ack costs a resend."""
        publish = self.device_acks
        if publish is None:  # not connected: the device sends the batch again
            return
        topic = protocol.ack_topic(device_id)
        step = decode.MAX_ACK_SEQS
        try:
            for start in range(0, max(len(stored), len(refused)), step):
                publish(topic, decode.encode_ack(stored[start : start + step], refused[start : start + step]))
                self._stats.counters["device_acks"] += 1
        except Exception as exc:  # the broker connection's trouble, seen by the receive loop too
            log.debug("cannot send %s its ack: %s", device_id, exc)

    def _internal_error(self, topic: str, exc: BaseException) -> None:
        self._stats.reject("internal_error")
        suppressed = self.log_limiter.allow((_source(topic), "internal_error"))
        if suppressed is not None:
            frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
            log.error(
                "failed to process a message on %s (internal_error): %s: %s%s\n%s",
                _quote(topic),
                type(exc).__name__,
                escape(str(exc)),
                _suppressed(suppressed),
                frames,
            )

    async def _registry_unavailable(self, exc: sqlite3.DatabaseError, delay: float) -> float:
        """Count and log a registry that cannot be read or written, wait `delay`; the next delay."""
        self._stats.counters["registry_retries"] += 1
        log.warning("device registry unavailable (%s); retrying in %.1f s", escape(str(exc), 300), delay)
        await asyncio.sleep(delay)
        return min(delay * 2, self._settings.write_retry_max_s)

    async def _prepare_until_settled(
        self, topic: str, payload: bytes, is_status: bool, retained: bool = False
    ) -> Accepted | None:
        """Check the message; while the registry cannot be read or written (locked past its timeout,
        a full disk), wait and try again: such a message is not refused, and so not acknowledged."""
        delay = 0.2
        while True:
            try:
                if is_status:
                    return self._handle_status(topic, payload, retained)
                return self._check_data(topic, payload)
            except sqlite3.DatabaseError as exc:
                delay = await self._registry_unavailable(exc, delay)

    def _log_refusal(self, topic: str, kind: str, reason: str, detail: str) -> None:
        suppressed = self.log_limiter.allow((_source(topic), kind, reason))
        if suppressed is not None:
            log.warning(
                "rejected %s on %s (%s): %s%s", kind, _quote(topic), reason, escape(detail), _suppressed(suppressed)
            )

    def _check_data(self, topic: str, payload: bytes) -> Accepted:
        checked = self._verifier.check_batch(topic, payload, int(time.time() * 1000))
        device_id, seq, readings, failed, newest, latest = checked
        text = to_text(device_id, readings) if readings else ""
        return Accepted(topic, device_id, seq, readings, failed, newest, text, latest=latest)

    async def store(self, batch: list[Accepted]) -> None:
        """Write the points of `batch` as one request (retrying while InfluxDB is down), then count each
        message as stored. Never raises (but when cancelled): each message ends stored or refused."""
        try:
            stored = await self._write_with_retry(batch)
        except Exception as exc:  # a bug must cost these messages, never the consumer
            for item in batch:
                self._internal_error(item.topic, exc)
            return
        await self._finish(stored)
        seqs: dict[str, list[int]] = {}
        for item, _ in stored:
            if not item.is_status:
                seqs.setdefault(item.device_id, []).append(item.seq)
        for device_id, device_seqs in seqs.items():
            self._tell_device(device_id, device_seqs, [])

    async def _finish(self, stored: list[tuple[Accepted, bool]]) -> None:
        """Count the stored messages (their points in InfluxDB if written, else in the spool, counted as
        stored points when written back), note their devices' newest readings, and record in the
        registry each device's own newest timestamp (once per device and batch)."""
        newest: dict[str, int] = {}
        for item, written in stored:
            try:
                self._count(item, written)
            except Exception as exc:
                self._internal_error(item.topic, exc)
            if item.newest is not None and newest.get(item.device_id, -1) < item.newest:
                newest[item.device_id] = item.newest
        for device_id, newest_ms in newest.items():
            delay = 0.2
            while True:
                try:
                    self._registry.touch(device_id, newest_ms)
                    break
                except sqlite3.DatabaseError as exc:
                    delay = await self._registry_unavailable(exc, delay)
                except Exception:  # a bug: the points are stored all the same
                    self._stats.counters["registry_errors"] += 1
                    log.exception("cannot record when %s was last seen", device_id)
                    break

    def _count(self, item: Accepted, written: bool) -> None:
        stats = self._stats
        if item.is_status:
            stats.counters["status_stored"] += 1
            return
        stats.counters["stored_messages"] += 1
        if written:
            stats.counters["stored_points"] += len(item.readings)
        stats.counters["failed_reads"] += item.failed
        latest = stats.latest.setdefault(item.device_id, {})
        for sensor, (timestamp_ms, value) in item.latest.items():
            current = latest.get(sensor)
            if current is None or current["time_ms"] <= timestamp_ms:
                latest[sensor] = {"time_ms": timestamp_ms, "value": value}
        stats.last_seen[item.device_id] = int(time.time() * 1000)

    def _handle_status(self, topic: str, payload: bytes, retained: bool = False) -> Accepted | None:
        """Check a status; note it for the API; its health point goes to InfluxDB with the data
        (None: it is not stored — another worker stores statuses, or it is the broker's retained copy
        without a time of its own, which would store the same status again at another time)."""
        try:
            device_id, _ = decode.parse_topic(topic)
        except decode.ProtocolError as exc:
            raise RejectedMessage(exc.reason, str(exc)) from exc
        status = self._verifier.check_status(device_id, payload)
        self._stats.status[device_id] = status
        self._stats.counters["status_accepted"] += 1
        if status["error"]:
            suppressed = self.log_limiter.allow((device_id, "reports"))
            if suppressed is not None:
                log.warning("device %s reports: %s%s", device_id, escape(status["error"]), _suppressed(suppressed))
        at_ms = self._verifier.status_time(status, int(time.time() * 1000))
        if not self._settings.store_health or (retained and at_ms != status["t"]):
            return None
        return Accepted(topic, device_id, -1, [], 0, None, health_text(device_id, status, at_ms), is_status=True)

    async def _write_with_retry(self, batch: list[Accepted]) -> list[tuple[Accepted, bool]]:
        """Retry until InfluxDB or the spool takes the points: holding the messages back is how we lose
        nothing. Before each new attempt, the messages of a device revoked meanwhile are refused and their
        points left out. Returns the messages whose points are stored (those without points included),
        each with whether its points went to InfluxDB (else to the spool)."""
        delay = 0.2
        recheck = False
        while True:
            if recheck:
                try:
                    batch = self._still_active(batch)
                except sqlite3.DatabaseError as exc:  # cannot tell who is revoked: write nothing yet
                    delay = await self._registry_unavailable(exc, delay)
                    continue
            body = "\n".join([item.text for item in batch if item.text])
            if not body:
                return [(item, True) for item in batch]
            try:
                written = await self._storage.store(body.encode(), sum(len(item.readings) for item in batch))
                return [(item, written) for item in batch]
            except StorageError as exc:
                self._stats.counters["write_retries"] += 1
                log.warning("write failed (%s); retrying in %.1f s", escape(str(exc), 300), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.write_retry_max_s)
                recheck = True
            except RejectedMessage as exc:
                # InfluxDB judged the points themselves (a field type conflict): find the message(s) it
                # refuses by writing each alone; the others are stored.
                with_points = [item for item in batch if item.text]
                if len(with_points) == 1:
                    refused = with_points[0]
                    if not refused.is_status:
                        exc.batch = (refused.device_id, refused.seq)
                    self._refuse(refused.topic, "status" if refused.is_status else "message", exc)
                    return [(item, True) for item in batch if item is not with_points[0]]
                stored: list[tuple[Accepted, bool]] = []
                for item in batch:
                    stored += await self._write_with_retry([item])
                return stored

    def _still_active(self, batch: list[Accepted]) -> list[Accepted]:
        """`batch` without the messages of devices no longer active (each refused and counted)."""
        refused: dict[str, RejectedMessage] = {}
        for device_id in {item.device_id for item in batch}:
            try:
                self._verifier.require_active(device_id)
            except RejectedMessage as exc:
                refused[device_id] = exc
        if not refused:
            return batch
        kept: list[Accepted] = []
        for item in batch:
            refusal = refused.get(item.device_id)
            if refusal is None:
                kept.append(item)
            else:
                self._refuse(item.topic, "message", refusal)
        return kept


class _Slot:
    """One message read from the broker: acknowledged once it and every message before it are done."""

    __slots__ = ("done", "token")

    def __init__(self, token: Any) -> None:
        self.token = token
        self.done = False


class Pipeline:
    """Receive → check → batch → write → acknowledge, with writes overlapping the next messages.

    `submit` checks a message and adds its points to the open batch; the batch goes to the writer task
    when it holds `batch_points` points, when it is `batch_ms` old, or when the window is full. The
    writer stores one batch at a time, in order, retrying while InfluxDB is down. A message is done when
    it is refused (at once) or when its batch is stored; done messages are acknowledged in the order they
    were received, each only once every message before it is done (MQTT 3.1.1 wants PUBACKs in order).
    At most `window` messages are read and not yet acknowledged: `submit` waits while that many are.
    A refused message holds no slot longer than the messages before it (with nothing before it, it is
    acknowledged at once), so refusals never stall the pipeline.

    Cancelled (a clean stop: SIGTERM), it first stores or spools what it holds and acknowledges it,
    for up to `stop_timeout_s`; leaving for any other reason (the connection is lost), it stops at once.
    Either way, what it has not stored stays unacknowledged, and the broker delivers it again.
    """

    def __init__(
        self,
        consumer: Consumer,
        ack: Callable[[Any], None],
        *,
        window: int,
        batch_points: int,
        batch_ms: int,
        stop_timeout_s: float = 0.0,
    ) -> None:
        self._consumer = consumer
        self._ack = ack
        self._window = window
        self._batch_points = batch_points
        self._batch_s = batch_ms / 1000
        self._slots: deque[_Slot] = deque()  # read and not yet acknowledged, in the order received
        self._space = asyncio.Event()
        self._batch: list[tuple[_Slot, Accepted]] = []
        self._points = 0
        self._timer: asyncio.TimerHandle | None = None
        self._queue: asyncio.Queue[list[tuple[_Slot, Accepted]]] = asyncio.Queue()  # bounded by the window
        self._task: asyncio.Task[None] | None = None
        self._stop_timeout_s = stop_timeout_s

    async def __aenter__(self) -> Pipeline:
        self._task = asyncio.create_task(self._write_loop(), name="ingest-writer")
        self._task.add_done_callback(lambda _: self._space.set())  # wake a waiting `submit` to see it
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._task is not None and exc_type is asyncio.CancelledError and self._stop_timeout_s > 0:
            try:
                await asyncio.wait_for(self.drain(), self._stop_timeout_s)
            except (TimeoutError, RuntimeError):
                log.warning("stopping with %d messages not stored: the broker delivers them again", self.unacked)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            # Whatever it holds unacknowledged is delivered again; a failure of its own has already
            # reached the receive loop through `submit`.
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def unacked(self) -> int:
        """Messages read and not yet acknowledged."""
        return len(self._slots)

    async def submit(self, topic: str, payload: bytes, token: Any, retained: bool = False) -> None:
        """Take one message (`token` is what `ack` gets for it; `retained`: the broker's copy sent on
        subscribing, not a new message); waits while the window is full. Raises only if the writer
        task failed (or when cancelled)."""
        while len(self._slots) >= self._window:
            self._check_writer()
            self._space.clear()
            await self._space.wait()
        self._check_writer()
        slot = _Slot(token)
        self._slots.append(slot)
        accepted = await self._consumer.prepare(topic, payload, retained)
        if accepted is None:  # refused, or a status message: done now
            slot.done = True
            self._release()
            return
        self._batch.append((slot, accepted))
        self._points += len(accepted.readings)
        if self._points >= self._batch_points or len(self._slots) >= self._window:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._batch_s, self.flush)

    def flush(self) -> None:
        """Hand the open batch to the writer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._batch:
            self._queue.put_nowait(self._batch)
            self._batch = []
            self._points = 0

    async def drain(self) -> None:
        """Flush, and wait until every message taken is acknowledged (for tests and a clean stop)."""
        self.flush()
        while self._slots:
            self._check_writer()
            self._space.clear()
            await self._space.wait()

    def _check_writer(self) -> None:
        task = self._task
        if task is None:
            raise RuntimeError("the pipeline is not started (use `async with`)")
        if task.done():
            exc = None if task.cancelled() else task.exception()
            raise RuntimeError("the pipeline's writer stopped") from exc

    def _release(self) -> None:
        """Acknowledge the done messages at the head, in order."""
        slots = self._slots
        while slots and slots[0].done:
            self._ack(slots.popleft().token)
        self._space.set()

    async def _write_loop(self) -> None:
        while True:
            batch = await self._queue.get()
            await self._consumer.store([accepted for _, accepted in batch])
            for slot, _ in batch:
                slot.done = True
            self._release()


def _queue_depths(client: aiomqtt.Client, pipeline: Pipeline) -> dict[str, int]:
    return {"incoming": len(client.messages), "unacked": pipeline.unacked}


def _source(topic: str) -> str:
    """What refusals are rate-limited by: the device named in the topic, or the topic itself."""
    parts = topic.split("/", 3)
    if len(parts) >= 3 and protocol.valid_id(parts[2]):
        return parts[2]
    return topic[:MAX_LOGGED_CHARS]


def _suppressed(count: int) -> str:
    return f" ({count} more like it in the last minute not logged)" if count else ""


async def supervise(
    consumer: Consumer, stats: Stats, first_backoff_s: float = 0.5, max_backoff_s: float = 30.0
) -> None:
    """Run the consumer until cancelled; restart it (with backoff) whenever it ends. A consumer that
    ran for a minute before it ended starts again after the first backoff."""
    backoff = first_backoff_s
    while True:
        started = time.monotonic()
        stats.consumer_running = True
        try:
            await consumer.run()
            error = "it returned"
            log.error("the MQTT consumer returned; restarting it in %.1f s", backoff)
        except asyncio.CancelledError:
            stats.consumer_running = False
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {escape(str(exc))}"
            log.exception("the MQTT consumer stopped; restarting it in %.1f s", backoff)
        stats.consumer_running = False
        stats.mqtt_connected = False
        stats.consumer_error = error
        if time.monotonic() - started > 60:
            backoff = first_backoff_s
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)
        stats.counters["consumer_restarts"] += 1
