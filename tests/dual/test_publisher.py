# The node's publish state machine (firmware/app.py: Publisher) against a fake client, board and clock and
# a real spool in a folder of its own, on both interpreters: backoff doubling to its cap, the ack
# subscription and the retained status once per connection, a batch kept after its PUBACK until the
# service's ack, sent again after a lost connection or when no ack comes, refused ones dropped and
# counted, bad acks counted.
from firmware import seldom
from firmware.assemble import publisher as make_publisher
from firmware.config import boot_spool, new_spool
from firmware.errors import MQTTError
from firmware.mqtt import CONNECTING, DOWN, UP
from tests.dual.test_mqtt import Clock
from tests.dual.test_node_spool import folder

DATA = "fl/v1/node-1/data"
STATUS = "fl/v1/node-1/status"
ACK = "fl/v1/node-1/ack"


class Client:
    """The MQTTClient's surface the publisher uses. A connect() reaches UP at the next step() when
    `accept` is set; publish() records and puts the packet in flight until ack()."""

    host = "broker.example"
    port = 8883

    def __init__(self, clock):
        self.clock = clock  # the publisher goes by its client's clock
        self.state = DOWN
        self.inflight = 0
        self.accept = True
        self.refuse = 0  # connects still to fail
        self.lose = False  # the next step() finds the connection lost
        self.connects = 0
        self.closes = 0
        self.published = []
        self.subscribed = []
        self.granted = None
        self.grant = 0  # the SUBACK's code
        self.skipped = 0
        self._pid = 0

    def connect(self, clean_session=True):
        self.connects += 1
        if self.refuse:
            self.refuse -= 1
            raise MQTTError("cannot connect")
        self.state = CONNECTING

    def step(self):
        if self.lose:
            self.lose = False
            self.close()
            raise MQTTError("connection lost")
        if self.state == CONNECTING and self.accept:
            self.state = UP

    def publish(self, topic, payload, qos=1, retain=False):
        assert self.state == UP and not self.inflight
        self.published.append((topic, payload, qos, retain))
        self._pid += 1
        self.inflight = self._pid

    def subscribe(self, topic):
        assert self.state == UP and not self.inflight
        self.subscribed.append(topic)
        self._pid += 1
        self.inflight = self._pid

    def ack(self):
        if self.subscribed and self.granted is None:
            self.granted = self.grant
        self.inflight = 0

    def close(self):
        self.state = DOWN
        self.inflight = 0
        self.granted = None
        self.closes += 1

    def disconnect(self):
        self.close()


class Board:
    def __init__(self):
        self.network = True
        self.asked = []

    def connect_network(self, wifi):
        self.asked.append(wifi)
        return self.network

    def online(self):
        return self.network


def status(online):
    return b'{"online":true}' if online else b'{"online":false}'


def publisher(window=8):
    clock = Clock()
    client = Client(clock)
    spool = new_spool(folder(), 100000, 4096, window, 1000, clock)
    boot_spool(spool)
    board = Board()
    pub = make_publisher(client, spool, board, {"ssid": "field"}, DATA, STATUS, ACK, status)
    return pub, client, spool, board, clock


def add(spool, payload):
    """Append a batch as the node does; returns its sequence."""
    seq = spool.seq + spool.writes
    spool.append(payload, seq)
    return seq


def announced(**options):
    """A publisher connected, subscribed, its online status acknowledged."""
    pub, client, spool, board, clock = publisher(**options)
    pub.step()
    client.ack()  # the SUBACK
    pub.step()
    client.ack()  # the status's PUBACK
    pub.step()
    client.published = []
    return pub, client, spool, board, clock


def ack(pub, stored=(), refused=()):
    text = '{"v":1,"stored":[' + ",".join(str(s) for s in stored) + '],"refused":['
    pub.on_message(ACK.encode(), (text + ",".join(str(s) for s in refused) + "]}").encode())


def test_subscribes_then_announces_the_retained_status_then_sends():
    pub, client, spool, board, _ = publisher()
    add(spool, b"batch-1")
    pub.step()
    assert board.asked == [{"ssid": "field"}]
    assert client.subscribed == [ACK]
    assert client.published == []
    pub.step()  # the subscription is in flight: nothing else goes
    assert client.published == []
    client.ack()
    pub.step()
    assert client.published == [(STATUS, b'{"online":true}', 1, True)]
    client.ack()
    pub.step()
    assert client.published[1] == (DATA, b"batch-1", 1, False)


def test_a_refused_subscription_makes_the_brokers_puback_do():
    # A broker whose ACL predates acks: no ack can come, so the PUBACK ends a batch's stay, as before.
    pub, client, spool, _, _ = publisher()
    client.grant = 0x80
    add(spool, b"batch-1")
    for _ in range(3):
        pub.step()
        client.ack()
    pub.step()
    assert client.published[-1] == (DATA, b"batch-1", 1, False)
    assert client.state == UP
    client.ack()
    pub.step()
    assert spool.queued == 0


def test_backoff_doubles_to_its_cap_and_resets_once_connected():
    pub, client, _, _, clock = publisher()
    client.refuse = 10
    attempts = []
    while len(attempts) < 10:  # a step every 10 ms: no attempt before its backoff has passed
        before = client.connects
        pub.step()
        if client.connects != before:
            attempts.append(clock.now)
        clock.now += 10
    waits = [attempts[i + 1] - attempts[i] for i in range(9)]
    # With jitter: each wait in [backoff / 2, backoff] (a step every 10 ms: up to 10 ms later).
    for wait, backoff in zip(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]):
        assert backoff // 2 <= wait <= backoff + 10, waits
    assert pub.reconnects == 10
    client.refuse = 0
    clock.now += 30000
    pub.step()
    assert client.state == UP
    assert pub.backoff_ms == 30000  # the status is not yet acknowledged: not yet a connection
    client.ack()  # the subscription
    pub.step()
    assert pub.backoff_ms == 30000
    client.ack()  # the status
    pub.step()
    assert pub.backoff_ms == 500


def test_announces_and_subscribes_once_per_connection():
    pub, client, spool, _, clock = announced()
    seqs = [add(spool, b"batch-" + str(i).encode()) for i in range(3)]
    for _ in range(3):
        pub.step()
        client.ack()
    pub.step()
    assert [p[0] for p in client.published] == [DATA, DATA, DATA]
    ack(pub, seqs)
    client.lose = True
    pub.step()
    clock.now += 500
    add(spool, b"batch-3")
    pub.step()
    assert client.subscribed == [ACK, ACK]
    client.ack()
    pub.step()
    assert client.published[-1] == (STATUS, b'{"online":true}', 1, True)
    client.ack()
    pub.step()
    assert client.published[-1] == (DATA, b"batch-3", 1, False)


def test_a_batch_stays_after_its_puback_until_the_services_ack():
    pub, client, spool, _, _ = announced()
    first = add(spool, b"first")
    second = add(spool, b"second")
    pub.step()
    assert client.published == [(DATA, b"first", 1, False)]
    for _ in range(5):
        pub.step()
    assert len(client.published) == 1  # one packet in flight
    client.ack()
    pub.step()
    assert client.published[-1] == (DATA, b"second", 1, False)
    client.ack()
    pub.step()
    assert spool.queued == 2  # the broker has both; the service neither
    assert pub.sending is None
    ack(pub, [second])
    assert spool.queued == 1
    ack(pub, [first])
    assert spool.queued == 0
    pub.step()
    assert len(client.published) == 2  # nothing is sent twice


def test_a_lost_connection_sends_the_unacknowledged_batches_again():
    pub, client, spool, _, clock = announced()
    first = add(spool, b"acked-by-the-broker")
    pub.step()
    client.ack()
    pub.step()
    add(spool, b"in-flight")
    pub.step()
    assert pub.sending == b"in-flight"
    client.lose = True
    pub.step()
    assert (client.state, pub.sending, pub.reconnects) == (DOWN, None, 1)
    clock.now += 500
    for _ in range(3):  # connect and subscribe, announce, and the first batch
        pub.step()
        client.ack()
    pub.step()
    assert [p[1] for p in client.published[-3:]] == [b'{"online":true}', b"acked-by-the-broker", b"in-flight"]
    client.ack()
    pub.step()
    ack(pub, [first, first + 1])
    assert spool.queued == 0
    assert spool.resent == 1


def test_no_ack_sends_again_after_the_timeout_with_backoff():
    pub, client, spool, _, clock = announced()
    add(spool, b"batch")
    pub.step()
    client.ack()
    sent = []
    for _ in range(80):
        clock.now += 100
        pub.step()
        if client.inflight:
            sent.append(clock.now)
            client.ack()
    # The PUBACK came at 100,100 (the step after the publish): no ack within 1 s, then 2 s, then 4 s
    # of each PUBACK sends it again.
    assert sent == [101200, 103400, 107600], sent
    assert spool.resent == 3


def test_refused_batches_are_dropped_and_counted_and_bad_acks_counted():
    pub, client, spool, _, _ = announced()
    seq = add(spool, b"too-old")
    pub.step()
    client.ack()
    pub.step()
    ack(pub, refused=[seq])
    assert (spool.queued, spool.refused) == (0, 1)
    for payload in (b"{", b'{"v":2,"stored":[1]}', b'{"v":1,"stored":"x"}'):
        pub.on_message(ACK.encode(), payload)
    assert pub.bad_acks == 3
    pub.on_message(b"fl/v1/node-1/cmd", b"{")  # not the ack topic: not an ack
    assert pub.bad_acks == 3


def test_the_window_bounds_what_waits_for_the_service():
    pub, client, spool, _, _ = announced(window=2)
    seqs = [add(spool, b"b" + str(i).encode()) for i in range(4)]
    for _ in range(6):
        pub.step()
        client.ack()
    assert [p[1] for p in client.published] == [b"b0", b"b1"]
    ack(pub, seqs[:1])
    for _ in range(3):
        pub.step()
        client.ack()
    assert [p[1] for p in client.published] == [b"b0", b"b1", b"b2"]


def test_no_network_is_asked_again_each_second_without_backoff():
    pub, client, _, board, clock = publisher()
    board.network = False  # joining, or no network in the air
    for _ in range(5):
        pub.step()
        clock.now += 999
        pub.step()  # not asked again within the second
        clock.now += 1
    assert (len(board.asked), client.connects, pub.reconnects, pub.backoff_ms) == (5, 0, 0, 500)
    board.network = True
    pub.step()
    assert client.connects == 1


def test_stop_announces_offline_and_disconnects():
    pub, client, _, _, _ = announced()
    waits = []

    def wait(ms):
        waits.append(ms)
        client.ack()

    seldom.stop(pub, wait)
    assert client.published == [(STATUS, b'{"online":false}', 1, True)]
    assert waits == [20]
    assert client.state == DOWN
    pub, client, _, _, _ = publisher()
    seldom.stop(pub, wait)  # never connected: nothing to say
    assert client.published == []


def relative(spool, t0, seq=None):
    """A batch made before the clock was known (t0 = -1 - ms since boot), appended as the node does."""
    seq = spool.seq + spool.writes if seq is None else seq
    payload = b'{"v":1,"seq":' + str(seq).encode() + b',"t0":' + str(t0).encode() + b',"s":["t"],"r":[[0,0,1.5]]}'
    spool.append(payload, seq)
    return seq, payload


def test_a_batch_made_before_the_clock_waits_for_it_then_goes_with_its_true_time():
    pub, client, spool, _, _ = announced()
    seq, payload = relative(spool, -1001)  # 1000 ms after boot
    for _ in range(3):
        pub.step()
    assert client.published == []  # this boot's clock is not known yet: it waits
    spool.anchors[spool.seq >> 20] = 1795000000000  # the node learned the time (Node._enqueue)
    pub.step()
    sent = b'{"v":1,"seq":' + str(seq).encode() + b',"t0":1795000001000,"s":["t"],"r":[[0,0,1.5]]}'
    assert client.published == [(DATA, sent, 1, False)]
    client.ack()
    pub.step()
    ack(pub, [seq])
    assert spool.queued == 0


def test_a_batch_of_an_earlier_boot_that_never_knew_the_time_is_refused_and_counted():
    pub, client, spool, _, _ = announced()
    old = (spool.seq >> 20) - 1
    relative(spool, -5001, seq=old << 20 | 3)  # left by a boot that never had the clock
    spool.anchors[old - 1] = 1795000000000  # another earlier boot's anchor: not this batch's
    later = b'{"v":1,"seq":' + str(spool.seq).encode() + b',"t0":1795000009000,"s":["t"],"r":[]}'
    spool.append(later, spool.seq)
    pub.step()
    pub.step()
    assert pub.unsynced == 1
    assert [p[1] for p in client.published] == [later]
    assert spool.queued == 1


def test_a_batch_of_an_earlier_boot_goes_with_that_boots_anchor():
    pub, client, spool, _, _ = announced()
    old = (spool.seq >> 20) - 1
    relative(spool, -1, seq=old << 20)
    spool.anchors[old] = 1795000000000  # read back from flash at boot (config.boot_spool)
    pub.step()
    assert client.published[0][1].startswith(b'{"v":1,"seq":' + str(old << 20).encode() + b',"t0":1795000000000,')


def test_a_status_goes_when_the_node_asks_and_the_link_is_free():
    pub, client, spool, _, _ = announced()
    add(spool, b"batch")
    pub.status_due = True
    pub.step()
    assert client.published == [(STATUS, b'{"online":true}', 1, True)]
    client.ack()
    pub.step()
    assert client.published[-1] == (DATA, b"batch", 1, False)
    assert pub.reconnects == 0


def test_a_lost_network_while_connected_means_reconnecting():
    pub, client, _, board, clock = announced()
    board.network = False  # Wi-Fi lost: the board says so before the socket does
    pub.step()
    assert (client.state, pub.reconnects) == (DOWN, 1)
    clock.now += 1000
    board.network = True
    pub.step()
    assert client.connects == 2
