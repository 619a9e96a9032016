"""The mount-wide memory budget for streamed writes.

Every byte a writer hands over is charged here until S3 has stored the part that
holds it; a writer that would go over the limit waits (backpressure) until parts
finish. Waiting can only end if something is on its way to S3: when the whole
budget sits in the unfinished parts of idle files, the largest of them is sent
early as a shorter part (any part but the last may be 5 MiB..5 GiB). Only when
every holder is below S3's 5 MiB minimum (more than limit/5 MiB files written
at once) is the writer let through over the limit, logged once, never blocked
for ever.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

log = logging.getLogger(__name__)


class Holder(Protocol):
    """A streamed file as the budget sees it."""

    def buffered(self) -> int:
        """Bytes charged but not yet handed to a part upload."""

    def flush_early(self) -> bool:
        """Send the buffered bytes as a part now; False if it cannot."""


class MemoryBudget:
    def __init__(self, limit: int, copies: int = 1):
        """copies: how many times a part on its way to S3 is held in memory. 2 when the
        CRT carries parts: it sends from a copy of its own, kept until the answer; that
        copy is charged too (without waiting: the part is already cut), so writers wait
        sooner instead of the daemon growing past the budget."""
        self.limit = limit
        self._extra = max(copies, 1) - 1
        self.used = 0  # bytes charged: buffered plus parts being sent
        self.sending = 0  # of those, bytes in parts on their way to S3
        self.peak = 0
        self.holders: set[Holder] = set()
        self._changed = trio.Event()
        self._warned = False

    async def acquire(self, n: int) -> None:
        while self.used and self.used + n > self.limit:
            if self.sending == 0 and not self._flush_largest():
                if not self._warned:
                    log.warning("memory budget of %d bytes exceeded: %d files hold unsent tails "
                                "below S3's minimum part size", self.limit, len(self.holders))
                    self._warned = True
                break
            if self.sending:
                await self._wait()
        self.used += n
        self.peak = max(self.peak, self.used)

    def try_acquire(self, n: int) -> bool:
        """Charge n bytes if they fit now (read-ahead, which is optional)."""
        if self.used + n > self.limit:
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def start_sending(self, n: int) -> None:
        self.sending += n
        self.used += n * self._extra
        self.peak = max(self.peak, self.used)

    def done_sending(self, n: int) -> None:
        self.sending -= n
        self.release(n * (1 + self._extra))

    def stop_sending(self, n: int) -> None:
        """Bytes no longer on their way (S3 did not take them) but still held."""
        self.sending -= n
        self.release(n * self._extra)

    def _flush_largest(self) -> bool:
        for holder in sorted(self.holders, key=lambda h: h.buffered(), reverse=True):
            if holder.flush_early():
                return True
        return False

    async def _wait(self) -> None:
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
