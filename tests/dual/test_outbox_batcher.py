# The firmware's outbox ring and batcher, on both interpreters.
import json

from firmware.batcher import Batcher
from firmware.outbox import Outbox
from shared import decode, protocol
from tests.dual.helpers import raises


def test_outbox_keeps_order_until_popped():
    box = Outbox(3)
    box.push(b"a")
    box.push(b"b")
    assert box.peek() == b"a"
    assert box.peek() == b"a"  # peeking does not consume: the item stays until acknowledged
    assert box.pop() == b"a"
    assert box.pop() == b"b"
    assert box.pop() is None
    assert box.sent == 2
    assert box.dropped == 0


def test_full_outbox_drops_the_oldest_and_counts_it():
    box = Outbox(3)
    for item in (b"1", b"2", b"3", b"4", b"5"):
        box.push(item)
    assert len(box) == 3
    assert box.dropped == 2
    assert [box.pop(), box.pop(), box.pop()] == [b"3", b"4", b"5"]


def test_outbox_wraps_around_many_times():
    box = Outbox(4)
    for i in range(100):
        item = str(i).encode()
        box.push(item)
        assert box.pop() == item
    assert box.dropped == 0
    assert box.sent == 100


def test_outbox_capacity_must_be_positive():
    raises(ValueError, Outbox, 0)


def _diff(a, b):
    return a - b


def test_batcher_fills_by_count_and_encodes_offsets():
    batcher = Batcher(["t", "h"], 4, 60000)
    assert not batcher.add(0, 20.5, 1000000, 500, _diff)
    assert not batcher.add(1, 40.0, 1000000, 500, _diff)
    assert not batcher.add(0, 20.75, 1000250, 750, _diff)
    assert batcher.add(1, float("nan"), 1000250, 750, _diff)
    payload = batcher.flush()
    assert json.loads(payload)["r"] == [[0, 0, 20.5], [0, 1, 40.0], [250, 0, 20.75], [250, 1, None]]
    seq, readings = decode.decode_batch(payload)
    assert seq == 0
    assert readings[2] == (1000250, "t", 20.75)
    assert len(batcher) == 0
    assert batcher.flush() is None


def test_batcher_is_due_by_age_and_counts_sequence():
    batcher = Batcher(["t"], 100, 1000)
    assert not batcher.due(0, _diff)  # empty batches are never due
    batcher.add(0, 1.0, 5000, 10, _diff)
    assert not batcher.due(1009, _diff)
    assert batcher.due(1010, _diff)
    batcher.flush()
    batcher.add(0, 2.0, 7000, 2000, _diff)
    assert json.loads(batcher.flush())["seq"] == 1


def test_batcher_limits():
    raises(ValueError, Batcher, ["t"], 0, 1000)
    raises(ValueError, Batcher, ["t"], protocol.MAX_READINGS + 1, 1000)


def test_outbox_byte_budget_drops_oldest_until_the_new_batch_fits():
    box = Outbox(10, max_bytes=10)
    box.push(b"aaaa")
    box.push(b"bbbb")
    assert box.bytes == 8
    box.push(b"cccccc")  # 14 > 10: drop "aaaa" (10 fits)
    assert (len(box), box.bytes, box.dropped) == (2, 10, 1)
    assert box.pop() == b"bbbb"
    assert box.bytes == 6
    box.push(b"x" * 11)  # larger than the whole budget: counted, nothing else lost
    assert (len(box), box.dropped) == (1, 2)
    assert box.pop() == b"cccccc"
    assert box.bytes == 0
