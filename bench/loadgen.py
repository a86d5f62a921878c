"""The load generator: simulated devices that speak fieldlink's protocol to the real broker.

Each device has its own certificate (from `fieldlink device add`), its own TLS connection and client
id, announces its retained `online` status as a node does, and publishes data at QoS 1; a message
counts as sent only once the broker acknowledged it, and a message in flight when a connection drops
is sent again after the reconnect (the same bytes: its points overwrite themselves). What it reports
(acknowledged messages and points) is exact, and the harness checks InfluxDB against it.

Run as `python -m bench.loadgen` with a JSON spec on the first line of standard input; prints one JSON
line of results. Modes:

- `fill`: every device publishes `messages` messages as fast as the broker takes them;
- `live`: `rate` messages per second (spread over the devices) for `duration` seconds, stamped with the
  wall clock; every `probe_every`-th message of a device is a latency probe;
- `storm`: connect every device, publish, print a `ready` line, wait for `go` on standard input, drop
  every connection at once, reconnect them all at once and publish on; reports when each was back.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.mqtt import Connection, MqttError, connect, publish_packet, tls_context
from bench.payloads import SENSORS, LiveStamper, fill_message
from shared.protocol import data_topic, encode_status, status_topic

_STATUS = object()  # marks the status publish in a device's in-flight table


@dataclass
class DeviceSpec:
    id: str
    index: int
    bundle: str
    cert_id: str | None = None


@dataclass
class Spec:
    mode: str
    host: str
    port: int
    devices: list[DeviceSpec]
    shape: int = 1
    messages: int = 0  # fill: per device
    base_ms: int = 0  # fill: the first timestamp
    rate: float = 0.0  # live: messages per second from this process
    duration: float = 0.0  # live, and storm after the reconnect
    probe_every: int = 0
    window: int = 20  # publishes in flight per connection
    storm_rate: float = 1.0  # storm: messages per second per device

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Spec:
        devices = [DeviceSpec(**d) for d in data.pop("devices")]
        return cls(devices=devices, **data)


@dataclass
class Device:
    spec: DeviceSpec
    gen: Generator
    conn: Connection | None = None
    queue: deque[tuple[bytes, int]] = field(default_factory=deque)  # to send: (payload, points)
    inflight: dict[int, Any] = field(default_factory=dict)  # packet id -> (payload, points) or _STATUS
    acked_messages: int = 0
    acked_points: int = 0
    made: int = 0  # live messages made so far (its k)
    stamper: LiveStamper = field(default_factory=LiveStamper)
    connects: int = 0
    connack_at: float = 0.0
    back_at: float = 0.0  # storm: the first data PUBACK after the reconnect
    counting_back: bool = False

    def __post_init__(self) -> None:
        bundle = Path(self.spec.bundle)
        self.context = tls_context(bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem")
        self.topic = data_topic(self.spec.id).encode()
        self.status_topic = status_topic(self.spec.id)

    async def connect(self) -> None:
        """Connect (retrying with a short backoff), announce the status, resend what was in flight."""
        delay = 0.1
        while True:
            try:
                self.conn = await connect(
                    self.gen.spec.host,
                    self.gen.spec.port,
                    self.context,
                    self.spec.id,
                    will=(self.status_topic, encode_status(False), True, 1),
                    on_puback=self._acked,
                )
                break
            except (TimeoutError, OSError, MqttError):
                self.gen.connect_failures += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.connects += 1
        self.connack_at = time.time()
        # What was in flight on the lost connection goes again, first.
        resend = [item for item in self.inflight.values() if item is not _STATUS]
        self.inflight.clear()
        self.queue.extendleft(reversed(resend))
        online = encode_status(True, {"reconnects": self.connects - 1}, None, self.spec.cert_id)
        self.inflight[self.conn.publish(self.status_topic.encode(), online, 1, True)] = _STATUS
        self.pump()

    def _acked(self, packet_id: int) -> None:
        item = self.inflight.pop(packet_id, None)
        if item is None or item is _STATUS:
            self.pump()
            return
        self.acked_messages += 1
        self.acked_points += item[1]
        if self.counting_back and not self.back_at:
            self.back_at = time.time()
        self.gen.acked(item[1])
        self.pump()

    def pump(self) -> None:
        """Send queued messages while fewer than the window are in flight, written together."""
        conn = self.conn
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return
        room = self.gen.spec.window - len(self.inflight)
        if room <= 0 or not self.queue:
            return
        if room < self.gen.spec.window // 2 and len(self.queue) > room:
            return  # wait for half the window to come back: fewer, larger writes
        packets = []
        while room > 0 and self.queue:
            item = self.queue.popleft()
            packet_id = conn.packet_id()
            self.inflight[packet_id] = item
            packets.append(publish_packet(self.topic, item[0], packet_id))
            room -= 1
        conn.write(b"".join(packets))

    @property
    def idle(self) -> bool:
        return not self.queue and not self.inflight


class Generator:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.devices = [Device(d, self) for d in spec.devices]
        self.acked_messages = 0
        self.acked_points = 0
        self.first_ack = 0.0
        self.last_ack = 0.0
        self.connect_failures = 0
        self.cpu_start = 0.0
        self._idle = asyncio.Event()

    def acked(self, points: int) -> None:
        now = time.time()
        if not self.first_ack:
            self.first_ack = now
        self.last_ack = now
        self.acked_messages += 1
        self.acked_points += points
        if self.acked_messages >= self._expect:
            self._idle.set()

    _expect = 1 << 62

    async def connect_all(self) -> float:
        started = time.monotonic()
        await asyncio.gather(*(d.connect() for d in self.devices))
        return time.monotonic() - started

    async def wait_acked(self, expect: int, timeout: float) -> None:
        self._expect = expect
        if self.acked_messages >= expect:
            return
        self._idle.clear()
        await asyncio.wait_for(self._idle.wait(), timeout)

    def close(self) -> None:
        for d in self.devices:
            if d.conn is not None:
                d.conn.disconnect()

    def totals(self) -> dict[str, Any]:
        return {
            "acked_messages": self.acked_messages,
            "acked_points": self.acked_points,
            "first_ack": self.first_ack,
            "last_ack": self.last_ack,
            "connect_failures": self.connect_failures,
            "devices": len(self.devices),
            "cpu_s": time.process_time() - self.cpu_start,
        }

    # --- modes ------------------------------------------------------------------------------------
    async def fill(self) -> dict[str, Any]:
        spec = self.spec
        for d in self.devices:
            for k in range(spec.messages):
                payload = fill_message(d.spec.index, k, spec.shape, spec.base_ms)
                d.queue.append((payload, spec.shape))
        connect_s = await self.connect_all()
        self.cpu_start = time.process_time()
        started = time.time()
        expect = spec.messages * len(self.devices)
        await self.wait_acked(expect, timeout=600)
        finished = time.time()
        self.close()
        return {**self.totals(), "connect_s": connect_s, "started": started, "finished": finished}

    async def warm_up(self) -> int:
        """Each device sends every sensor it will use once (the probe's too), as a node's first
        messages would: the service registers a device's sensor names when it first sees them, a cost
        that belongs to no steady state. Returns the messages sent."""
        spec = self.spec
        sent = 0
        for d in self.devices:
            for k in range(1 if spec.shape > 1 else len(SENSORS)):
                payload, _ = d.stamper.message(d.spec.index, k, spec.shape, False)
                d.queue.append((payload, spec.shape))
            payload, _ = d.stamper.message(d.spec.index, len(SENSORS), spec.shape, True)
            d.queue.append((payload, spec.shape))
            d.made = len(d.queue)
            sent += len(d.queue)
            d.pump()
        await self.wait_acked(sent, timeout=120)
        return sent

    async def live(self) -> dict[str, Any]:
        spec = self.spec
        await self.connect_all()
        made = await self.warm_up()
        print(json.dumps({"warm": {"at": time.time()}}), flush=True)
        self.cpu_start = time.process_time()
        devices = self.devices
        started = time.time()
        clock = time.monotonic()
        timed = made
        turn = 0
        backlog = 0
        newest: list[int] = []
        ahead = 0
        while True:
            elapsed = time.monotonic() - clock
            if elapsed >= spec.duration:
                break
            due = int(spec.rate * elapsed) - (made - timed)
            for _ in range(due):
                d = devices[turn % len(devices)]
                turn += 1
                probe = bool(spec.probe_every) and d.made % spec.probe_every == spec.probe_every - 1
                payload, stamp = d.stamper.message(d.spec.index, d.made, spec.shape, probe)
                if probe:
                    newest.append(stamp)
                ahead = max(ahead, stamp - int(time.time() * 1000))
                d.made += 1
                d.queue.append((payload, spec.shape))
                d.pump()
                made += 1
            backlog = max(backlog, sum(len(d.queue) for d in devices))
            await asyncio.sleep(0.002)
        stopped = time.time()
        await self.wait_acked(made, timeout=300)
        finished = time.time()
        self.close()
        return {
            **self.totals(),
            "made": made,
            "warm_up": timed,
            "started": started,
            "stopped": stopped,
            "finished": finished,
            "max_backlog": backlog,
            "probes": len(newest),
            "max_ahead_ms": ahead,  # how far a device's stamps ran ahead of the clock (too fast a device)
        }

    async def storm(self) -> dict[str, Any]:
        spec = self.spec
        loop = asyncio.get_running_loop()
        connect_s = await self.connect_all()
        for d in self.devices:
            payload, _ = d.stamper.message(d.spec.index, d.made, spec.shape, False)
            d.made += 1
            d.queue.append((payload, spec.shape))
            d.pump()
        await self.wait_acked(len(self.devices), timeout=120)
        print(json.dumps({"ready": True, "connect_s": connect_s}), flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            raise SystemExit(f"expected 'go', got {line!r}")
        self.cpu_start = time.process_time()
        dropped = time.time()
        for d in self.devices:
            d.counting_back = True
            d.back_at = 0.0
            if d.conn is not None:
                d.conn.abort()
        # Every device at once: a new connection, its status, then data at storm_rate.
        await asyncio.sleep(0)
        reconnects = [asyncio.create_task(d.connect()) for d in self.devices]
        clock = time.monotonic()
        made = len(self.devices)
        while time.monotonic() - clock < spec.duration:
            target = 2 + int(spec.storm_rate * (time.monotonic() - clock))
            for d in self.devices:
                while d.made < target:
                    payload, _ = d.stamper.message(d.spec.index, d.made, spec.shape, False)
                    d.made += 1
                    d.queue.append((payload, spec.shape))
                    made += 1
                d.pump()
            await asyncio.sleep(0.05)
        await asyncio.gather(*reconnects)
        await self.wait_acked(made, timeout=120)
        self.close()
        return {
            **self.totals(),
            "made": made,
            "connect_s": connect_s,
            "dropped": dropped,
            "connack_at": [d.connack_at for d in self.devices],
            "back_at": [d.back_at for d in self.devices],
        }


async def _main() -> None:
    spec = Spec.parse(json.loads(sys.stdin.readline()))
    gen = Generator(spec)
    mode = {"fill": gen.fill, "live": gen.live, "storm": gen.storm}[spec.mode]
    result = await mode()
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
