# The watchdog rule of the node's loop (firmware/app.py: Node._housekeeping; docs/reliability.md,
# "Watchdog"), on both interpreters, with a real Node made as at start-up (firmware/assemble.py) on a
# board that counts its feeds and a clock moved by hand: housekeeping feeds the watchdog only while
# sampling keeps its schedule (a sample within three times the longest interval, at least 10 s), so a
# loop that goes on turning without sampling stops feeding it; a sample whose driver fails is still
# progress. A call that blocks the loop is shown with real processes (tests/test_node_healing.py).
from firmware import app
from firmware.assemble import node as make_node
from firmware.config import boot_spool, new_spool
from firmware.drivers import Driver, Group
from tests.dual.test_mqtt import Clock
from tests.dual.test_node_spool import folder


class Time:
    """The time module's ticks, from the test's clock (CPython's time has none)."""

    def __init__(self, clock):
        self.clock = clock

    def ticks_ms(self):
        return self.clock.now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, b):
        return a + b


class Board:
    def __init__(self, clock):
        self.clock = clock
        self.feeds = 0

    def ticks_ms(self):
        return self.clock.now

    def now_ms(self):
        return 1700000000000 + self.clock.now

    def feed_watchdog(self):
        self.feeds += 1

    def before_measure(self, now_ms):
        pass

    def trace(self, payload):
        pass


class Probe(Driver):
    channels = ("x",)
    fail = False

    def measure(self, now):
        if self.fail:
            raise OSError(5)  # EIO: a driver that raises is counted, never stops the loop
        self.values[0] = 1.0
        return True


def node(intervals):
    clock = Clock(0)
    board = Board(clock)
    spool = new_spool(folder(), 100000, 4096, 8, 1000, clock)
    boot_spool(spool)
    groups = [Group(Probe(), interval) for interval in intervals]
    config = {
        "device_id": "node-1",
        "broker": {"host": "broker.example", "port": 8883, "keepalive_s": 30, "timeout_ms": 1000},
        "drain_timeout_ms": 1000,
        "batch": {"max_readings": 60, "max_age_ms": 5000},
        "spool": spool,
    }
    made = make_node(board, config, None, ["x"] * len(intervals), groups)
    made._sampled = made._status_at = made.batcher.boot_ticks = 0
    return made, board, clock


def with_clock(clock, fn):
    saved = app.time
    app.time = Time(clock)
    try:
        return fn()
    finally:
        app.time = saved


def test_fed_while_sampling_keeps_its_schedule_and_not_once_it_stops():
    made, board, clock = node([1000])
    assert made._stall_ms == 10000  # at least 10 s

    def run():
        for now in (100, 5000, 9999):
            made._housekeeping(now)
        assert board.feeds == 3
        for now in (10000, 10100, 30000):  # the loop turns, nothing has been sampled for 10 s
            made._housekeeping(now)
        assert board.feeds == 3
        clock.now = 30000
        made._sample(made.groups[0], 30000)  # sampling again: fed again
        made._housekeeping(30100)
        assert board.feeds == 4

    with_clock(clock, run)


def test_the_patience_is_three_times_the_longest_interval():
    made, board, clock = node([1000, 20000])
    assert made._stall_ms == 60000

    def run():
        made._housekeeping(59999)
        made._housekeeping(60000)
        assert board.feeds == 1

    with_clock(clock, run)


def test_a_sample_whose_driver_raises_is_still_progress():
    made, board, clock = node([1000])
    group = made.groups[0]
    group.driver.fail = True

    def run():
        clock.now = 20000
        made._sample(group, 20000)
        made._housekeeping(20100)
        assert (group.driver.errors, board.feeds) == (1, 1)

    with_clock(clock, run)
