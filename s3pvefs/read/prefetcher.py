"""Read-ahead for one open handle of a committed object.

Sequential reads are served from chunk_size chunks fetched ahead by parallel ranged
GETs; the number of chunks ahead (the window) doubles on each new chunk up to
max_readahead_chunks, so memory per handle is at most (max_readahead_chunks + 1)
chunks. Eager read-ahead (read.eager_readahead; far servers) starts a sequential
reader with the whole window and counts only GETs in flight in it, holding up to half
a window more of chunks that arrived early: (1.5 * max_readahead_chunks + 1) chunks.
Chunks fetched ahead are charged to the mount's read budget
(read.readahead_budget): when many files are read at once, read-ahead shrinks
instead of memory growing; the chunk a reader waits for is always fetched. A
read elsewhere resets the window and fetches just the bytes asked for: a 4 KiB
read in the middle of a large object is one small GET.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import trio

from s3pvefs.config import ReadConfig
from s3pvefs.errors import FsError
from s3pvefs.store.base import ObjectStore
from s3pvefs.write.budget import MemoryBudget


# A sequential reader drops about one chunk for each it fetches: two spare buffers are
# enough to reuse, and uncharged memory stays small (the budget counts chunks in use).
_KEEP_FREE = 2


@dataclass(eq=False)
class _Chunk:
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | memoryview = b""
    buffer: bytearray | None = None  # what data views, given back for reuse when dropped
    error: Exception | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    charged: int = 0  # bytes charged to the read budget
    readers: int = 0  # reads using it now: dropped meanwhile, it is let go when they end
    dropped: bool = False


class Prefetcher:
    """Reads of one version of the object: every GET carries the ETag its size came
    from (If-Match, when known), so bytes of another version are never mixed in: the
    read raises errors.Changed instead."""

    def __init__(self, store: ObjectStore, key: Callable[[], str], size: int, cfg: ReadConfig,
                 nursery: trio.Nursery, budget: MemoryBudget | None = None, etag: str | None = None):
        self._store, self._key, self.size, self._cfg = store, key, size, cfg
        self.etag = etag
        self.body: bytes | None = None  # the whole object, read with its headers (smallbodies.py)
        self._budget = budget
        self._nursery = nursery
        self._chunks: dict[int, _Chunk] = {}
        self._next = 0  # offset where a sequential read would continue
        self._window = 1
        self._current = -1  # chunk index of the last sequential read
        self._eager = cfg.eager_readahead == "yes"  # the daemon resolves auto (config.py)
        self._kernel_read_ahead = cfg.kernel_readahead or 128 * 1024  # the size of its reads ahead
        # Chunk buffers of dropped chunks, filled again by the next GETs: fresh 8 MiB
        # buffers cost page faults and zeroing, a third of the CPU of a sequential read.
        self._free: list[bytearray] = []
        self._closed = False
        # A store that fills our buffers (S3Store) writes each GET into one we reuse.
        # Through the CRT plane it receives it into a buffer of the CRT's own pool first:
        # a chunk is held twice there, as a part upload is, and counts twice. The pool
        # also keeps memory in blocks of 16 buffers while any is in use: counted once, 16
        # readers of the soak grew RSS 100 MiB past the budget.
        self._fills_buffers = getattr(store, "fills_buffers", False)
        self._copies = 2 if getattr(store, "reads_held_twice", False) else 1

    async def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        if self.body is not None:
            return self.body[offset:end]
        c = self._cfg.chunk_size
        first, last = offset // c, (end - 1) // c
        if offset != self._next and not all(i in self._chunks for i in range(first, last + 1)):
            # Random access: forget the window, fetch only what was asked for.
            self._drop(lambda i: True)
            self._window = 1
            self._next = end
            return await self._store.get_range(self._key(), offset, end, self.etag)
        if first != self._current:  # entered a new chunk sequentially: look further ahead
            if self._eager and self._current < 0 and offset == 0 and size >= self._kernel_read_ahead:
                # The kernel reads ahead from the start: a sequential reader. Far away the
                # first GETs wait for new connections' windows to open: a full window at
                # once read 1 GiB 30 ms away at 355-368 MiB/s, doubling from 2 at 323-351.
                self._window = self._cfg.max_readahead_chunks
            else:
                self._window = min(self._window * 2, self._cfg.max_readahead_chunks)
            self._current = first
        self._drop(lambda i: i < first)
        self._read_ahead(first, last)
        # Another read (the kernel has several in flight) may drop these chunks while this
        # one waits: a chunk in use is neither cancelled nor its buffer refilled until
        # every read using it has ended (a refilled buffer would hand it other bytes).
        using = [self._chunks[i] for i in range(first, last + 1)]
        for chunk in using:
            chunk.readers += 1
        try:
            parts = []
            for i, chunk in enumerate(using, first):
                await chunk.done.wait()
                if chunk.error is not None:
                    self._drop(lambda j: self._chunks.get(j) is chunk)
                    raise chunk.error
                lo = max(offset, i * c) - i * c
                hi = min(end, (i + 1) * c) - i * c
                parts.append(memoryview(chunk.data)[lo:hi])
            self._next = end
            # One chunk: a view of it, no copy (pyfuse3 sends any buffer to the kernel as
            # is, before any other task runs: the buffer is not refilled before that).
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            for chunk in using:
                chunk.readers -= 1
                if chunk.dropped and not chunk.readers:
                    self._let_go(chunk)

    def _read_ahead(self, first: int, last: int) -> None:
        """Start the GETs of chunks first..last (the read waits for them), then of the
        window's chunks after them.

        Eager, the window counts GETs in flight: GETs end out of order, and while the
        reader waits for a slow one, those behind it that already arrived make room for
        new ones, up to half a window of chunks held beyond it. Counting chunks ahead
        left 6.4 GETs of 8 in flight on average 30 ms away (docs/PERFORMANCE.md)."""
        last_chunk = (self.size - 1) // self._cfg.chunk_size
        held_ahead = self._window + (self._window // 2 if self._eager else 0)
        in_flight = 0
        for i in range(first, last_chunk + 1):
            chunk = self._chunks.get(i)
            if i <= last:
                if chunk is None:
                    self._start(i, needed=True)
            elif in_flight >= self._window or i - last > held_ahead:
                return
            elif chunk is None:
                if not self._start(i, needed=False):
                    return  # the read budget is used up: no further read-ahead for now
                in_flight += 1
            elif not (self._eager and chunk.done.is_set()):
                in_flight += 1

    def _start(self, index: int, needed: bool) -> bool:
        c = self._cfg.chunk_size
        start, end = index * c, min((index + 1) * c, self.size)
        chunk = _Chunk()
        if self._budget is not None:
            cost = (end - start) * self._copies
            if self._budget.try_acquire(cost):
                chunk.charged = cost
            elif not needed:
                return False
        self._chunks[index] = chunk
        self._nursery.start_soon(self._fetch, chunk, start, end)
        return True

    async def _fetch(self, chunk: _Chunk, start: int, end: int) -> None:
        buffer = None
        if self._fills_buffers:  # else it brings buffers of its own
            buffer = self._free.pop() if self._free else bytearray(self._cfg.chunk_size)
        with chunk.scope:
            try:
                chunk.data = await self._store.get_range(self._key(), start, end, self.etag, into=buffer)
                chunk.buffer = buffer  # only a GET that ended is done with it
            except FsError as e:
                chunk.error = e
        if chunk.scope.cancelled_caught and chunk.error is None:
            chunk.error = FsError("read-ahead cancelled")
        chunk.done.set()
        if self._eager and chunk.error is None and not chunk.dropped and self._current in self._chunks:
            # A GET ended while the reader waits for an earlier chunk: keep the window full
            # (only ahead: a chunk the reader's GET failed for is fetched again when read).
            self._read_ahead(self._current, self._current)

    def _drop(self, which: Callable[[int], bool]) -> None:
        for i in [i for i in self._chunks if which(i)]:
            chunk = self._chunks.pop(i)
            chunk.dropped = True
            if not chunk.readers:
                self._let_go(chunk)

    def _let_go(self, chunk: _Chunk) -> None:
        chunk.scope.cancel()
        if chunk.buffer is not None and len(self._free) < _KEEP_FREE and not self._closed:
            # Nothing else views it: a read's view went to the kernel before this.
            chunk.data, buffer, chunk.buffer = b"", chunk.buffer, None
            self._free.append(buffer)
        if chunk.charged and self._budget is not None:
            self._budget.release(chunk.charged)
            chunk.charged = 0

    def close(self) -> None:
        self._closed = True
        self._drop(lambda i: True)
        self._free.clear()
