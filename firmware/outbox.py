# The outbox: a fixed ring of encoded batches waiting for the broker's PUBACK.
# When it is full the oldest batch is dropped and counted, so an outage of any length costs a bounded,
# visible amount of RAM and never stops sampling.


class Outbox:
    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("outbox capacity must be at least 1")
        self._slots = [None] * capacity
        self._head = 0  # index of the oldest item
        self._count = 0
        self.dropped = 0
        self.sent = 0

    def __len__(self):
        return self._count

    @property
    def capacity(self):
        return len(self._slots)

    def push(self, item):
        capacity = len(self._slots)
        if self._count == capacity:
            self._slots[self._head] = None
            self._head = (self._head + 1) % capacity
            self._count -= 1
            self.dropped += 1
        self._slots[(self._head + self._count) % capacity] = item
        self._count += 1

    def peek(self):
        """The oldest item, kept until pop(); None when empty."""
        return self._slots[self._head] if self._count else None

    def pop(self):
        if not self._count:
            return None
        item = self._slots[self._head]
        self._slots[self._head] = None
        self._head = (self._head + 1) % len(self._slots)
        self._count -= 1
        self.sent += 1
        return item
