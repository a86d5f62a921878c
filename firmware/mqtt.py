# A small MQTT 3.1.1 client for MicroPython, driven by the node's loop: one non-blocking TLS socket,
# QoS 0/1 publish tracked until PUBACK, one QoS 0 subscription (the service's acknowledgements) and the
# QoS 0 PUBLISH packets it brings, keep-alive pings, last will. Nothing here waits: step() moves the
# bytes that can move and returns, so sampling never stops for the network. One packet in flight at a
# time (a publish awaiting its PUBACK, or the subscription its SUBACK): a batch carries many readings,
# so a window of one keeps the RAM cost fixed and the order simple. An incoming PUBLISH larger than
# `max_incoming` is read past and counted (`skipped`), never kept. Network time is real time
# (time.ticks_ms), whatever the board's clock does. The socket module and the clock can be replaced
# per client (`net`, `clock`), so tests script both (tests/dual/test_mqtt.py). Errors are compared by
# name: ESP32's lwIP numbers them unlike Linux.
import errno
import socket
import struct
import time

from micropython import const

from firmware.errors import MQTTError

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"

DOWN = const(0)
CONNECTING = const(1)  # TCP and TLS handshakes, CONNECT sent, waiting for CONNACK
UP = const(2)

# A read or write that raises one of these has not failed, it would block: EAGAIN, ETIMEDOUT (lwIP on
# an ESP32 raises it where a timeout is set), and 118 and 119, which some ESP32 builds raise from a
# non-blocking TLS socket (EHOSTUNREACH and EINPROGRESS in their newlib numbering; mqtt_as treats them
# alike; nothing on Linux raises them). A link that is really gone is found by the timeouts.
_BUSY = (errno.EAGAIN, errno.ETIMEDOUT, 118, 119)

_REFUSED = (
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)


def _remaining_length(out, length):
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _string(out, data):
    if isinstance(data, str):
        data = data.encode()
    out.extend(struct.pack("!H", len(data)))
    out.extend(data)


class MQTTClient:
    # Where sockets and time come from: getaddrinfo(), socket() and SOCK_STREAM as the socket module
    # has them; ticks_ms(), ticks_diff() and ticks_add() as the time module has them. A test sets its
    # own on the instance; as class attributes they cost a node nothing per client.
    net = socket
    clock = time
    max_incoming = 2048  # bytes of an incoming PUBLISH packet (topic and payload) the client takes
    on_message = None  # on_message(topic, payload), bytes, for each PUBLISH that arrives

    # Made by firmware/assemble.py: client() (start-up code, not kept in RAM), which lists every
    # attribute.

    def connect(self, clean_session=True):
        """Open the socket and queue CONNECT; step() completes the handshakes. Raises MQTTError."""
        self.close()
        net = self.net
        try:
            address = net.getaddrinfo(self.host, self.port, 0, net.SOCK_STREAM)[0]
            sock = net.socket(address[0], address[1], address[2])
            self.sock = sock
            sock.setblocking(False)
            try:
                sock.connect(address[-1])
            except OSError as exc:
                if exc.errno != errno.EINPROGRESS:  # the TCP handshake goes on while the node samples
                    raise
            if self.ssl_context is not None:
                self.sock = sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=self.server_hostname or self.host, do_handshake_on_connect=False
                )
                sock.setblocking(False)
        except Exception as exc:  # OSError, TLS errors: all mean "no connection"
            self._fail("cannot connect to " + self.host + ":" + str(self.port) + ": " + repr(exc))
        packet = bytearray(b"\x00\x04MQTT\x04\x00\x00\x00")
        packet[7] = 0x02 if clean_session else 0
        struct.pack_into("!H", packet, 8, self.keepalive_ms // 1000)
        _string(packet, self.client_id)
        if self.will:
            topic, message, retain, qos = self.will
            packet[7] |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            _string(packet, topic)
            _string(packet, message)
        header = bytearray([_CONNECT])
        _remaining_length(header, len(packet))
        self.out.append(header)
        self.out.append(packet)
        self.state = CONNECTING
        self._since = self._last_rx = self._last_tx = self.clock.ticks_ms()

    def publish(self, topic, payload, qos=1, retain=False):
        """Queue a PUBLISH; with qos=1 `inflight` holds its packet id until the broker acknowledges it."""
        if self.state != UP:
            raise MQTTError("not connected")
        header = bytearray([_PUBLISH | (qos << 1) | (1 if retain else 0)])
        topic = topic.encode()
        _remaining_length(header, 2 + len(topic) + (2 if qos else 0) + len(payload))
        _string(header, topic)
        if qos:
            self._pid = self._pid % 65535 + 1
            header.extend(struct.pack("!H", self._pid))
            self.inflight = self._pid
            self._awaiting = "PUBACK"
            self._since = self.clock.ticks_ms()
        self.out.append(header)
        self.out.append(payload)
        self._last_tx = self.clock.ticks_ms()
        self.step()

    def subscribe(self, topic):
        """Queue a SUBSCRIBE at QoS 0; `inflight` holds its packet id until the SUBACK, whose return
        code is then in `granted`."""
        if self.state != UP:
            raise MQTTError("not connected")
        self._pid = self._pid % 65535 + 1
        body = bytearray(struct.pack("!H", self._pid))
        _string(body, topic)
        body.append(0)
        header = bytearray([_SUBSCRIBE])
        _remaining_length(header, len(body))
        self.inflight = self._pid
        self._awaiting = "SUBACK"
        self.granted = None
        self._since = self._last_tx = self.clock.ticks_ms()
        self.out.append(header)
        self.out.append(body)
        self.step()

    def step(self):
        """Write what can be written, read what has arrived, check the timers. Raises MQTTError (and
        closes) when the connection fails, times out or is lost."""
        if self.state == DOWN:
            return
        try:
            self._write()
            self._read()
        except MQTTError:
            raise
        except Exception as exc:  # OSError, TLS alerts: the connection is gone
            self._fail(("connection lost: " if self.state == UP else "cannot connect: ") + repr(exc))
        clock = self.clock
        now = clock.ticks_ms()
        if self.state == CONNECTING:
            if clock.ticks_diff(now, self._since) > self.timeout_ms:
                self._fail(
                    "no CONNACK from " + self.host + ":" + str(self.port) + " within " + str(self.timeout_ms) + " ms"
                )
            return
        if self.inflight and clock.ticks_diff(now, self._since) > self.timeout_ms:
            self._fail("no " + self._awaiting + " for packet " + str(self.inflight))
        if clock.ticks_diff(now, self._last_rx) > self.keepalive_ms * 3 // 2:
            self._fail("the broker went silent (keep-alive)")
        if not self.out and clock.ticks_diff(now, self._last_tx) >= self.keepalive_ms // 2:
            self.out.append(_PINGREQ)
            self._last_tx = now
            self._write()

    def _write(self):
        out = self.out
        while out:
            try:
                n = self.sock.write(out[0])
            except OSError as exc:
                # MicroPython's streams return None when a non-blocking socket would block, but lwIP
                # on ESP32 may raise instead (_BUSY), in the middle of a packet: not a lost connection.
                if exc.errno in _BUSY:
                    return
                raise
            if n is None:  # the socket (or the TLS handshake) would block
                return
            if n < len(out[0]):
                out[0] = memoryview(out[0])[n:]
            else:
                out.pop(0)

    def _read(self):
        rx = self._rx
        while True:
            n = self._rx_len
            if self._body_len < 0 and n >= 2 and not rx[n - 1] & 0x80:
                self._header_done(n)  # the remaining length is complete: the body comes next
            if self._body_len >= 0 and self._got == self._body_len:
                self._packet()
                continue
            if self._body_len < 0:
                if n == 5:
                    self._fail("malformed packet length from the broker")
                into = self._rx_into[n]
            elif self._body is None:  # too large: read past it, a little at a time
                into = memoryview(self._rx)[1 : 1 + min(4, self._body_len - self._got)]
            else:
                into = memoryview(self._body)[self._got :]
            try:
                n = self.sock.readinto(into)
            except OSError as exc:
                if exc.errno in _BUSY:  # as in _write
                    return
                raise
            if n is None:
                return
            if not n:
                self._fail("connection closed by the broker")
            if self._body_len < 0:
                self._rx_len += n
            else:
                self._got += n
            self._last_rx = self.clock.ticks_ms()

    def _header_done(self, n):
        length = 0
        for i in range(n - 1, 0, -1):
            length = length << 7 | self._rx[i] & 0x7F
        kind = self._rx[0]
        if kind & 0xF0 == _PUBLISH:
            if kind & 0x06 > 0x02:
                self._fail("unexpected QoS 2 publish from the broker")
            if length <= self.max_incoming:
                try:
                    self._body = bytearray(length)
                except MemoryError:
                    self._body = None
            if self._body is None:
                self.skipped += 1
        elif length != (2 if kind == _CONNACK or kind == _PUBACK else 3 if kind == _SUBACK else 0) or not (
            kind == _CONNACK or kind == _PUBACK or kind == _SUBACK or kind == _PINGRESP
        ):
            # Nothing else comes to a client that publishes and subscribes once.
            self._fail("unexpected packet from the broker: " + hex(kind) + " " + hex(length))
        else:
            self._body = bytearray(length)
        self._body_len = length
        self._got = 0

    def _packet(self):
        """A whole packet has come: act on it, and make ready for the next."""
        kind = self._rx[0]
        body = self._body
        self._body = None
        self._body_len = -1
        self._rx_len = 0
        if body is None:  # a PUBLISH read past
            return
        if kind == _CONNACK and self.state == CONNECTING:
            code = body[1]
            if code:
                self._fail("broker refused the connection: " + (_REFUSED[code - 1] if code <= 5 else str(code)))
            self.state = UP
        elif kind == _PUBACK or kind == _SUBACK:
            if (body[0] << 8 | body[1]) == self.inflight:
                self.inflight = 0
                if kind == _SUBACK:
                    self.granted = body[2]
        elif kind & 0xF0 == _PUBLISH:
            end = 2 + (body[0] << 8 | body[1])
            start = end
            if kind & 0x06:  # QoS 1 (not asked for, but acknowledged as MQTT wants, in order)
                self.out.append(bytes((_PUBACK, 2, body[end], body[end + 1])))
                start += 2
            if end > len(body) or start > len(body):
                self._fail("malformed PUBLISH from the broker")
            if self.on_message is not None:
                self.on_message(bytes(body[2:end]), body[start:])

    def _fail(self, reason):
        self.close()
        raise MQTTError(reason)

    def disconnect(self):
        """Send DISCONNECT if the socket takes it now (the will is then not published), and close."""
        if self.state == UP:
            try:
                self.out.append(_DISCONNECT)
                self._write()
            except Exception:
                pass
        self.close()

    def close(self):
        self.state = DOWN
        self.inflight = 0
        self.out = []
        self._rx_len = 0
        self._body = None
        self._body_len = -1
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:
                pass
            self.sock = None
