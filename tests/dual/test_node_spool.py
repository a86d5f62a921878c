# The node's flash spool (firmware/spool.py) on both interpreters, in a folder of its own under /tmp:
# records survive a restart, a torn record at every byte of a write is skipped with the records before
# it kept, the bound drops the oldest and counts, sequences never repeat across boots, the window waits
# for the service's acknowledgement and sends again with backoff.
import os

from firmware.config import boot_spool, new_spool
from tests.dual.helpers import raises
from tests.dual.test_mqtt import Clock

_made = []


def _remove(path):
    for name in os.listdir(path):
        os.remove(path + "/" + name)
    os.rmdir(path)


def folder():
    """A fresh, empty folder (MicroPython has no tempfile); those of earlier tests are removed."""
    while _made:
        _remove(_made.pop())
    base = "/tmp/fl-spool-test-" + "".join("%02x" % b for b in os.urandom(6))
    os.mkdir(base)
    _made.append(base)
    return base


def files(path):
    return sorted(name for name in os.listdir(path) if name.endswith(".r"))


def spool(path, max_bytes=100000, segment_bytes=4096, window=4, ack_timeout_ms=1000, clock=None):
    box = new_spool(path, max_bytes, segment_bytes, window, ack_timeout_ms, clock or Clock())
    boot_spool(box)
    return box


def batch(i):
    return b'{"v":1,"seq":' + str(i).encode() + b',"payload":"' + b"x" * (i % 7) + b'"}'


def drain(box, now=0):
    """Send everything (the broker acknowledging each) and return [(seq, payload)] in send order."""
    out = []
    while True:
        payload = box.next()
        if payload is None:
            return out
        seq = box._peek[0]
        out.append((seq, payload))
        box.sent(payload, now)
        box.acked([seq], [])


def test_a_batch_waits_for_the_services_ack_not_the_brokers():
    path = folder()
    box = spool(path)
    first = box.seq
    assert first == 1 << 20  # epoch 1 on a fresh spool
    box.append(b"a", first)
    box.append(b"b", first + 1)
    assert (box.queued, box.writes) == (2, 2)
    for expected in (b"a", b"b"):
        payload = box.next()
        assert payload == expected
        box.sent(payload, 0)
    assert box.next() is None  # everything sent: waiting for the service
    assert box.queued == 2
    box.acked([first + 1], [])
    assert box.queued == 1
    assert files(path)  # "a" is not acknowledged: its segment stays
    box.acked([first, 999], [])  # an unknown sequence is ignored
    assert box.queued == 0
    assert box.next() is None
    assert files(path) == []
    assert box.bytes == 0


def test_unacknowledged_batches_survive_a_restart_and_go_first():
    path = folder()
    box = spool(path, segment_bytes=40)
    seqs = [box.seq + i for i in range(6)]
    for seq in seqs:
        box.append(batch(seq), seq)
    payload = box.next()
    box.sent(payload, 0)
    box.acked([seqs[0]], [])
    again = spool(path, segment_bytes=40)
    assert again.queued == 5
    assert again.seq == 2 << 20  # a new epoch: no sequence of the last boot is used again
    assert [seq for seq, _ in drain(again)] == seqs[1:]
    assert [p for _, p in drain(spool(path))] == []


def test_a_torn_record_at_every_byte_of_a_write_keeps_the_records_before_it():
    path = folder()
    box = spool(path)
    seqs = [box.seq, box.seq + 1, box.seq + 2]
    for seq in seqs:
        box.append(batch(seq), seq)
    [name] = files(path)
    with open(path + "/" + name, "rb") as f:
        whole = f.read()
    last = 14 + len(batch(seqs[2]))
    for cut in range(len(whole) - last, len(whole)):
        copy = folder()
        with open(copy + "/" + name, "wb") as f:
            f.write(whole[:cut])
        with open(copy + "/epoch", "w") as f:
            f.write("1")
        box = spool(copy)
        assert box.queued == 2, cut
        assert drain(box) == [(seqs[0], batch(seqs[0])), (seqs[1], batch(seqs[1]))], cut
        # The next boot's records go to a segment of their own, after the torn one.
        box.append(b"next", box.seq)
        assert drain(box) == [(box.seq, b"next")]


def test_a_damaged_record_ends_its_segment():
    path = folder()
    box = spool(path)
    for i in range(3):
        box.append(batch(i), box.seq + i)
    [name] = files(path)
    with open(path + "/" + name, "rb") as f:
        data = bytearray(f.read())
    data[14 + len(batch(0)) + 20] ^= 0x01  # a bit of the second record's payload
    with open(path + "/" + name, "wb") as f:
        f.write(data)
    box = spool(path)
    assert box.queued == 1
    assert [seq for seq, _ in drain(box)] == [1 << 20]


def test_a_full_spool_drops_its_oldest_segment_and_counts_every_batch():
    path = folder()
    box = spool(path, max_bytes=200, segment_bytes=60)
    for i in range(20):
        box.append(b"0123456789" * 2, box.seq + i)  # 34 bytes a record: one segment holds one
    assert box.bytes <= 200
    assert box.queued + box.dropped == 20
    kept = box.queued
    assert kept == 200 // 34
    assert [seq - box.seq for seq, _ in drain(box)] == list(range(20 - kept, 20))
    # One that can never fit is counted and changes nothing else.
    box.append(b"x" * 300, box.seq + 21)
    assert (box.dropped, box.queued) == (20 - 200 // 34 + 1, 0)


def test_dropping_a_segment_counts_what_was_sent_and_not_acknowledged():
    path = folder()
    box = spool(path, max_bytes=100, segment_bytes=80)
    box.append(b"a" * 20, 1)
    box.append(b"b" * 20, 2)
    box.sent(box.next(), 0)  # "a" waits for the service in the window
    box.append(b"c" * 20, 3)  # drops the segment of "a" and "b"
    assert (box.dropped, box.queued) == (2, 1)
    assert box.next() == b"c" * 20
    box.acked([1], [])  # too late: nothing changes
    assert (box.dropped, box.queued) == (2, 1)


def test_sequences_never_repeat_across_boots_and_epochs_roll_over():
    path = folder()
    seen = []
    for _ in range(3):
        box = spool(path)
        seen.append(box.seq)
    assert seen == [1 << 20, 2 << 20, 3 << 20]
    os.remove(path + "/epoch")  # lost: the spool's own sequences still lift the next epoch
    box = spool(path)
    box.append(b"x", (7 << 20) + 5)
    box = spool(path)
    assert box.seq == 8 << 20
    box.append(b"y", 9 << 20)  # a batch counter that passed 2**20 - 1: epoch 9 is in use now
    assert box.epoch == 9
    os.remove(path + "/" + files(path)[0])
    os.remove(path + "/" + files(path)[0])
    assert spool(path).seq == 10 << 20
    assert spool(path).seq < 2**53


def test_no_ack_sends_the_window_again_with_a_doubling_wait_reset_by_an_ack():
    clock = Clock(0)
    path = folder()
    box = spool(path, window=2, ack_timeout_ms=1000, clock=clock)
    for i in range(3):
        box.append(batch(i), box.seq + i)
    for _ in range(2):
        box.sent(box.next(), clock.now)
    assert box.next() is None  # the window of two is full
    sends = []
    for clock.now in range(0, 20000, 100):
        box.check(clock.now)
        payload = box.next()
        if payload is not None:
            sends.append(clock.now)
            box.sent(payload, clock.now)
    assert sends == [1100, 1200, 3200, 3300, 7300, 7400, 15400, 15500], sends
    assert box.resent == 8
    box.acked([box.seq], [])
    assert box.wait_ms == 1000
    assert box.next() == batch(2)  # the window has room again


def test_a_reconnect_sends_the_window_again_in_order():
    box = spool(folder(), window=3)
    for i in range(3):
        box.append(batch(i), box.seq + i)
        box.sent(box.next(), 0)
    box.append(batch(3), box.seq + 3)
    box.rewind()
    order = []
    for _ in range(3):
        payload = box.next()
        order.append(payload)
        box.sent(payload, 0)
    assert order == [batch(0), batch(1), batch(2)]
    box.acked([box.seq + 1], [box.seq])
    assert (box.refused, box.queued) == (1, 2)
    assert box.next() == batch(3)


def test_a_payload_acknowledged_or_dropped_while_in_flight_is_not_recorded_as_sent():
    box = spool(folder())
    box.append(b"a", box.seq)
    payload = box.next()
    box.acked([box.seq], [])  # the service's ack of an earlier send overtakes this one
    box.sent(payload, 0)
    assert box._w == []
    assert box.queued == 0


def test_sizes_must_be_positive():
    raises(ValueError, new_spool, "/tmp/x", 0, 1, 1, 1, Clock())
    raises(ValueError, new_spool, "/tmp/x", 1, 1, 0, 1, Clock())


class FailOnce:
    """A flash write (board.write) that fails once, on the payload after its header is written."""

    def __init__(self):
        self.fail = False

    def __call__(self, f, data):
        if self.fail and len(data) != 14:  # not the header
            self.fail = False
            raise OSError(5)  # EIO
        f.write(data)


def test_a_write_that_fails_mid_record_costs_no_batch_after_it():
    path = folder()
    write = FailOnce()
    box = new_spool(path, 100000, 4096, 4, 1000, Clock(), write)
    boot_spool(box)
    first = box.seq
    box.append(batch(1), first)
    write.fail = True
    raises(OSError, box.append, batch(2), first + 1)  # its header is on flash, its payload not
    assert box.queued == 1
    box.append(batch(2), first + 1)  # tried again (the node keeps the batch): in a new segment
    box.append(batch(3), first + 2)
    assert len(files(path)) == 2
    assert drain(box) == [(first, batch(1)), (first + 1, batch(2)), (first + 2, batch(3))]
    assert box.queued == 0
