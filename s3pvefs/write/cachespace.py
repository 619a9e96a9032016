"""The disk budget of the sparse write-back caches of one mount.

Every SparseFile reports the bytes it holds locally. Before a file takes more,
``make_room`` brings the total under the budget: first by dropping clean data
(least recently used files first: it is in S3, a read fetches it again), then by
writing back the file with the most dirty data (a commit, as fsync does) and
dropping what became clean. A writer waits meanwhile; one commit runs at a time.
If S3 refuses the write-back, the writer gets ENOSPC: the cache is full of data
S3 has not taken, and nothing is dropped.
"""

from __future__ import annotations

import errno
import logging
from typing import Awaitable, Callable

import trio

from s3pvefs.errors import FsError, StoreError
from s3pvefs.write.sparse import SparseFile

log = logging.getLogger(__name__)


class CacheSpace:
    def __init__(self, budget: int, write_back: Callable[[SparseFile], Awaitable[None]]):
        self.budget = budget
        self.used = 0
        self.files: set[SparseFile] = set()
        self._write_back = write_back
        self._lock = trio.Lock()
        self.evicted = 0  # bytes of clean data dropped, for status
        self.write_backs = 0

    def track(self, sparse: SparseFile) -> None:
        def changed(delta: int) -> None:
            self.used += delta
        sparse.on_change = changed
        self.used += sparse.local_bytes
        self.files.add(sparse)

    def untrack(self, sparse: SparseFile) -> None:
        self.files.discard(sparse)

    async def make_room(self, sparse: SparseFile, wanted: int) -> None:
        if self.used + wanted <= self.budget:
            return
        async with self._lock:
            self._evict_clean(wanted)
            while self.used + wanted > self.budget:
                victims = [f for f in self.files if f.fd >= 0 and f.dirty_bytes]
                if not victims:
                    return  # one request larger than the budget: let it through
                victim = max(victims, key=lambda f: f.dirty_bytes)
                log.info("cache over its %d-byte budget: writing back %s (%d dirty bytes)",
                         self.budget, victim.path, victim.dirty_bytes)
                self.write_backs += 1
                try:
                    await self._write_back(victim)
                except (FsError, StoreError) as e:
                    raise FsError(f"local cache full and writing back {victim.path} failed: {e}",
                                  err=errno.ENOSPC) from None
                self.evicted += victim.evict_clean()
                if victim.dirty_bytes:  # rewritten while it was being sent: go round again
                    await trio.sleep(0)

    def _evict_clean(self, wanted: int) -> None:
        for f in sorted(self.files, key=lambda f: f.last_used):
            if self.used + wanted <= self.budget:
                return
            if f.fd >= 0:
                self.evicted += f.evict_clean()
