# A small asyncio MQTT 3.1.1 client for MicroPython: TLS, QoS 0/1 publish tracked until PUBACK,
# keep-alive pings, last will. One publish in flight at a time: a batch carries many readings, so the
# window of one keeps the RAM cost fixed and the ordering simple. It publishes only: nothing
# subscribes yet (a config or command topic would add SUBSCRIBE and incoming PUBLISH handling).
import asyncio
import struct
import time

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_PINGREQ = b"\xc0\x00"
_PINGRESP = const(0xD0)
_DISCONNECT = b"\xe0\x00"

_CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MQTTError(Exception):
    """The connection failed or was lost; the caller reconnects."""


class ConnectionRefused(MQTTError):
    def __init__(self, code):
        super().__init__("broker refused the connection: " + _CONNACK_REASONS.get(code, str(code)))
        self.code = code


def _encode_length(length):
    out = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return out


def _string(data):
    if isinstance(data, str):
        data = data.encode()
    return struct.pack("!H", len(data)) + data


class MQTTClient:
    def __init__(self, client_id, host, port, ssl_context=None, server_hostname=None,
                 keepalive_s=30, timeout_ms=10000):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.keepalive_s = keepalive_s
        self.timeout_ms = timeout_ms
        self.connected = False
        self._will = None
        self._reader = None
        self._writer = None
        self._tasks = []
        self._pid = 0
        self._awaiting_pid = 0
        self._ack = asyncio.Event()
        self._last_rx = 0

    def set_will(self, topic, payload, retain=True, qos=1):
        self._will = (topic, payload, retain, qos)

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def connect(self, clean_session=True):
        await self.close()
        try:
            if self.ssl_context is None:
                conn = asyncio.open_connection(self.host, self.port)
            else:
                conn = asyncio.open_connection(self.host, self.port, ssl=self.ssl_context,
                                               server_hostname=self.server_hostname)
            self._reader, self._writer = await asyncio.wait_for_ms(conn, self.timeout_ms)
            flags = 0x02 if clean_session else 0
            payload = _string(self.client_id)
            if self._will:
                topic, message, retain, qos = self._will
                flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
                payload += _string(topic) + _string(message)
            variable = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack("!H", self.keepalive_s)
            body = variable + payload
            self._writer.write(bytes([_CONNECT]) + _encode_length(len(body)) + body)
            await self._writer.drain()
            ack = await asyncio.wait_for_ms(self._reader.readexactly(4), self.timeout_ms)
        except MQTTError:
            await self.close()
            raise
        except Exception as exc:  # OSError, TLS errors, timeouts: all mean "no connection"
            await self.close()
            raise MQTTError("cannot connect to " + self.host + ":" + str(self.port) + ": " + repr(exc))
        if ack[0] != _CONNACK or ack[1] != 2:
            await self.close()
            raise MQTTError("unexpected reply to CONNECT: " + repr(ack))
        if ack[3] != 0:
            await self.close()
            raise ConnectionRefused(ack[3])
        self.connected = True
        self._last_rx = time.ticks_ms()
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._ping_loop())]

    async def _send(self, data):
        if not self.connected:
            raise MQTTError("not connected")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except Exception as exc:
            self._mark_lost()
            raise MQTTError("send failed: " + repr(exc))

    async def publish(self, topic, payload, qos=1, retain=False):
        """Publish; with qos=1 return only once the broker acknowledged, else raise MQTTError."""
        topic_bytes = _string(topic)
        header = _PUBLISH | (qos << 1) | (1 if retain else 0)
        if qos:
            pid = self._next_pid()
            variable = topic_bytes + struct.pack("!H", pid)
        else:
            pid = 0
            variable = topic_bytes
        length = len(variable) + len(payload)
        self._awaiting_pid = pid
        self._ack.clear()
        await self._send(bytes([header]) + _encode_length(length) + variable)
        await self._send(payload)
        if not qos:
            return
        try:
            await asyncio.wait_for_ms(self._wait_ack(), self.timeout_ms)
        except asyncio.TimeoutError:
            self._mark_lost()
            raise MQTTError("no PUBACK for packet " + str(pid))

    async def _wait_ack(self):
        while True:
            if self._ack.is_set():
                return
            if not self.connected:
                raise MQTTError("connection lost while waiting for PUBACK")
            # Poll so that the loss of the connection ends the wait as well as the ack.
            try:
                await asyncio.wait_for_ms(self._ack.wait(), 250)
            except asyncio.TimeoutError:
                pass

    async def _read_packet(self):
        first = (await self._reader.readexactly(1))[0]
        length = 0
        shift = 0
        while True:
            byte = (await self._reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length")
        body = await self._reader.readexactly(length) if length else b""
        return first, body

    async def _read_loop(self):
        try:
            while self.connected:
                kind, body = await self._read_packet()
                self._last_rx = time.ticks_ms()
                packet = kind & 0xF0
                if packet == _PUBACK:
                    pid = struct.unpack("!H", body[:2])[0]
                    if pid == self._awaiting_pid:
                        self._ack.set()
                # PINGRESP needs nothing beyond the refreshed receive time.
        except asyncio.CancelledError:
            raise
        except Exception:
            self._mark_lost()

    async def _ping_loop(self):
        interval_ms = self.keepalive_s * 500
        try:
            while self.connected:
                await asyncio.sleep_ms(interval_ms)
                if time.ticks_diff(time.ticks_ms(), self._last_rx) > self.keepalive_s * 1500:
                    self._mark_lost()
                    return
                await self._send(_PINGREQ)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._mark_lost()

    def _mark_lost(self):
        self.connected = False

    async def disconnect(self):
        if self.connected:
            try:
                await self._send(_DISCONNECT)
            except MQTTError:
                pass
        await self.close()

    async def close(self):
        self.connected = False
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._writer is not None:
            try:
                self._writer.close()
                await self._writer.wait_closed()
            except Exception:
                pass
        self._reader = None
        self._writer = None
