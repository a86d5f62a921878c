"""A small asyncio MQTT 3.1.1 client for the load generator: CONNECT (with a will), PUBLISH at QoS 0/1,
PUBACK tracking, SUBSCRIBE (to set up a persistent session), PINGREQ and DISCONNECT, over TLS with a
client certificate. It speaks the protocol as the node's client does (firmware/mqtt.py), but keeps
many publishes in flight per connection so that one process can drive tens of devices."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    0x10,
    0x20,
    0x30,
    0x40,
    0x82,
    0x90,
    0xC0,
    0xD0,
    0xE0,
)


class MqttError(Exception):
    pass


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str, *, clean: bool, keepalive_s: int, will: tuple[str, bytes, bool, int] | None = None
) -> bytes:
    flags = 0x02 if clean else 0
    body = bytearray(b"\x00\x04MQTT\x04") + bytes([0]) + struct.pack("!H", keepalive_s) + _string(client_id.encode())
    if will is not None:
        topic, message, retain, qos = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        body += _string(topic.encode()) + _string(message)
    body[7] = flags
    return bytes([CONNECT]) + _remaining_length(len(body)) + bytes(body)


def publish_packet(topic: bytes, payload: bytes, packet_id: int, qos: int = 1, retain: bool = False) -> bytes:
    variable = _string(topic) + (struct.pack("!H", packet_id) if qos else b"")
    header = bytes([PUBLISH | (qos << 1) | (1 if retain else 0)])
    return header + _remaining_length(len(variable) + len(payload)) + variable + payload


def tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


class Connection(asyncio.Protocol):
    """One MQTT connection. `on_puback(packet_id)` is called for every PUBACK, in the order received."""

    def __init__(self, on_puback: Callable[[int], None] | None = None) -> None:
        self.on_puback = on_puback
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._connack: asyncio.Future[int] | None = None
        self._suback: asyncio.Future[bytes] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next_id = 0
        self._pinger: asyncio.TimerHandle | None = None
        self.keepalive_s = 60

    # --- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            first = kind = buffer[pos]
            # Remaining length: every packet a publisher gets is short (one byte of length) except SUBACK
            # and PUBLISH, which the generator never receives in bulk; decode the general form anyway.
            length = 0
            multiplier = 1
            i = pos + 1
            while True:
                if i >= end:
                    self._buffer = buffer[pos:]
                    return
                byte = buffer[i]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                i += 1
                if not byte & 0x80:
                    break
            if end - i < length:
                break
            body = buffer[i : i + length]
            pos = i + length
            kind &= 0xF0 if kind & 0xF0 == PUBLISH else 0xFF
            if kind == PUBACK:
                if self.on_puback is not None:
                    self.on_puback(body[0] << 8 | body[1])
            elif kind == CONNACK:
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(body[1])
            elif kind == SUBACK:
                if self._suback is not None and not self._suback.done():
                    self._suback.set_result(bytes(body[2:]))
            elif kind == PUBLISH and first & 0x06 and self.transport is not None:
                # Retained status messages on a session being prepared: acknowledged, not counted.
                topic_length = body[0] << 8 | body[1]
                packet_id = body[2 + topic_length : 4 + topic_length]
                self.transport.write(bytes([PUBACK, 2]) + bytes(packet_id))
        del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        for future in (self._connack, self._suback):
            if future is not None and not future.done():
                future.set_exception(MqttError(f"connection lost: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- use --------------------------------------------------------------------------------------
    def packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise MqttError("not connected")
        self.transport.write(data)

    def publish(self, topic: bytes, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        packet_id = self.packet_id() if qos else 0
        self.write(publish_packet(topic, payload, packet_id, qos, retain))
        return packet_id

    async def subscribe(self, topics: list[tuple[str, int]]) -> bytes:
        body = struct.pack("!H", self.packet_id())
        for topic, qos in topics:
            body += _string(topic.encode()) + bytes([qos])
        self._suback = asyncio.get_running_loop().create_future()
        self.write(bytes([SUBSCRIBE]) + _remaining_length(len(body)) + body)
        return await asyncio.wait_for(self._suback, 10)

    def _ping(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes([PINGREQ, 0]))
            self._pinger = asyncio.get_running_loop().call_later(self.keepalive_s / 2, self._ping)

    def disconnect(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes([DISCONNECT, 0]))
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once, as a device losing its network does (no DISCONNECT)."""
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    client_id: str,
    *,
    clean: bool = True,
    keepalive_s: int = 60,
    will: tuple[str, bytes, bool, int] | None = None,
    on_puback: Callable[[int], None] | None = None,
    server_hostname: str = "localhost",
    timeout: float = 30.0,
) -> Connection:
    """A connected client (CONNACK accepted), or MqttError/OSError."""
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(
            lambda: Connection(on_puback),
            host,
            port,
            ssl=context,
            server_hostname=server_hostname if context is not None else None,
        ),
        timeout,
    )
    protocol.keepalive_s = keepalive_s
    protocol._connack = loop.create_future()
    protocol.write(connect_packet(client_id, clean=clean, keepalive_s=keepalive_s, will=will))
    try:
        code = await asyncio.wait_for(protocol._connack, timeout)
    except BaseException:
        protocol.abort()
        raise
    if code:
        protocol.abort()
        raise MqttError(f"broker refused the connection (code {code})")
    protocol._pinger = loop.call_later(keepalive_s / 2, protocol._ping)
    return protocol
