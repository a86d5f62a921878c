"""The MQTT consumer: receive, verify, write, and only then acknowledge.

Messages arrive at QoS 1 on a persistent session with manual acknowledgement, so a message the service
has not stored is delivered again after a crash or a disconnect. A message that can never be stored
(malformed, too large, wrong version, unknown device) is counted, logged and acknowledged so that it
does not block the ones behind it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from typing import Any

import aiomqtt

from ingest._errors import RejectedMessage, StorageError
from ingest._registry import Registry
from ingest._settings import Settings
from ingest._writer import PointWriter, to_lines
from shared import decode, protocol

log = logging.getLogger("fieldlink.ingest")


class Stats:
    """Counters for /healthz: everything received, stored, rejected (by reason) and retried."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.mqtt_connected = False
        self.latest: dict[str, dict[str, dict[str, Any]]] = {}
        self.last_seen: dict[str, int] = {}
        # The newest status message of each device: online, its health counters, a config error.
        self.status: dict[str, dict[str, Any]] = {}

    def reject(self, reason: str) -> None:
        self.counters["rejected"] += 1
        self.counters[f"rejected_{reason}"] += 1


class Verifier:
    """Everything a message must pass before its points are written."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self._registry = registry
        self._max_skew_ms = int(settings.max_clock_skew_s * 1000)

    def _device(self, device_id: str) -> None:
        # Read for every message, never cached: a revocation holds from the next message on.
        status = self._registry.status(device_id)
        if status is None:
            raise RejectedMessage("unregistered", f"device {device_id!r} is not registered")
        if status != "active":
            raise RejectedMessage("revoked", f"device {device_id!r} is {status}")

    def check_status(self, device_id: str, payload: bytes) -> dict[str, Any]:
        """A registered device's status message as a dict, or raise RejectedMessage."""
        try:
            online, counters, error, cert = decode.decode_status(payload)
        except decode.ProtocolError as exc:
            raise RejectedMessage(exc.reason, str(exc)) from exc
        self._device(device_id)
        return {"online": online, "counters": counters, "error": error, "cert": cert}

    def check(self, topic: str, payload: bytes, now_ms: int) -> tuple[str, int, list[tuple[int, str, float]], int]:
        """Return (device, seq, readings with values, count of failed reads) or raise RejectedMessage."""
        try:
            device_id, kind = decode.parse_topic(topic)
            if kind != "data":
                raise decode.BadTopic(f"topic {topic!r} is not a data topic")
            seq, readings = decode.decode_batch(payload)
        except decode.ProtocolError as exc:
            raise RejectedMessage(exc.reason, str(exc)) from exc
        self._device(device_id)
        latest = max((t for t, _, _ in readings), default=0)
        if latest > now_ms + self._max_skew_ms:
            raise RejectedMessage(
                "clock_skew",
                f"device {device_id!r} stamps readings {(latest - now_ms) / 1000:.0f} s in the future",
            )
        stored = [(t, sensor, value) for t, sensor, value in readings if value is not None]
        return device_id, seq, stored, len(readings) - len(stored)


class Consumer:
    def __init__(self, settings: Settings, registry: Registry, writer: PointWriter, stats: Stats) -> None:
        self._settings = settings
        self._verifier = Verifier(settings, registry)
        self._writer = writer
        self._stats = stats

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self._settings
        if not s.mqtt_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(s.mqtt_ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(s.mqtt_cert), str(s.mqtt_key))
        return context

    def _subscriptions(self) -> list[tuple[str, int]]:
        group = self._settings.mqtt_shared_group
        data = f"$share/{group}/{protocol.DATA_SUBSCRIPTION}" if group else protocol.DATA_SUBSCRIPTION
        # Status is small and retained: every worker keeps all of it, so it is never shared.
        return [(data, 1), (protocol.STATUS_SUBSCRIPTION, 1)]

    async def run(self) -> None:
        """Consume until cancelled, reconnecting with backoff."""
        s = self._settings
        backoff = 0.5
        while True:
            client = aiomqtt.Client(
                s.mqtt_host,
                s.mqtt_port,
                identifier=s.mqtt_client_id,
                clean_session=False,  # the broker keeps our queue while we are away
                keepalive=s.mqtt_keepalive_s,
                tls_context=self._tls_context(),
                tls_insecure=False,
            )
            # Acknowledge only after the write (aiomqtt 2.x would acknowledge on receipt).
            client._client.manual_ack_set(True)
            try:
                async with client:
                    self._stats.mqtt_connected = True
                    backoff = 0.5
                    log.info("connected to mqtts://%s:%s", s.mqtt_host, s.mqtt_port)
                    await client.subscribe(self._subscriptions())
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            payload = str(payload).encode()
                        await self.handle(str(message.topic), bytes(payload))
                        client._client.ack(message.mid, message.qos)
            except aiomqtt.MqttError as exc:
                self._stats.mqtt_connected = False
                self._stats.counters["mqtt_disconnects"] += 1
                log.warning("MQTT connection lost (%s); reconnecting in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self._stats.mqtt_connected = False

    async def handle(self, topic: str, payload: bytes) -> None:
        """Process one message to its end: stored, or rejected and counted. Never raises."""
        stats = self._stats
        if topic.endswith("/status"):
            await self._handle_status(topic, payload)
            return
        stats.counters["received"] += 1
        try:
            device_id, seq, readings, failed = self._verifier.check(topic, payload, int(time.time() * 1000))
            if readings:
                await self._write_with_retry(to_lines(device_id, readings))
        except RejectedMessage as exc:
            stats.reject(exc.reason)
            log.warning("rejected message on %r (%s): %s", topic, exc.reason, exc)
            return
        except Exception:  # a bug must cost one message, never the consumer
            stats.reject("internal_error")
            log.exception("failed to process a message on %r", topic)
            return
        stats.counters["stored_messages"] += 1
        stats.counters["stored_points"] += len(readings)
        stats.counters["failed_reads"] += failed
        latest = stats.latest.setdefault(device_id, {})
        for timestamp_ms, sensor, value in readings:
            current = latest.get(sensor)
            if current is None or current["time_ms"] <= timestamp_ms:
                latest[sensor] = {"time_ms": timestamp_ms, "value": value}
        stats.last_seen[device_id] = int(time.time() * 1000)
        log.debug("stored %d points from %s (seq %d)", len(readings), device_id, seq)

    async def _handle_status(self, topic: str, payload: bytes) -> None:
        self._stats.counters["status_received"] += 1
        try:
            device_id, _ = decode.parse_topic(topic)
            status = self._verifier.check_status(device_id, payload)
        except decode.ProtocolError as exc:
            self._stats.reject(exc.reason)
            log.warning("rejected status on %r (%s): %s", topic, exc.reason, exc)
            return
        except RejectedMessage as exc:
            self._stats.reject(exc.reason)
            log.warning("rejected status on %r (%s): %s", topic, exc.reason, exc)
            return
        self._stats.status[device_id] = status
        if status["error"]:
            log.warning("device %s reports: %s", device_id, status["error"])

    async def _write_with_retry(self, lines: list[str]) -> None:
        """Retry until InfluxDB takes the points: holding the message back is how we lose nothing."""
        delay = 0.2
        while True:
            try:
                await self._writer.write(lines)
                return
            except StorageError as exc:
                self._stats.counters["write_retries"] += 1
                log.warning("write failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.write_retry_max_s)
