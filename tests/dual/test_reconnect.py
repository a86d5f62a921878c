# Reconnecting as a node does it (issue 10, item 4; docs/reliability.md, "A node that heals itself"):
# the node's Publisher (firmware/app.py) with the real MQTT client (firmware/mqtt.py) over a scripted
# socket module and a fake clock, on both interpreters. A first connection that fails (the broker's
# name does not resolve, then the broker refuses) is retried without end, each wait drawn in
# [backoff / 2, backoff] with the backoff doubling from 0.5 s to 30 s, the name resolved again at
# every attempt; the connection that finally succeeds goes to the address the last resolution gave.
import errno

from firmware.assemble import make_client
from firmware.assemble import publisher as make_publisher
from firmware.config import boot_spool, new_spool
from firmware.mqtt import DOWN, UP
from tests.dual.test_mqtt import CONNACK, Clock, Socket
from tests.dual.test_node_spool import folder
from tests.dual.test_publisher import ACK, DATA, STATUS, Board, status

BACKOFFS = [500, 1000, 2000, 4000, 8000, 16000, 30000]


class Net:
    """The socket module's part the client uses. The name fails to resolve `unresolved` times; after
    that each resolution gives the next address (the broker moves), and a broker that refuses
    `refused` more connections before one is accepted."""

    SOCK_STREAM = 1

    def __init__(self, clock, unresolved, refused):
        self.clock = clock
        self.unresolved = unresolved
        self.refused = refused
        self.asked = []  # (clock time, host) of every resolution
        self.sockets = []

    def getaddrinfo(self, host, port, family, kind):
        self.asked.append((self.clock.now, host))
        if len(self.asked) <= self.unresolved:
            raise OSError(-202)  # lwIP: the name did not resolve
        return [(2, kind, 0, "", ("10.0.0." + str(len(self.asked)), port))]

    def socket(self, family, kind, proto):
        refuse = len(self.sockets) < self.refused
        sock = Socket(OSError(errno.ECONNREFUSED, "refused") if refuse else OSError(errno.EINPROGRESS, "in progress"))
        if not refuse:
            sock.incoming.append(CONNACK)
        self.sockets.append(sock)
        return sock


def rig(unresolved, refused):
    clock = Clock()
    client = make_client("node-1", "broker.example", 8883, keepalive_s=30, timeout_ms=5000)
    net = Net(clock, unresolved, refused)
    client.net = net
    client.clock = clock
    spool = new_spool(folder(), 100000, 4096, 8, 1000, clock)
    boot_spool(spool)
    pub = make_publisher(client, spool, Board(), {"ssid": "field"}, DATA, STATUS, ACK, status)
    return pub, client, net, clock


def test_a_first_connection_that_fails_is_retried_with_backoff_jitter_and_the_name_resolved_each_time():
    # 20 attempts without a name, then 5 refused, then the broker answers: 26 attempts over about
    # nine minutes of the node's time, a step of the node's loop every 10 ms.
    pub, client, net, clock = rig(20, 5)
    start = clock.now
    while client.state != UP and clock.now - start < 3600000:
        pub.step()
        clock.now += 10
    assert client.state == UP
    attempts = [t for t, _ in net.asked]
    assert len(attempts) == 26  # every attempt resolved the name again, the failed ones included
    assert [host for _, host in net.asked] == ["broker.example"] * 26
    assert pub.reconnects == 25
    assert attempts[0] == start  # the first attempt at once
    waits = [attempts[i + 1] - attempts[i] for i in range(25)]
    backoffs = BACKOFFS + [30000] * 18
    for wait, backoff in zip(waits, backoffs):
        # With jitter: in [backoff / 2, backoff]; a step every 10 ms makes an attempt up to 10 ms late.
        assert backoff // 2 <= wait <= backoff + 10, (wait, backoff, waits)
    # The jitter draws each wait afresh (18 draws from 15,001 values at the cap).
    assert len(set(waits[6:])) > 1, waits
    # The 21st attempt resolved the name and was refused; the last went to the address it was given.
    assert [sock.address for sock in net.sockets] == [("10.0.0." + str(n), 8883) for n in range(21, 27)]
    assert [sock.closed for sock in net.sockets] == [True] * 5 + [False]


def test_a_lost_connection_is_retried_from_the_first_backoff_with_the_name_resolved_again():
    pub, client, net, clock = rig(0, 0)
    pub.step()
    pub.step()
    assert client.state == UP
    # The subscription, then the announcement, acknowledged: the connection has announced itself.
    client.sock.incoming.append(b"\x90\x03" + bytes((0, client.inflight, 0)))
    pub.step()
    pub.step()
    client.sock.incoming.append(bytes((0x40, 2, 0, client.inflight)))
    pub.step()
    pub.step()
    assert pub.backoff_ms == 500 and not client.inflight
    client.sock.incoming.append(b"")  # the broker closes the connection
    net.unresolved = len(net.asked) + 2  # and its name fails twice
    pub.step()
    assert client.state == DOWN and pub.reconnects == 1
    lost = clock.now
    while client.state != UP and clock.now - lost < 60000:
        pub.step()
        clock.now += 10
    assert client.state == UP
    attempts = [t for t, _ in net.asked[1:]]
    assert len(attempts) == 3
    waits = [attempts[0] - lost, attempts[1] - attempts[0], attempts[2] - attempts[1]]
    for wait, backoff in zip(waits, [500, 1000, 2000]):
        assert backoff // 2 <= wait <= backoff + 10, waits
