# The node's MQTT client (firmware/mqtt.py) against a scripted socket and a fake clock, on both
# interpreters: handshakes, refusals, partial reads and writes, lwIP's EAGAIN/ETIMEDOUT in the middle
# of a packet, PUBACK ids, keep-alive and a silent broker. Errors are made by name (errno.EAGAIN...):
# ESP32's lwIP numbers them unlike Linux.
import errno

from firmware.assemble import make_client
from firmware.errors import MQTTError
from firmware.mqtt import CONNECTING, DOWN, UP
from tests.dual.helpers import raises

CONNACK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"
WILL = ("fl/v1/node-1/status", b'{"online":false}', True, 1)


def oserror(code):
    """As a socket raises it: CPython sets errno only from two arguments; MicroPython from either."""
    return OSError(code, "scripted")


def puback(pid):
    return bytes((0x40, 2, pid >> 8, pid & 0xFF))


class Clock:
    """ticks in milliseconds, moved by hand."""

    def __init__(self, now=100000):
        self.now = now

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, b):
        return a + b


class Socket:
    """A non-blocking socket as MicroPython has it, scripted. incoming: what readinto() finds, in
    order: bytes (given across calls as the buffer allows), None (would block once), b"" (closed by
    the peer) or an exception to raise. writes: per write() call, the most bytes it takes, None (would
    block) or an exception; when empty, it takes everything."""

    def __init__(self, connect_error=None):
        self.connect_error = connect_error
        self.incoming = []
        self.writes = []
        self.sent = bytearray()
        self.blocking = True
        self.address = None
        self.closed = False

    def setblocking(self, flag):
        self.blocking = flag

    def connect(self, address):
        self.address = address
        if self.connect_error is not None:
            raise self.connect_error

    def write(self, data):
        if self.writes:
            step = self.writes.pop(0)
            if isinstance(step, Exception):
                raise step
            if step is None:
                return None
            data = data[:step]
        self.sent += bytes(data)
        return len(data)

    def readinto(self, buf):
        if not self.incoming:
            return None
        item = self.incoming[0]
        if item is None or isinstance(item, Exception) or not item:
            self.incoming.pop(0)
            if isinstance(item, Exception):
                raise item
            return None if item is None else 0
        n = min(len(buf), len(item))
        for i in range(n):
            buf[i] = item[i]
        if n == len(item):
            self.incoming.pop(0)
        else:
            self.incoming[0] = item[n:]
        return n

    def close(self):
        self.closed = True


class Net:
    """The socket module's part the client uses: getaddrinfo, socket, SOCK_STREAM."""

    SOCK_STREAM = 1

    def __init__(self, sock):
        self.sock = sock

    def getaddrinfo(self, host, port, family, kind):
        return [(2, kind, 0, "", (host, port))]

    def socket(self, family, kind, proto):
        return self.sock


def packets(data):
    """[(first byte, body)] of the MQTT packets in data."""
    out = []
    i = 0
    while i < len(data):
        kind = data[i]
        i += 1
        length = 0
        shift = 0
        while True:
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append((kind, bytes(data[i : i + length])))
        i += length
    return out


def client(sock=None, clock=None, keepalive_s=30, timeout_ms=5000):
    sock = sock or Socket()
    clock = clock or Clock()
    mqtt = make_client(
        "node-1",
        "broker.example",
        8883,
        keepalive_s=keepalive_s,
        timeout_ms=timeout_ms,
        will=WILL,
    )
    mqtt.net = Net(sock)
    mqtt.clock = clock
    return mqtt, sock, clock


def connected(**options):
    mqtt, sock, clock = client(**options)
    mqtt.connect()
    sock.incoming.append(CONNACK)
    mqtt.step()
    assert mqtt.state == UP
    sock.sent = bytearray()
    return mqtt, sock, clock


def test_connect_sends_connect_with_the_will_and_comes_up_on_connack():
    mqtt, sock, _ = client()
    mqtt.connect()
    assert mqtt.state == CONNECTING
    assert not sock.blocking
    assert sock.address == ("broker.example", 8883)
    mqtt.step()
    assert mqtt.state == CONNECTING  # no CONNACK yet
    [(kind, body)] = packets(sock.sent)
    assert kind == 0x10
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0x02 | 0x04 | 0x08 | 0x20  # clean session, will, will QoS 1, will retained
    assert body[8:10] == b"\x00\x1e"  # keep-alive 30 s
    rest = body[10:]
    assert rest == b"\x00\x06node-1\x00\x13fl/v1/node-1/status\x00\x10" + WILL[1]
    sock.incoming.append(CONNACK)
    mqtt.step()
    assert mqtt.state == UP


def test_tcp_connect_in_progress_is_not_an_error_but_a_refusal_is():
    mqtt, sock, _ = client(Socket(oserror(errno.EINPROGRESS)))
    mqtt.connect()
    assert mqtt.state == CONNECTING
    mqtt, sock, _ = client(Socket(oserror(errno.ECONNREFUSED)))
    exc = raises(MQTTError, mqtt.connect)
    assert "cannot connect to broker.example:8883" in str(exc)
    assert mqtt.state == DOWN
    assert sock.closed


def test_connack_refused_closes_with_the_reason():
    reasons = {1: "unacceptable protocol version", 4: "bad user name or password", 5: "not authorized", 9: "9"}
    for code in reasons:
        mqtt, sock, _ = client()
        mqtt.connect()
        sock.incoming.append(bytes((0x20, 2, 0, code)))
        exc = raises(MQTTError, mqtt.step)
        assert str(exc) == "broker refused the connection: " + reasons[code], str(exc)
        assert mqtt.state == DOWN
        assert sock.closed
        assert mqtt.sock is None


def test_partial_writes_send_the_same_bytes_in_order():
    whole, sock, _ = client()
    whole.connect()
    whole.step()
    expected = bytes(sock.sent)
    mqtt, sock, _ = client()
    sock.writes = [3, None, 1, 0, 7, None, 2, 5, 1, 1, 4]
    mqtt.connect()
    for _ in range(20):
        mqtt.step()
        assert mqtt.state == CONNECTING
    assert bytes(sock.sent) == expected
    assert not mqtt.out


def test_partial_reads_complete_the_packet():
    mqtt, sock, _ = client()
    mqtt.connect()
    for chunk in (b"\x20", None, b"\x02", None, b"\x00"):
        sock.incoming = [chunk]
        mqtt.step()
        assert mqtt.state == CONNECTING
    sock.incoming = [b"\x00"]
    mqtt.step()
    assert mqtt.state == UP


def test_eagain_and_etimedout_mid_packet_are_waits_not_losses():
    mqtt, sock, _ = connected()
    sock.writes = [4, oserror(errno.EAGAIN), oserror(errno.ETIMEDOUT), 3]
    mqtt.publish("fl/v1/node-1/data", b"0123456789")
    assert mqtt.state == UP
    for _ in range(3):
        mqtt.step()
    assert packets(sock.sent) == [(0x32, b"\x00\x11fl/v1/node-1/data\x00\x010123456789")]
    for script in ([b"\x40", oserror(errno.EAGAIN)], [b"\x02\x00", oserror(errno.ETIMEDOUT)]):
        sock.incoming = script
        mqtt.step()
        assert mqtt.inflight == 1
    sock.incoming = [b"\x01"]
    mqtt.step()
    assert mqtt.inflight == 0
    assert mqtt.state == UP


def test_esp32_busy_codes_118_and_119_mid_packet_are_waits_not_losses():
    # Some ESP32 builds raise 118/119 (EHOSTUNREACH/EINPROGRESS in newlib's numbering) from a
    # non-blocking TLS socket that has nothing yet; mqtt_as treats them as EAGAIN, and so does the node.
    mqtt, sock, _ = connected()
    sock.writes = [3, oserror(118), oserror(119), 5]
    mqtt.publish("fl/v1/node-1/data", b"0123456789")
    for _ in range(3):
        mqtt.step()
    assert packets(sock.sent) == [(0x32, b"\x00\x11fl/v1/node-1/data\x00\x010123456789")]
    sock.incoming = [b"\x40\x02", oserror(119), b"\x00", oserror(118), b"\x01"]
    for _ in range(3):
        mqtt.step()
    assert (mqtt.state, mqtt.inflight) == (UP, 0)


def test_the_brokers_name_is_resolved_again_at_every_attempt():
    mqtt, sock, _ = client()
    asked = []
    resolve = mqtt.net.getaddrinfo

    def getaddrinfo(host, port, family, kind):
        asked.append(host)
        return resolve(host, port, family, kind)

    mqtt.net.getaddrinfo = getaddrinfo
    for _ in range(3):
        mqtt.connect()
        mqtt.close()
    assert asked == ["broker.example"] * 3


def test_a_reset_mid_packet_is_a_lost_connection():
    mqtt, sock, _ = connected()
    sock.incoming = [b"\x40", oserror(errno.ECONNRESET)]
    exc = raises(MQTTError, mqtt.step)
    assert str(exc).startswith("connection lost")
    assert mqtt.state == DOWN
    assert sock.closed
    mqtt, sock, _ = connected()
    mqtt.publish("t", b"x")
    sock.writes = [oserror(errno.ENOTCONN)]
    mqtt.out.append(b"\xc0\x00")
    raises(MQTTError, mqtt.step)
    assert mqtt.state == DOWN


def test_closed_by_the_broker():
    mqtt, sock, _ = connected()
    sock.incoming = [b""]
    exc = raises(MQTTError, mqtt.step)
    assert str(exc) == "connection closed by the broker"
    assert mqtt.state == DOWN


def test_puback_for_another_packet_leaves_the_publish_in_flight():
    mqtt, sock, _ = connected()
    mqtt.publish("fl/v1/node-1/data", b"batch")
    assert mqtt.inflight == 1
    sock.incoming = [puback(2), puback(0x0101)]
    mqtt.step()
    assert mqtt.inflight == 1
    sock.incoming = [puback(1)]
    mqtt.step()
    assert mqtt.inflight == 0
    mqtt.publish("fl/v1/node-1/data", b"batch")
    assert mqtt.inflight == 2


def test_packet_ids_wrap_and_skip_zero():
    mqtt, sock, _ = connected()
    mqtt._pid = 65534
    for expected in (65535, 1):
        mqtt.publish("t", b"x")
        assert mqtt.inflight == expected
        sock.incoming.append(puback(expected))
        mqtt.step()
        assert mqtt.inflight == 0


def test_qos0_and_retained_publish_bytes():
    mqtt, sock, _ = connected()
    mqtt.publish("a/b", b"hi", qos=0, retain=True)
    assert mqtt.inflight == 0
    assert packets(sock.sent) == [(0x31, b"\x00\x03a/bhi")]


def test_no_puback_within_the_timeout():
    mqtt, sock, clock = connected(timeout_ms=5000)
    mqtt.publish("t", b"x")
    clock.now += 5000
    sock.incoming.append(PINGRESP)  # the broker answers pings, but never this publish
    mqtt.step()
    clock.now += 1
    exc = raises(MQTTError, mqtt.step)
    assert str(exc) == "no PUBACK for packet 1"
    assert mqtt.state == DOWN


def test_no_connack_within_the_timeout():
    mqtt, sock, clock = client(timeout_ms=5000)
    mqtt.connect()
    clock.now += 5000
    mqtt.step()
    clock.now += 1
    exc = raises(MQTTError, mqtt.step)
    assert str(exc) == "no CONNACK from broker.example:8883 within 5000 ms"
    assert sock.closed


def test_keepalive_pings_when_idle_and_a_silent_broker_is_a_lost_connection():
    mqtt, sock, clock = connected(keepalive_s=30)
    clock.now += 14999
    mqtt.step()
    assert not sock.sent
    clock.now += 1
    mqtt.step()
    assert packets(sock.sent) == [(0xC0, b"")]
    mqtt.step()
    assert len(packets(sock.sent)) == 1  # one ping per half keep-alive
    sock.incoming.append(PINGRESP)
    mqtt.step()
    clock.now += 15000
    mqtt.step()
    assert len(packets(sock.sent)) == 2
    # Pings go out, nothing comes back: silent past one and a half keep-alives since the last byte.
    clock.now += 30000
    mqtt.step()
    clock.now += 1
    exc = raises(MQTTError, mqtt.step)
    assert str(exc) == "the broker went silent (keep-alive)"
    assert mqtt.state == DOWN


def test_unexpected_packet_is_refused():
    mqtt, sock, _ = connected()
    sock.incoming.append(b"\xb0\x02\x00\x01")  # an UNSUBACK: the client never unsubscribes
    exc = raises(MQTTError, mqtt.step)
    assert "unexpected packet" in str(exc)
    mqtt, sock, _ = connected()
    sock.incoming.append(b"\x40\x03\x00\x01\x00")  # a PUBACK of the wrong length
    raises(MQTTError, mqtt.step)
    mqtt, sock, _ = connected()
    sock.incoming.append(b"\x34\x05\x00\x01t\x00\x01")  # QoS 2: never asked for
    raises(MQTTError, mqtt.step)
    mqtt, sock, _ = connected()
    sock.incoming.append(b"\x30\xff\xff\xff\xff\x7f")  # a remaining length of five bytes
    exc = raises(MQTTError, mqtt.step)
    assert "malformed packet length" in str(exc)


def test_publish_needs_a_connection_and_disconnect_says_goodbye():
    mqtt, sock, _ = client()
    raises(MQTTError, mqtt.publish, "t", b"x")
    mqtt, sock, _ = connected()
    mqtt.disconnect()
    assert packets(sock.sent) == [(0xE0, b"")]
    assert sock.closed
    assert mqtt.state == DOWN
    mqtt.step()  # a closed client does nothing


def publish_packet(topic, payload, qos=0, pid=1):
    body = bytearray(bytes((len(topic) >> 8, len(topic) & 0xFF)) + topic)
    if qos:
        body += bytes((pid >> 8, pid & 0xFF))
    body += payload
    header = bytearray((0x30 | qos << 1,))
    length = len(body)
    while True:
        header.append(length & 0x7F | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            return bytes(header + body)


def listening(**options):
    """A connected client that records what arrives on its subscription."""
    mqtt, sock, clock = connected(**options)
    got = []
    mqtt.on_message = lambda topic, payload: got.append((bytes(topic), bytes(payload)))
    return mqtt, sock, clock, got


def test_subscribe_sends_subscribe_at_qos0_and_waits_for_its_suback():
    mqtt, sock, _ = connected()
    mqtt.subscribe("fl/v1/node-1/ack")
    assert mqtt.inflight == 1
    assert packets(sock.sent) == [(0x82, b"\x00\x01\x00\x10fl/v1/node-1/ack\x00")]
    for chunk in (b"\x90", b"\x03\x00", b"\x01"):
        sock.incoming.append(chunk)
        mqtt.step()
        assert mqtt.inflight == 1
    sock.incoming.append(b"\x00")
    mqtt.step()
    assert (mqtt.inflight, mqtt.granted) == (0, 0)
    mqtt.publish("t", b"x")
    assert mqtt.inflight == 2  # packet ids are shared: never two in flight with one id


def test_a_refused_subscription_is_reported_not_a_lost_connection():
    mqtt, sock, _ = connected()
    mqtt.subscribe("fl/v1/node-1/ack")
    sock.incoming.append(b"\x90\x03\x00\x01\x80")
    mqtt.step()
    assert (mqtt.inflight, mqtt.granted, mqtt.state) == (0, 0x80, UP)


def test_no_suback_within_the_timeout():
    mqtt, sock, clock = connected(timeout_ms=5000)
    mqtt.subscribe("a")
    clock.now += 5001
    exc = raises(MQTTError, mqtt.step)
    assert str(exc) == "no SUBACK for packet 1"


def test_a_publish_between_other_packets_split_at_every_byte():
    ack = publish_packet(b"fl/v1/node-1/ack", b'{"v":1,"stored":[7]}')
    stream = puback(1) + ack + PINGRESP + ack + puback(1)
    for cut in range(len(stream) + 1):
        mqtt, sock, _, got = listening()
        mqtt.publish("t", b"x")
        sock.incoming = [part for part in (stream[:cut], None, stream[cut:]) if part != b""]
        for _ in range(4):
            mqtt.step()
        assert got == [(b"fl/v1/node-1/ack", b'{"v":1,"stored":[7]}')] * 2, cut
        assert mqtt.inflight == 0
        assert mqtt.state == UP
    # One byte per read, as a slow TLS record might give them.
    mqtt, sock, _, got = listening()
    sock.incoming = [bytes((b,)) for b in stream]
    for _ in range(len(stream) + 1):
        mqtt.step()
    assert len(got) == 2


def test_a_publish_with_a_long_remaining_length():
    payload = b'{"v":1,"stored":[' + b",".join(str(1048576 + i).encode() for i in range(200)) + b"]}"
    mqtt, sock, _, got = listening()
    mqtt.max_incoming = 4096
    packet = publish_packet(b"fl/v1/node-1/ack", payload)
    assert packet[1] & 0x80  # two bytes of remaining length
    sock.incoming = [packet]
    mqtt.step()
    assert got == [(b"fl/v1/node-1/ack", payload)]


def test_an_oversize_publish_is_read_past_and_counted_and_the_next_packet_counts():
    mqtt, sock, _, got = listening()
    mqtt.max_incoming = 100
    mqtt.publish("t", b"x")
    big = publish_packet(b"fl/v1/node-1/ack", b"[" * 5000)
    small = publish_packet(b"fl/v1/node-1/ack", b'{"v":1}')
    sock.incoming = [big[:700], None, big[700:] + small, puback(1)]
    for _ in range(3):
        mqtt.step()
    assert mqtt.skipped == 1
    assert got == [(b"fl/v1/node-1/ack", b'{"v":1}')]
    assert mqtt.inflight == 0
    assert mqtt.state == UP


def test_a_qos1_publish_is_acknowledged():
    mqtt, sock, _, got = listening()
    sock.incoming = [publish_packet(b"a", b"hi", qos=1, pid=0x1234)]
    mqtt.step()
    mqtt.step()
    assert got == [(b"a", b"hi")]
    assert packets(sock.sent) == [(0x40, b"\x12\x34")]


def test_a_publish_whose_topic_overruns_it_is_malformed():
    mqtt, sock, _, got = listening()
    sock.incoming = [b"\x30\x04\x00\x09ab"]
    exc = raises(MQTTError, mqtt.step)
    assert "malformed PUBLISH" in str(exc)
    assert got == []
