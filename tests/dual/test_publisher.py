# The node's publish state machine (firmware/app.py: Publisher) against a fake client, board and clock, on
# both interpreters: backoff doubling to its cap, the retained status announced once per connection,
# the outbox head removed only after its PUBACK, and resent after a lost connection.
from firmware.app import Publisher
from firmware.errors import MQTTError
from firmware.mqtt import CONNECTING, DOWN, UP
from firmware.outbox import Outbox
from tests.dual.test_mqtt import Clock

DATA = "fl/v1/node-1/data"
STATUS = "fl/v1/node-1/status"


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

    def ack(self):
        self.inflight = 0

    def close(self):
        self.state = DOWN
        self.inflight = 0
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


def status(online):
    return b'{"online":true}' if online else b'{"online":false}'


def publisher(capacity=8):
    clock = Clock()
    client = Client(clock)
    outbox = Outbox(capacity, 4096)
    board = Board()
    pub = Publisher(client, outbox, board, {"ssid": "field"}, DATA, STATUS, status)
    return pub, client, outbox, board, clock


def announced():
    """A publisher connected, its online status acknowledged."""
    pub, client, outbox, board, clock = publisher()
    pub.step()
    client.ack()
    pub.step()
    client.published = []
    return pub, client, outbox, board, clock


def test_connects_and_announces_the_retained_status_first():
    pub, client, outbox, board, _ = publisher()
    outbox.push(b"batch-1")
    pub.step()
    assert board.asked == [{"ssid": "field"}]
    assert client.published == [(STATUS, b'{"online":true}', 1, True)]
    pub.step()  # the status is in flight: nothing else goes
    assert len(client.published) == 1
    client.ack()
    pub.step()
    assert client.published[1] == (DATA, b"batch-1", 1, False)


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
    assert waits == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000], waits
    assert pub.reconnects == 10
    client.refuse = 0
    clock.now += 30000
    pub.step()
    assert client.state == UP
    assert pub.backoff_ms == 30000  # the status is not yet acknowledged: not yet a connection
    client.ack()
    pub.step()
    assert pub.backoff_ms == 500


def test_announces_once_per_connection():
    pub, client, outbox, _, clock = announced()
    for i in range(3):
        outbox.push(b"batch-" + str(i).encode())
    for _ in range(3):
        pub.step()
        client.ack()
    pub.step()
    assert [p[0] for p in client.published] == [DATA, DATA, DATA]
    client.lose = True
    pub.step()
    clock.now += 500
    outbox.push(b"batch-3")
    pub.step()
    assert client.published[-1] == (STATUS, b'{"online":true}', 1, True)
    client.ack()
    pub.step()
    assert client.published[-1] == (DATA, b"batch-3", 1, False)


def test_the_head_leaves_the_outbox_only_after_its_puback():
    pub, client, outbox, _, _ = announced()
    outbox.push(b"first")
    outbox.push(b"second")
    pub.step()
    assert client.published == [(DATA, b"first", 1, False)]
    for _ in range(5):
        pub.step()
    assert len(outbox) == 2
    assert outbox.peek() == b"first"
    assert len(client.published) == 1
    client.ack()
    pub.step()
    assert len(outbox) == 1
    assert outbox.sent == 1
    assert client.published[-1] == (DATA, b"second", 1, False)
    client.ack()
    pub.step()
    assert len(outbox) == 0
    assert pub.sending is None


def test_a_lost_connection_resends_the_batch_in_flight():
    pub, client, outbox, _, clock = announced()
    outbox.push(b"in-flight")
    pub.step()
    assert pub.sending == b"in-flight"
    client.lose = True
    pub.step()
    assert client.state == DOWN
    assert pub.sending is None
    assert pub.reconnects == 1
    assert outbox.peek() == b"in-flight"
    clock.now += 499
    pub.step()
    assert client.connects == 1  # still backing off
    clock.now += 1
    pub.step()
    assert client.connects == 2
    client.ack()  # the status
    pub.step()
    assert client.published[-1] == (DATA, b"in-flight", 1, False)
    client.ack()
    pub.step()
    assert len(outbox) == 0
    assert outbox.sent == 1


def test_a_batch_dropped_while_in_flight_is_not_popped_for_it():
    pub, client, outbox, _, _ = publisher(capacity=1)
    pub.step()
    client.ack()
    pub.step()
    outbox.push(b"old")
    pub.step()
    outbox.push(b"new")  # the ring of one drops "old", whose PUBACK is still to come
    assert outbox.dropped == 1
    client.ack()
    pub.step()
    assert outbox.peek() == b"new"
    assert client.published[-1] == (DATA, b"new", 1, False)


def test_no_network_is_a_failed_attempt():
    pub, client, _, board, clock = publisher()
    board.network = False
    pub.step()
    assert client.connects == 0
    assert pub.reconnects == 1
    clock.now += 500
    board.network = True
    pub.step()
    assert client.connects == 1


def test_stop_announces_offline_and_disconnects():
    pub, client, _, _, _ = announced()
    waits = []

    def wait(ms):
        waits.append(ms)
        client.ack()

    pub.stop(wait)
    assert client.published == [(STATUS, b'{"online":false}', 1, True)]
    assert waits == [20]
    assert client.state == DOWN
    pub, client, _, _, _ = publisher()
    pub.stop(wait)  # never connected: nothing to say
    assert client.published == []
