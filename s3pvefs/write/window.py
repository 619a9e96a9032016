"""How many parts of one streamed file are in flight: as many as fill the link.

A near server is filled by a few parts at once; a distant one needs more bytes in
flight (each part's upload waits round trips for TCP's window to open and for the
answer). The window starts at upload_concurrency and doubles, up to
max_upload_concurrency, while two things hold: the writer had to wait for a free slot
(the uploads, not the writer, are the limit), and the last doubling raised the
throughput by at least a tenth (measured over one window's worth of parts). Once a
doubling brings less, it stays. Memory stays bounded by memory_budget whatever the
window: every buffered byte is charged to it before it is taken.
"""

from __future__ import annotations

GAIN = 1.10  # a doubling must raise the throughput this much to be followed by another


class InflightWindow:
    def __init__(self, start: int, most: int):
        self.limit = max(1, start)
        self._most = max(self.limit, most)
        self._settled = self.limit >= self._most
        self._best = 0.0  # bytes/s seen at the previous limit
        self._waited = False
        self._since: float | None = None
        self._bytes = 0
        self._parts = 0

    def full(self, in_flight: int) -> bool:
        """Whether a new part must wait; a wait is remembered as the writer being held."""
        if in_flight >= self.limit:
            self._waited = True
            return True
        return False

    def started(self, now: float) -> None:
        if self._since is None:
            self._since = now

    def completed(self, nbytes: int, now: float) -> None:
        """A part was stored; every window's worth of parts, decide whether to grow."""
        if self._settled:
            return
        if self._since is None:
            self._since = now
        self._bytes += nbytes
        self._parts += 1
        if self._parts < self.limit:
            return
        rate = self._bytes / max(now - self._since, 1e-6)
        if self._waited and rate >= self._best * GAIN:
            self.limit = min(self._most, self.limit * 2)
            self._settled = self.limit >= self._most
        elif self._waited:
            self._settled = True  # more in flight bought nothing: the server or the CPU is the limit
        self._best = max(self._best, rate)
        self._since, self._bytes, self._parts, self._waited = now, 0, 0, False
