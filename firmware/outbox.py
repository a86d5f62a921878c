# The outbox: a fixed ring of encoded batches waiting for the broker's PUBACK, bounded both in count
# and in bytes. When a new batch does not fit, the oldest batches are dropped and counted, so an
# outage of any length costs a bounded, visible amount of RAM and never stops sampling.


class Outbox:
    def __init__(self, capacity, max_bytes=24576):
        if capacity < 1:
            raise ValueError("outbox capacity must be at least 1")
        if max_bytes < 1:
            raise ValueError("outbox max_bytes must be at least 1")
        self._slots = [None] * capacity
        self._head = 0  # index of the oldest item
        self._count = 0
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0
        self.sent = 0

    def __len__(self):
        return self._count

    def _take(self):
        item = self._slots[self._head]
        self._slots[self._head] = None
        self._head = (self._head + 1) % len(self._slots)
        self._count -= 1
        self.bytes -= len(item)
        return item

    def push(self, item):
        if len(item) > self.max_bytes:  # can never fit: count it rather than empty the ring for it
            self.dropped += 1
            return
        while self._count == len(self._slots) or self.bytes + len(item) > self.max_bytes:
            self._take()
            self.dropped += 1
        self._slots[(self._head + self._count) % len(self._slots)] = item
        self._count += 1
        self.bytes += len(item)

    def peek(self):
        """The oldest item, kept until pop(); None when empty."""
        return self._slots[self._head] if self._count else None

    def pop(self):
        if not self._count:
            return None
        self.sent += 1
        return self._take()
