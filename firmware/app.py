# The node application: sample sensors, filter, batch, keep batches in the spool (on flash) until the
# ingest service says it stored them. One loop and no asyncio: each turn samples the sensors that are
# due, runs the timed filters and the batch age limit, takes a step of the Publisher, then waits on the
# socket until the next thing is due. Nothing in it blocks, so a slow or absent network never costs a
# sample; and it needs no tasks or coroutines in RAM. Everything that touches hardware or
# time comes from the board, so this runs unchanged on the unix port. Config checking and building
# the sensors live in firmware/config.py and firmware/sensors.py, which run before this module is
# imported and are unloaded then.
import gc
import json
import select
import sys
import time
from random import getrandbits

from micropython import const

from firmware.mqtt import DOWN, UP
from shared import protocol

_HOUSEKEEPING_MS = const(100)

# The publish state machine: keep a connection to the broker (reconnecting with exponential backoff),
# subscribe to the device's ack topic and announce the retained "online" status once per connection,
# then send what the spool gives (firmware/spool.py: overdue batches again, then new ones while its
# window has room) at QoS 1, telling the spool of each PUBACK; the service's acks that arrive on the
# subscription end a batch's stay. A new connection sends the spool's window again (the broker may have
# lost it). One step per turn of the node's loop; nothing waits. The client (whose clock, real time,
# it goes by), the spool and the board are its arguments, so it is tested without sensors or sockets
# (tests/dual/test_publisher.py). It lives in this module rather than one of its own: every module a
# node holds costs RAM.
_FIRST_BACKOFF_MS = const(500)
_MAX_BACKOFF_MS = const(30000)
_JOIN_POLL_MS = const(1000)
_REFUSED = const(0x80)  # a SUBACK's failure code
_ONLINE = "online"  # marks the status publish in flight, as opposed to a batch
_SUBSCRIBE = "subscribe"  # marks the subscription in flight
_STATUS = "status"  # marks a periodic status (health) in flight


def seldom(name="seldom"):
    """firmware/seldom.py (or another module), loaded for one use and dropped again: code the node
    runs now and then."""
    module = __import__("firmware." + name, None, None, ("x",))
    del sys.modules["firmware." + name]
    package = sys.modules.get("firmware")
    if package is not None and name in package.__dict__:
        delattr(package, name)
    return module


class Publisher:
    # Made by firmware/assemble.py: publisher() (start-up code, not kept in RAM).

    def on_message(self, topic, payload):
        """A message on the subscription: the service's ack. Never raises."""
        if topic != self._ack_topic:
            return
        acks = protocol.decode_ack(payload)
        if acks is None:
            self.bad_acks += 1
            return
        self.spool.acked(acks[0], acks[1])

    def step(self):
        """One step of the connection: (re)connect when the backoff allows, subscribe, announce,
        publish what the spool gives. Never raises: a failure schedules a reconnect."""
        client = self.client
        clock = client.clock
        spool = self.spool
        try:
            if client.state == DOWN:
                if clock.ticks_diff(clock.ticks_ms(), self._retry_at) < 0:
                    return
                if not self.board.connect_network(self.wifi):
                    # Joining, or no network in the air: asked again each second. The broker has seen
                    # nothing, so the backoff stays: the node reconnects as soon as Wi-Fi is back.
                    self._retry_at = clock.ticks_add(clock.ticks_ms(), _JOIN_POLL_MS)
                    return
                self._subscribed = False
                self._announced = False
                self.sending = None
                client.connect(True)  # the broker's name is resolved again at every attempt
            elif not self.board.online():
                raise OSError("the network is gone")  # Wi-Fi lost: rejoin before reconnecting
            client.step()
            if client.state != UP or client.inflight:
                return
            sent = self.sending
            now = clock.ticks_ms()
            if sent is not None:  # acknowledged by the broker
                self.sending = None
                if sent is _ONLINE:
                    self.backoff_ms = _FIRST_BACKOFF_MS
                    spool.rewind()  # what the last connection sent may be lost with the broker
                    print("connected to", client.host, client.port)
                elif sent is _SUBSCRIBE:
                    # Refused (a broker whose ACL predates acks): the broker's PUBACK has to do.
                    spool.acks = client.granted != _REFUSED
                    if not spool.acks:
                        print("mqtt: the broker refused the subscription to", self.ack_topic)
                else:
                    spool.sent(sent, now)
            if not self._subscribed:
                self._subscribed = True
                self.sending = _SUBSCRIBE
                client.subscribe(self.ack_topic)
            elif not self._announced:
                self._announced = True
                self.status_due = False
                self.sending = _ONLINE
                client.publish(self.status_topic, self.status(True), 1, True)
            elif self.status_due:
                self.status_due = False
                self.sending = _STATUS
                client.publish(self.status_topic, self.status(True), 1, True)
            else:
                spool.check(now)
                payload = spool.next()
                if payload is not None:
                    timed = self._timed(payload)
                    if timed is not None:
                        self.sending = payload  # what the spool gave: sent() knows it by identity
                        client.publish(self.data_topic, timed, 1)
        except Exception as exc:  # MQTTError, a Wi-Fi or config problem: retry, never stop
            # A batch in flight stays in the spool and goes again after the reconnect.
            self.sending = None
            self.reconnects += 1
            # Jitter: a wait in [backoff / 2, backoff], so a fleet that lost its broker at once does
            # not come back in lock step.
            half = self.backoff_ms // 2
            wait = half + getrandbits(16) % (half + 1)
            self._retry_at = clock.ticks_add(clock.ticks_ms(), wait)
            self.backoff_ms = min(self.backoff_ms * 2, _MAX_BACKOFF_MS)
            client.close()  # after the backoff is set: these two allocate, and may fail
            print("mqtt:", exc, "; retrying in", wait, "ms")

    def _timed(self, payload):
        """The payload as it goes: a batch made before the clock was known (t0 negative) gets its
        true time, or waits for it, or is refused (firmware/seldom.py: timed)."""
        spool = self.spool
        if payload is self._held and spool.seq >> 20 not in spool.anchors:
            return None
        k = payload.find(b",", 13)  # after b'{"v":1,"seq":N'
        if k < 0 or payload[k + 6] != 45:  # not '-': stamped with the clock
            return payload
        return seldom().timed(self, payload, k)


class Node:
    # Made by firmware/assemble.py: node() (once, at start-up: its code need not stay in RAM).

    def status(self, online):
        try:
            return seldom("health").status(self, online)
        except MemoryError:  # no room for it now (a TLS handshake has just taken its share): next time
            return protocol.encode_status(online, None, self.config_error, self.cert_id)

    # --- sampling ------------------------------------------------------------------------------------
    def _flush(self):
        """Keep the batch in the spool; False when the spool could not take it (a flash write that
        failed: counted, the batch stays in the batcher). A MemoryError is raised: the loop counts it."""
        batcher = self.batcher
        payload = batcher.encode()
        if payload is None:
            return True
        # Durable first: a power cut after this loses nothing of the batch; the trace (the unix port's
        # record of what was produced) follows.
        spool = self.spool
        try:
            spool.append(payload, batcher.seq)
        except OSError as exc:  # the flash: full, failing, its folder removed (a MemoryError: the loop's)
            self.error(exc)
            return False
        batcher.done()
        self.board.trace(payload)
        if batcher._rel_end >= 0 and batcher.boot_ms and spool.seq >> 20 not in spool.anchors:
            seldom().anchor(self, spool.seq >> 20)  # the clock is known: batches before it get their time
        return True

    def error(self, exc):
        """Count an exception the node goes on after (loop_errors); logged the 1st, 2nd, 4th, 8th...
        time, so a lasting fault does not flood the log, and never raising."""
        self.loop_errors = n = self.loop_errors + 1
        if not n & (n - 1):
            try:
                print("error", n, exc)
            except MemoryError:
                pass

    def _add(self, sensor_index, value):
        board = self.board
        batcher = self.batcher
        # Full since a flush found no room or a failing flash: once more first; if the spool still
        # cannot take it, this reading is lost (counted with the failure).
        if len(batcher) >= batcher.max_readings and not self._flush():
            return
        if batcher.add(sensor_index, value, board.now_ms(), board.ticks_ms(), time.ticks_diff):
            self._flush()

    def _due(self, group):
        return group.read_at if group.read_at >= 0 else group.next

    def _sample(self, group, now):
        """The group is due: start a conversion, or read one, filter and batch the values."""
        board = self.board
        driver = group.driver
        try:
            if group.read_at >= 0:
                group.read_at = -1
                driver.measure(now)
            else:
                board.before_measure(board.now_ms())
                started = driver.start(now)
                if driver.exhausted:
                    return
                if started and driver.conversion_ms:
                    group.read_at = time.ticks_add(now, driver.conversion_ms)
                    return
                if started:
                    driver.measure(now)
            values = driver.values
            for sensor_index, channel_index, chain in group.channels:
                raw = values[channel_index]
                if raw != raw:
                    self.read_errors += 1
                value = chain.process(raw, now)
                if value is not None:
                    self._add(sensor_index, value)
        except MemoryError:  # the heap had no piece big enough now: this sample is lost, counted
            self.oom += 1
        except Exception as exc:  # drivers and filters are not meant to raise; if one does, it must
            # not stop the loop: count it against the driver and sample again at the next tick
            driver.errors += 1
            driver.last_error = repr(exc)
            print("sampling failed:", driver.last_error)
        self._sampled = now
        group.next = time.ticks_add(group.next, group.interval_ms)
        late = time.ticks_diff(board.ticks_ms(), group.next)
        if late >= 0:
            # Fell behind (a slow bus, a long GC, a TLS handshake): skip the ticks missed. Never due
            # again at once: a sensor sampled twice back to back would repeat its millisecond.
            group.next = time.ticks_add(group.next, (late // group.interval_ms + 1) * group.interval_ms)

    def _housekeeping(self, now):
        """Timed filters' outputs, the batch age limit, the status every minute, the watchdog."""
        for group in self.groups:
            if group.timed:
                for sensor_index, _, chain in group.channels:
                    value = chain.poll(now)
                    if value is not None:
                        self._add(sensor_index, value)
        if self.batcher.due(now, time.ticks_diff):
            self._flush()
        if time.ticks_diff(now, self._status_at) >= 60000:
            self._status_at = now
            self.publisher.status_due = True
            if self._boot_file and time.ticks_diff(now, self.batcher.boot_ticks) >= 300000:
                seldom().stable(self)  # five minutes up: the count of early ends starts again
        # Fed only while sampling keeps its schedule: a loop that turns without sampling (a driver
        # that hangs, a wedged schedule) lets the watchdog reset the board.
        if time.ticks_diff(now, self._sampled) < self._stall_ms:
            self.board.feed_watchdog()

    def _wait(self, ms):
        """Sleep up to ms of device time, waking early when the socket has something for us."""
        client = self.publisher.client
        sock = client.sock
        if sock is not self._polled:
            if self._polled is not None:
                try:
                    self._poller.unregister(self._polled)
                except (OSError, ValueError, KeyError):
                    pass
            self._polled = sock
            if sock is not None:
                self._poller.register(sock, select.POLLIN)
        if sock is not None:
            self._poller.modify(sock, select.POLLIN | (select.POLLOUT if client.out else 0))
        self.board.wait_ms(ms, self._poller if sock is not None else None)

    def run(self, stats_every_s=None):
        board = self.board
        publisher = self.publisher
        now = board.ticks_ms()
        self.batcher.boot_ticks = self._up_ticks = self._sampled = self._status_at = now
        for group in self.groups:
            group.next = now
        next_housekeeping = now
        stats_ms = int(stats_every_s * 1000) if stats_every_s else 0
        next_stats = time.ticks_add(now, stats_ms)
        sampling = True
        drain_deadline = 0
        while True:
            try:
                now = board.ticks_ms()
                if sampling:
                    # Sampling goes on while the board runs and a driver has more (a replay may end).
                    running = board.running()
                    more = False  # not `sampling` itself: an exception in a sample must not end sampling
                    for group in self.groups:
                        if running and not group.driver.exhausted:
                            if time.ticks_diff(now, self._due(group)) >= 0:
                                self._sample(group, now)
                                now = board.ticks_ms()
                            more = more or not group.driver.exhausted
                    sampling = more
                    if sampling and time.ticks_diff(now, next_housekeeping) >= 0:
                        # The next one set first: housekeeping that fails (no room for a flush) is
                        # tried again at its next turn, not at once in a loop that never waits.
                        next_housekeeping = time.ticks_add(next_housekeeping, _HOUSEKEEPING_MS)
                        if time.ticks_diff(next_housekeeping, now) <= 0:  # fell behind: missed turns skipped
                            next_housekeeping = time.ticks_add(now, _HOUSEKEEPING_MS)
                        self._housekeeping(now)
                    if not sampling:
                        # Sampling is over (unix port: duration or replay ended): a bounded time to drain.
                        drain_deadline = time.ticks_add(time.ticks_ms(), self.drain_timeout_ms)
                    if stats_ms and time.ticks_diff(now, next_stats) >= 0:
                        next_stats = time.ticks_add(next_stats, stats_ms)
                        gc.collect()  # measured here, before the code that prints it is loaded
                        alloc, free = gc.mem_alloc(), gc.mem_free()
                        seldom().print_heap(self, alloc, free)
                if not sampling and len(self.batcher) and time.ticks_diff(time.ticks_ms(), drain_deadline) <= 0:
                    self._flush()  # what sampling left (again, if the heap had no room for it)
                publisher.step()
                if not sampling and (
                    not self.spool.queued
                    and publisher.sending is None
                    or time.ticks_diff(time.ticks_ms(), drain_deadline) > 0
                ):
                    break
                if sampling:
                    wait = time.ticks_diff(next_housekeeping, now)
                    for group in self.groups:
                        if not group.driver.exhausted:
                            wait = min(wait, time.ticks_diff(self._due(group), now))
                else:
                    wait = 50  # draining: only the network is left to wait for
                if wait > 0:
                    self._wait(wait)
            except MemoryError:
                # The heap had no piece big enough for one allocation (it is small and never
                # compacted: docs/performance.md). Whatever needed it is tried again next turn: a batch
                # stays in the batcher until the spool keeps it, the spool keeps what it sends.
                self.oom += 1
                gc.collect()
            except Exception as exc:  # a bug, or what a board's call raised: counted, never the end
                self.error(exc)
        self._stop()

    def _stop(self):
        later = seldom()
        later.stop(self.publisher, self._wait)
        if self._boot_file:
            later.stable(self)  # a clean stop (unix port) is no crash
        del later
        print("stopped:", json.dumps(seldom("health").counters(self)))
