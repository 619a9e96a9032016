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
from typing import Protocol

import trio

from s3pvefs.errors import FsError, StoreError
from s3pvefs.write.sparse import SparseFile

log = logging.getLogger(__name__)


class CacheHolder(Protocol):
    """A file with a write-back cache, as the space sees it (fs/filedata.py)."""

    path: str | None
    cache: SparseFile | None

    async def write_back(self) -> None:
        """Commit now, so that its dirty data becomes clean (droppable)."""


class CacheSpace:
    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.holders: set[CacheHolder] = set()
        self._lock = trio.Lock()
        self.evicted = 0  # bytes of clean data dropped, for status
        self.write_backs = 0

    def track(self, holder: CacheHolder) -> None:
        def changed(delta: int) -> None:
            self.used += delta
        holder.cache.on_change = changed
        self.used += holder.cache.local_bytes
        self.holders.add(holder)

    def untrack(self, holder: CacheHolder) -> None:
        self.holders.discard(holder)

    def reserve(self, n: int) -> None:
        """Local disk taken by something else than a cache (a spill file of kept data)."""
        self.used += n

    def give_back(self, n: int) -> None:
        self.used -= n

    def _caches(self) -> list[tuple[CacheHolder, SparseFile]]:
        return [(h, h.cache) for h in self.holders if h.cache is not None and h.cache.fd >= 0]

    async def make_room(self, wanted: int) -> None:
        if self.used + wanted <= self.budget:
            return
        async with self._lock:
            self._evict_clean(wanted)
            while self.used + wanted > self.budget:
                victims = [(h, c) for h, c in self._caches() if c.dirty_bytes]
                if not victims:
                    return  # one request larger than the budget: let it through
                holder, cache = max(victims, key=lambda hc: hc[1].dirty_bytes)
                log.info("cache over its %d-byte budget: writing back %s (%d dirty bytes)",
                         self.budget, holder.path, cache.dirty_bytes)
                self.write_backs += 1
                before = cache.dirty_bytes
                try:
                    await holder.write_back()
                except (FsError, StoreError) as e:
                    raise FsError(f"local cache full and writing back {holder.path} failed: {e}",
                                  err=errno.ENOSPC) from None
                if cache.fd >= 0:
                    self.evicted += cache.evict_clean()
                    if cache.dirty_bytes >= before:  # nothing could be sent (an unlinked file's)
                        raise FsError(f"local cache full of data of {holder.path} that cannot be committed",
                                      err=errno.ENOSPC)
                    await trio.sleep(0)

    def _evict_clean(self, wanted: int) -> None:
        for _, cache in sorted(self._caches(), key=lambda hc: hc[1].last_used):
            if self.used + wanted <= self.budget:
                return
            self.evicted += cache.evict_clean()
