# The spool: every batch the node makes, kept on its filesystem (littlefs on an ESP32, a folder of the
# bundle on the unix port) until the ingest service says it has stored or refused it
# (docs/reliability.md). RAM holds only the batch being sent and a small window of batches sent and
# not yet acknowledged by the service (where they lie in the spool, not their bytes).
#
# On flash: segment files `<n>.r` (n counting up) of records, appended in order and never rewritten:
#   crc32 (u32) | payload length (u16) | seq (u64) | payload     (little-endian; the CRC covers the
#   length, the seq and the payload)
# One record is one write (two write calls, one file open and close): a power cut in the middle leaves
# a torn last record (cut short, or failing its CRC), which ends its segment's valid records; those
# before it are kept. Each boot appends to a new segment, so a torn record is always the last of its
# segment. A segment is deleted once every record in it is acknowledged; when the spool would pass
# max_bytes, its oldest segment goes and each batch in it not yet acknowledged is counted (`dropped`;
# one already sent may still be stored, but the node no longer answers for it).
#
# Sequences: seq = epoch << 20 | n. The epoch is persisted (`epoch`, replaced by rename): each boot
# takes one above the file's and above any sequence in the spool (firmware/config.py: boot_spool, the
# start-up half of this module), and a batch counter passing 2**20 - 1 moves into the next epoch,
# persisted first. So a rebooted node never reuses a sequence, and seq stays below 2**53 for 2**33
# epochs.
#
# Delivery: next() gives the payload to send: first a batch of the window due again (after a
# reconnect, every one), then the oldest never sent while the window has room. sent() records the
# broker's PUBACK for it; acked() the service's acknowledgement. No ack within wait_ms of the oldest
# send makes the whole window due again and doubles the wait (up to _MAX_WAIT_MS) until an ack comes,
# so an absent service does not make the node flood the broker. With `acks` False (the broker refused
# the ack subscription: an older deployment) the PUBACK ends a batch's stay, as before acks. Time is
# passed in (the client's clock); files go through `fs` and `write`, so tests and the simulated board
# replace them.
import binascii
import os
import struct

from micropython import const

_HEADER = const(14)
_SHIFT = const(20)  # seq = epoch << _SHIFT | n
_MAX_WAIT_MS = const(300000)


class Spool:
    fs = os  # listdir, stat, remove, rename, mkdir: the module that holds them

    # Made by firmware/config.py: new_spool() (start-up code, not kept in RAM), which lists every
    # attribute; booted there too (boot_spool).

    def _path(self, segment):
        return self.folder + "/" + str(segment) + ".r"

    def _stat(self, segment):
        if segment == self._last:
            return self._size
        try:
            return self.fs.stat(self._path(segment))[6]
        except OSError:
            return 0

    def _records(self, segment, offset, first):
        """Read the valid records of a segment from offset: the first one as (seq, payload, length)
        if first, else (their number, the highest seq). A record cut short or failing its CRC (a torn
        write) ends the valid records."""
        hdr = self._hdr
        count = 0
        top = -1
        try:
            with open(self._path(segment), "rb") as f:
                f.seek(offset)
                while f.readinto(hdr) == _HEADER:
                    crc, length, seq = struct.unpack("<IHQ", hdr)
                    payload = f.read(length)
                    if len(payload) != length or binascii.crc32(payload, binascii.crc32(memoryview(hdr)[4:])) != crc:
                        break
                    if first:
                        return seq, payload, _HEADER + length
                    count += 1
                    top = max(top, seq)
        except OSError:
            pass
        return None if first else (count, top)

    def _persist(self, epoch):
        path = self.folder + "/epoch"
        with open(path + ".new", "w") as f:
            f.write(str(epoch))
        self.fs.rename(path + ".new", path)  # atomic: the old value or the new one, never half
        self.epoch = epoch

    def append(self, payload, seq):
        """Keep a batch durably, dropping the oldest segments while the spool is full. A batch larger
        than the whole spool is only counted as dropped."""
        if seq >> _SHIFT > self.epoch:
            self._persist(seq >> _SHIFT)  # n passed 2**20 - 1: the next epoch is in use from now
        size = _HEADER + len(payload)
        if size > self.max_bytes:
            self.dropped += 1
            return
        while self.bytes + size > self.max_bytes and self._first <= self._last:
            self._drop()
        if not self._open or self._size and self._size + size > self.segment_bytes:
            self._last += 1
            self._first = min(self._first, self._last)
            self._size = 0
            self._open = True
        hdr = self._hdr
        struct.pack_into("<IHQ", hdr, 0, 0, len(payload), seq)
        struct.pack_into("<I", hdr, 0, binascii.crc32(payload, binascii.crc32(memoryview(hdr)[4:])))
        try:
            with open(self._path(self._last), "ab") as f:
                if self.write:
                    self.write(f, hdr)
                    self.write(f, payload)
                else:
                    f.write(hdr)
                    f.write(payload)
        except Exception:
            # A write that failed may have left part of the record: it ends this segment's valid
            # records, so the next batch goes to a new segment. (`bytes` counts the torn part only
            # once the segment is deleted: the bound is off by that much meanwhile.)
            self._open = False
            raise
        self._size += size
        self.bytes += size
        self.queued += 1
        self.writes += 1

    def _drop(self):
        """The oldest segment goes: each batch in it not yet acknowledged is counted as dropped."""
        segment = self._first
        lost = 0
        for entry in self._w[:]:
            if entry[1] == segment:
                self._w.remove(entry)
                lost += 1
        if self._seg == segment:
            lost += self._records(segment, self._off, False)[0]
            self._seg += 1
            self._off = 0
        self.dropped += lost
        self.queued -= lost
        self._delete()

    def _delete(self):
        segment = self._first
        self.bytes -= self._stat(segment)
        try:
            self.fs.remove(self._path(segment))
        except OSError:
            pass
        self._first += 1
        self._open = self._open and segment != self._last
        self._peek = None

    def next(self):
        """The payload to send now, or None (nothing to send, or the window is full)."""
        if self._peek:
            return self._peek[4]
        for entry in self._w:
            if entry[3] < 0:  # due again
                found = self._records(entry[1], entry[2], True)
                if found is None:  # damaged since it was sent: there is nothing to send again
                    self._w.remove(entry)
                    self.queued -= 1
                    return self.next()
                self._peek = [entry[0], 0, 0, 0, found[1], entry]
                return found[1]
        if len(self._w) >= self.window or self._seg == self._last and self._off >= self._size:
            self._trim()
            return None  # the window is full, or everything is sent: no file to open
        while True:
            found = self._records(self._seg, self._off, True) if self._seg <= self._last else None
            if found or self._seg >= self._last:
                break
            self._seg += 1  # a segment's end, or a torn record: the next segment
            self._off = 0
            self._trim()
        if not found:
            self._trim()
            return None
        self._peek = [found[0], self._seg, self._off, self._off + found[2], found[1], None]
        return found[1]

    def sent(self, payload, now):
        """The broker has acknowledged `payload` (what next() gave): it waits for the service now."""
        peek = self._peek
        if peek is None or payload is not peek[4]:
            return  # acknowledged, dropped or made due meanwhile: next() decides again
        self._peek = None
        if peek[5]:
            peek[5][3] = now
            self.resent += 1
        else:
            self._w.append([peek[0], peek[1], peek[2], now])
            self._off = peek[3]
        if not self.acks:
            self.acked((peek[0],), ())

    def acked(self, stored, refused):
        """The service's acknowledgement: these sequences are done with (refused ones are counted)."""
        before = self.queued
        for seqs in (stored, refused):
            for seq in seqs:
                peek = self._peek
                if peek and not peek[5] and peek[0] == seq:
                    # About to go and acknowledged already (it was sent before a reboot): done.
                    self._off = peek[3]
                    self._done(seqs is refused)
                for entry in self._w:
                    if entry[0] == seq:
                        self._w.remove(entry)
                        self._done(seqs is refused)
                        break
        if self.queued != before:
            self.wait_ms = self.ack_timeout_ms  # the service is there: back to the first wait
            self._trim()

    def _done(self, refused):
        self.queued -= 1
        self.refused += refused
        self._peek = None

    def rewind(self):
        """Send the whole window again (a new connection: the broker may have lost it)."""
        for entry in self._w:
            entry[3] = -1
        self._peek = None

    def check(self, now):
        """No ack within the wait since the oldest send: the window is due again, and the next wait
        is twice as long."""
        w = self._w
        if w and w[0][3] >= 0 and self.clock.ticks_diff(now, w[0][3]) > self.wait_ms:
            self.rewind()
            self.wait_ms = min(self.wait_ms * 2, _MAX_WAIT_MS)

    def _trim(self):
        """Delete the oldest segments whose every record is acknowledged."""
        while self._first <= self._last and self._first <= self._seg:
            segment = self._first
            if segment == self._seg and self._off < self._stat(segment):
                return  # records in it wait to be sent
            for entry in self._w:
                if entry[1] == segment:
                    return
            self._delete()
            if self._seg < self._first:
                self._seg = self._first
                self._off = 0
