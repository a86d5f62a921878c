# A heap with no piece big enough for one allocation (MemoryError; a node's heap is small and never
# compacted: docs/performance.md) costs the node no batch: the batcher keeps a batch until the spool
# has kept it, and the failure is counted (`oom`). On both interpreters, with a real Node made as at
# start-up (tests/dual/test_watchdog.py) and a spool whose append fails for want of heap.
from shared import decode
from tests.dual.test_watchdog import node, with_clock


class NoRoom:
    """The spool's append, failing for want of heap `fails` times and then working."""

    def __init__(self, append, fails):
        self.append = append
        self.fails = fails

    def __call__(self, payload, seq):
        if self.fails:
            self.fails -= 1
            raise MemoryError("memory allocation failed, allocating 267 bytes")
        self.append(payload, seq)


class Unfiltered:
    def process(self, value, now):
        return value


def _node():
    made, board, clock = node([1000])
    made.groups[0].channels.append((0, 0, Unfiltered()))
    return made, clock


def _readings(made):
    payload = made.spool.next()
    made.spool.sent(payload, 0)
    return decode.decode_batch(payload)


def test_a_full_batch_the_spool_had_no_room_for_is_kept_at_the_next_reading():
    made, clock = _node()
    spool = made.spool
    spool.append = NoRoom(spool.append, 1)
    group = made.groups[0]
    first_seq = made.batcher.seq

    def run():
        for i in range(61):
            clock.now = i * 1000
            made._sample(group, clock.now)
            if i == 59:  # the 60th reading filled the batch, which the spool could not take
                assert (made.oom, spool.queued, len(made.batcher)) == (1, 0, 60)
        # The 61st reading: the full batch kept first, then a new batch begun with it.
        assert (made.oom, spool.queued, len(made.batcher), made.batcher.seq) == (1, 1, 1, first_seq + 1)
        assert group.driver.errors == 0

    with_clock(clock, run)
    seq, readings = _readings(made)
    assert seq == first_seq and len(readings) == 60
    assert [t - 1700000000000 for t, _, _ in readings] == [i * 1000 for i in range(60)]


def test_a_due_batch_the_spool_had_no_room_for_goes_at_the_next_housekeeping():
    made, clock = _node()
    spool = made.spool
    spool.append = NoRoom(spool.append, 2)
    group = made.groups[0]

    def run():
        for i in range(3):
            clock.now = i * 1000
            made._sample(group, clock.now)
        for now in (5000, 5100):  # due by age (5 s): no room twice; the loop counts each (Node.run)
            try:
                made._housekeeping(now)
                raise AssertionError("expected MemoryError")
            except MemoryError:
                pass
            assert (spool.queued, len(made.batcher)) == (0, 3)
        made._housekeeping(5200)
        assert (spool.queued, len(made.batcher)) == (1, 0)

    with_clock(clock, run)
    _, readings = _readings(made)
    assert [(t - 1700000000000, v) for t, _, v in readings] == [(0, 1.0), (1000, 1.0), (2000, 1.0)]


def _running_node():
    """A node whose board samples for 20 s of the test's clock, one reading a second, with no network
    (everything waits in the spool); run() then drains until its timeout (1 s)."""
    made, clock = _node()
    board = made.board
    board.running = lambda: clock.now < 20000
    board.wait_ms = lambda ms, poller=None: setattr(clock, "now", clock.now + ms)
    board.connect_network = lambda wifi: False
    board.online = lambda: False
    made.publisher.client.clock = clock
    return made, clock


def test_the_loop_goes_on_through_memory_errors_and_keeps_every_reading():
    made, clock = _running_node()
    spool = made.spool
    spool.append = NoRoom(spool.append, 3)  # the first batch due (5 s) finds no room three times
    with_clock(clock, lambda: made.run())
    assert (made.oom, made.loop_errors, made.read_errors) == (3, 0, 0)
    assert clock.now == 21050  # sampled to the end, then drained until its timeout (1 s) passed
    readings = []
    while spool.next() is not None:
        readings += _readings(made)[1]
    assert [t - 1700000000000 for t, _, _ in readings] == [i * 1000 for i in range(20)]


class FlashFails:
    """The spool's append on a flash that fails every write (ENOSPC), counting the tries."""

    def __init__(self):
        self.tries = 0

    def __call__(self, payload, seq):
        self.tries += 1
        raise OSError(28)


def test_a_failing_flash_costs_readings_counted_never_the_loop_or_the_watchdog():
    made, clock = _running_node()
    made.spool.append = failing = FlashFails()
    with_clock(clock, lambda: made.run())
    # Every try counted; the first batch is due at 5 s and tried at each housekeeping after.
    # (one a housekeeping turn from 5 s to 20 s, and the drain's last try)
    assert (made.loop_errors, failing.tries) == (151, 151)
    assert (made.oom, made.spool.queued, len(made.batcher)) == (0, 0, 20)
    assert (made.board.feeds, clock.now) == (200, 20000)  # housekeeping went on, the watchdog fed throughout
