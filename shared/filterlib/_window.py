# ESPHome's sliding window, the base of median, quantile, min, max and the moving average.
from shared.filters import Filter


class _Window(Filter):
    """ESPHome's sliding window: keep the last window_size values; every send_every values emit
    compute() over the non-NaN ones (NaN if none), the first time after send_first_at values."""

    def __init__(self, window_size, send_every, send_first_at):
        # Preallocated lists, not array('f'): reading an array element boxes a new float on the heap,
        # while a list holds the float objects that came in, so sorting them allocates nothing.
        self.window = [0.0] * window_size
        self.scratch = [0.0] * window_size
        self.size = window_size
        self.count = 0
        self.head = 0
        self.send_every = send_every
        self.send_at = send_every - send_first_at

    def process(self, value, now):
        self.window[self.head] = value
        self.head = (self.head + 1) % self.size
        if self.count < self.size:
            self.count += 1
        self.send_at += 1
        if self.send_at < self.send_every:
            return None
        self.send_at = 0
        return self.compute()

    def _finite_into_scratch(self):
        n = 0
        window, scratch = self.window, self.scratch
        for i in range(self.count):
            v = window[i]
            if v == v:
                scratch[n] = v
                n += 1
        return n

    def _sorted_scratch(self):
        n = self._finite_into_scratch()
        scratch = self.scratch
        for i in range(1, n):  # insertion sort in place: windows are small and this allocates nothing
            v = scratch[i]
            j = i - 1
            while j >= 0 and scratch[j] > v:
                scratch[j + 1] = scratch[j]
                j -= 1
            scratch[j + 1] = v
        return n
