"""Request-rate limits per reader token and per client address.

A sliding window of request times per key, in this process's memory. With
several workers each keeps its own window, so the effective limit is the
configured one times the number of workers; a deployment behind a reverse
proxy sets the global limit there as well (see the instructor guide).
"""
import collections
import threading
import time


class SlidingWindow:
    def __init__(self, limit, seconds=60.0, clock=time.monotonic):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        self.limit, self.seconds, self.clock = int(limit), float(seconds), clock
        self._hits = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def allow(self, key):
        """Record one request for ``key``; False when the key is over its limit."""
        now = self.clock()
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - self.seconds:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            if len(self._hits) > 100_000:  # forget idle keys
                for stale in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.seconds]:
                    del self._hits[stale]
            return True

    def retry_after(self, key):
        with self._lock:
            hits = self._hits.get(key)
            return max(1, int(hits[0] + self.seconds - self.clock()) + 1) if hits else 1
