# The publish state machine: keep a connection to the broker (reconnecting with exponential backoff),
# announce the retained "online" status once per connection, then send the outbox's oldest batch at
# QoS 1 and remove it only when the broker's PUBACK for it came. A batch in flight when the connection
# is lost stays in the outbox and goes again after the reconnect. One step per turn of the node's
# loop; nothing waits. The client, the outbox, the board and the clock are its arguments, so it is
# tested without sensors or sockets (tests/dual/test_publisher.py).
from micropython import const

from firmware.mqtt import DOWN, UP

_FIRST_BACKOFF_MS = const(500)
_MAX_BACKOFF_MS = const(30000)
_ONLINE = "online"  # marks the status publish in flight, as opposed to a batch


class Publisher:
    def __init__(self, client, outbox, board, wifi, data_topic, status_topic, status, clock):
        # board: connect_network(wifi), True once the network is up; status(online): the status
        # payload; clock: ticks_ms(), ticks_diff(), ticks_add() as the time module has them.
        self.client = client
        self.outbox = outbox
        self.board = board
        self.wifi = wifi
        self.data_topic = data_topic
        self.status_topic = status_topic
        self.status = status
        self.clock = clock
        self.reconnects = 0
        self.sending = None  # what the publish in flight carries: _ONLINE, a batch of the outbox, or None
        self._announced = False  # the retained "online" status went out on this connection
        self._retry_at = 0
        self.backoff_ms = _FIRST_BACKOFF_MS  # the wait before the next reconnect if this one fails

    def step(self):
        """One step of the connection: (re)connect when the backoff allows, announce, publish the
        outbox's head, pop it once acknowledged. Never raises: a failure schedules a reconnect."""
        client = self.client
        clock = self.clock
        try:
            if client.state == DOWN:
                if clock.ticks_diff(clock.ticks_ms(), self._retry_at) < 0:
                    return
                if not self.board.connect_network(self.wifi):
                    raise OSError("no network")
                self._announced = False
                self.sending = None
                client.connect(True)
            client.step()
            if client.state != UP or client.inflight:
                return
            sent = self.sending
            if sent is not None:  # acknowledged by the broker
                self.sending = None
                if sent is _ONLINE:
                    self.backoff_ms = _FIRST_BACKOFF_MS
                    print("connected to", client.host, client.port)
                elif self.outbox.peek() is sent:
                    # Pop only the batch the broker has: if the ring dropped it meanwhile, the head is
                    # another batch that still waits its turn.
                    self.outbox.pop()
            if not self._announced:
                self._announced = True
                self.sending = _ONLINE
                client.publish(self.status_topic, self.status(True), 1, True)
            elif len(self.outbox):
                self.sending = self.outbox.peek()
                client.publish(self.data_topic, self.sending, 1)
        except Exception as exc:  # MQTTError, a Wi-Fi or config problem: retry, never stop
            # A batch in flight stays in the outbox and goes again after the reconnect.
            client.close()
            self.sending = None
            self.reconnects += 1
            print("mqtt:", exc, "; retrying in", self.backoff_ms, "ms")
            self._retry_at = clock.ticks_add(clock.ticks_ms(), self.backoff_ms)
            self.backoff_ms = min(self.backoff_ms * 2, _MAX_BACKOFF_MS)

    def stop(self, wait):
        """Announce "offline" (retained), wait for its PUBACK with wait(ms), and disconnect."""
        client = self.client
        if client.state == UP:
            try:
                client.publish(self.status_topic, self.status(False), 1, True)
                while client.inflight:
                    wait(20)
                    client.step()
            except Exception:  # MQTTError: the will says offline for us
                pass
            client.disconnect()
