# The firmware's batcher, on both interpreters (the spool that follows it: test_node_spool.py).
import json

from firmware.assemble import batcher as Batcher
from shared import decode, protocol
from tests.dual.helpers import raises


def _diff(a, b):
    return a - b


def _flush(batcher):
    """What the node does with a batch: encode it, keep it (here: nowhere), clear it."""
    payload = batcher.encode()
    if payload is not None:
        batcher.done()
    return payload


def test_batcher_fills_by_count_and_encodes_offsets():
    batcher = Batcher(["t", "h"], 4, 60000)
    assert not batcher.add(0, 20.5, 1000000, 500, _diff)
    assert not batcher.add(1, 40.0, 1000000, 500, _diff)
    assert not batcher.add(0, 20.75, 1000250, 750, _diff)
    assert batcher.add(1, float("nan"), 1000250, 750, _diff)
    payload = batcher.encode()
    assert batcher.encode() == payload and len(batcher) == 4  # kept until done(): not lost if the spool fails
    batcher.done()
    assert json.loads(payload)["r"] == [[0, 0, 20.5], [0, 1, 40.0], [250, 0, 20.75], [250, 1, None]]
    seq, readings = decode.decode_batch(payload)
    assert seq == 0
    assert readings[2] == (1000250, "t", 20.75)
    assert len(batcher) == 0
    assert _flush(batcher) is None


def test_batcher_is_due_by_age_and_counts_sequence():
    batcher = Batcher(["t"], 100, 1000)
    assert not batcher.due(0, _diff)  # empty batches are never due
    batcher.add(0, 1.0, 5000, 10, _diff)
    assert not batcher.due(1009, _diff)
    assert batcher.due(1010, _diff)
    _flush(batcher)
    batcher.add(0, 2.0, 7000, 2000, _diff)
    assert json.loads(_flush(batcher))["seq"] == 1


def test_batcher_limits():
    raises(ValueError, Batcher, ["t"], 0, 1000)
    raises(ValueError, Batcher, ["t"], protocol.MAX_READINGS + 1, 1000)


def _times(payload):
    obj = json.loads(payload)
    return [(obj["t0"] + off, obj["s"][i]) for off, i, _ in obj["r"]]


def test_a_sensor_read_twice_in_one_millisecond_gets_two_milliseconds():
    batcher = Batcher(["t", "h"], 10, 60000)
    for sensor in (0, 1, 0, 0):
        batcher.add(sensor, 1.0, 5000, 70, _diff)
    times = _times(_flush(batcher))
    assert times == [(5000, "t"), (5000, "h"), (5001, "t"), (5002, "t")]


def test_a_clock_stepped_back_never_repeats_or_reorders_a_timestamp():
    # An NTP correction steps the clock back 3 s between two batches: the next batch starts after
    # the last reading, and the clock's time is back once the gaps between batches have absorbed it.
    batcher = Batcher(["t"], 3, 60000)
    seen = []
    clock = 100000
    ticks = 0
    for i in range(12):
        if i == 6:
            clock -= 3000
        batcher.add(0, float(i), clock, ticks, _diff)
        if len(batcher) == 3:
            seen += _times(_flush(batcher))
        clock += 1000
        ticks += 1000
    stamps = [t for t, _ in seen]
    assert stamps == sorted(set(stamps))  # strictly increasing: no repeat, no reordering
    assert stamps[:6] == [100000, 101000, 102000, 103000, 104000, 105000]
    assert stamps[6] == 105001  # the clock said 103000: the batch starts after the last reading


def test_a_clock_stepped_forward_leaves_a_gap():
    batcher = Batcher(["t"], 1, 60000)
    batcher.add(0, 1.0, 100000, 0, _diff)
    first = _times(_flush(batcher))
    batcher.add(0, 2.0, 160000, 1000, _diff)
    assert _times(_flush(batcher)) == [(160000, "t")] and first == [(100000, "t")]


def test_readings_before_the_clock_are_stamped_from_boot_and_precede_the_first_with_a_clock():
    batcher = Batcher(["t"], 2, 60000)
    batcher.boot_ticks = 1000
    batcher.add(0, 1.0, 0, 1000, _diff)  # 0 ms since boot, no clock
    batcher.add(0, 1.5, 0, 2000, _diff)  # 1000 ms
    early = json.loads(_flush(batcher))
    assert early["t0"] == -1  # -1 - (0 ms since boot)
    assert [r[0] for r in early["r"]] == [0, 1000]
    assert batcher.boot_ms == 0
    batcher.add(0, 2.0, 0, 3000, _diff)  # 2000 ms: a batch begun without a clock stays so
    batcher.add(0, 2.5, 1795000003000, 4000, _diff)
    assert json.loads(_flush(batcher))["t0"] == -2001
    batcher.add(0, 3.0, 1795000004000, 5000, _diff)  # 4000 ms since boot, with a clock
    late = json.loads(_flush(batcher))
    assert batcher.boot_ms == 1795000000000
    assert late["t0"] == 1795000004000
    # what came before the clock: 1795000000000 + 0, + 1000, + 2000, + 3000, then this one


def test_a_batch_with_a_clock_never_overlaps_one_without_it():
    # The clock, once known, says less than the boot's ticks would (it was set back): the first
    # batch with it still starts after the last reading made before it.
    batcher = Batcher(["t"], 1, 60000)
    batcher.add(0, 1.0, 0, 5000, _diff)  # 5000 ms since boot (boot_ticks 0)
    _flush(batcher)
    batcher.add(0, 2.0, 1795000000000, 5000, _diff)  # the same tick, now with a clock
    assert batcher.boot_ms == 1795000000000 - 5000
    assert json.loads(_flush(batcher))["t0"] == 1795000000001
