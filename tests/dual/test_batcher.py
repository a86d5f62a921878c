# The firmware's batcher, on both interpreters (the spool that follows it: test_node_spool.py).
import json

from firmware.batcher import Batcher
from shared import decode, protocol
from tests.dual.helpers import raises


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
