"""Committing a sparse-cached file: send what changed, copy the rest server-side.

The file is cut into aligned windows of one part size (parts.part_size_for, so the
plan never passes 10,000 parts). A window wholly below base_end that holds no
dirty byte is the base object's: it becomes (merged with its unchanged neighbours)
an UploadPartCopy of the object at the same key, and no byte of it passes through
this host. Every other window is sent: its bytes come from the local cache, from
the base (a ranged GET, for the parts of a window a write did not cover) or are
zeros (holes). Rewriting 1 MiB in the middle of a 4 GiB disk therefore sends one
or two 8 MiB parts and copies the rest.

A file with no base worth copying (new, or under two windows) up to
multipart_threshold is one PUT of the assembled bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Awaitable, Callable

import trio

from s3pvefs.config import WriteConfig
from s3pvefs.store.base import ObjectStore
from s3pvefs.write.budget import MemoryBudget
from s3pvefs.write.extents import Extents
from s3pvefs.write.parts import MAX_PART, part_size_for
from s3pvefs.write.sparse import SparseFile
from s3pvefs.write.uploader import COPY_PART, multipart
from s3pvefs.write.zeros import Zeros

ZERO_PART = 1 << 30  # bytes of zeros per UploadPartCopy: 1 TiB in 1,024 parts

COPY, SEND, ZERO = "copy", "send", "zero"


@dataclasses.dataclass
class CommitProgress:
    """A commit under way, as `s3pvefs status` shows it: bytes of the parts started
    (sent, or copied server-side), bytes of the parts S3 has stored, parts in flight:
    a long commit (a 1 TiB growth is minutes of server-side copies) shows how far it got."""
    sent: int = 0
    stored: int = 0
    parts_in_flight: int = 0

    @contextlib.asynccontextmanager
    async def part(self, n: int):
        self.sent += n
        self.parts_in_flight += 1
        try:
            yield
        except BaseException:
            self.sent -= n
            raise
        else:
            self.stored += n
        finally:
            self.parts_in_flight -= 1


def plan_commit(size: int, base_end: int, dirty: Extents, window: int,
                copy_part: int = COPY_PART, local: Extents | None = None,
                zero_part: int = 0, zero_from: int = 0) -> list[tuple[str, int, int]]:
    """[(COPY, SEND or ZERO, start, end)] covering [0, size) in order. COPY: the base's
    unchanged bytes below base_end (0: none copied); ZERO (when zero_part): a window
    from zero_from on (where the base object ends) that holds nothing local (a hole:
    zeros); SEND: the rest. Neighbouring COPY windows merge up to
    copy_part, ZERO windows up to zero_part (multiples of window)."""
    plan: list[tuple[str, int, int]] = []
    for start in range(0, size, window):
        end = min(start + window, size)
        if end <= base_end and not dirty.touches(start, end):
            kind, limit = COPY, copy_part
        elif zero_part and start >= max(base_end, zero_from) and local is not None and not local.touches(start, end):
            kind, limit = ZERO, zero_part
        else:
            kind, limit = SEND, 0
        if kind != SEND and plan and plan[-1][0] == kind and end - plan[-1][1] <= limit:
            plan[-1] = (kind, plan[-1][1], end)
        else:
            plan.append((kind, start, end))
    return plan or [(SEND, 0, 0)]


class Assembler:
    """A window's bytes: local ranges from the cache file (worker thread), base
    bytes not cached by ranged GETs, zeros past base_end."""

    def __init__(self, sparse: SparseFile, fetch_base: Callable[[int, int], Awaitable[bytes]]):
        self.sparse = sparse
        self.fetch_base = fetch_base
        self.fetched = 0  # base bytes read from S3 to complete windows

    async def read(self, start: int, end: int) -> bytearray:
        """One buffer of the window (plus, while it is filled, the base bytes fetched)."""
        s = self.sparse
        out = bytearray(end - start)  # zeros: holes stay as they are
        gaps = s.valid.gaps(start, min(end, s.base_end))
        if gaps:  # one GET over all of them: scattered 4 KiB writes leave many small gaps
            first = gaps[0][0]
            base = await self.fetch_base(first, gaps[-1][1])
            self.fetched += len(base)
            for gs, ge in gaps:
                out[gs - start:ge - start] = memoryview(base)[gs - first:ge - first]
            del base
        view = memoryview(out)
        pieces = s.valid.overlapping(start, end)
        await trio.to_thread.run_sync(
            lambda: [s.read_into(view[vs - start:ve - start], vs) for vs, ve in pieces])
        return out


@contextlib.asynccontextmanager
async def _charged(budget: MemoryBudget | None, n: int):
    """A window's buffer counts in the mount's memory budget while it is being sent."""
    if budget is None:
        yield
        return
    await budget.acquire(n)
    budget.start_sending(n)
    try:
        yield
    finally:
        budget.done_sending(n)


async def upload_sparse(store: ObjectStore, key: str, sparse: SparseFile, dirty: Extents,
                        metadata: dict[str, str], cfg: WriteConfig,
                        fetch_base: Callable[[int, int], Awaitable[bytes]],
                        budget: MemoryBudget | None = None, zeros: Zeros | None = None,
                        progress: CommitProgress | None = None) -> str | None:
    """Write the file as the cache has it to key; the new ETag when one PUT did it.
    With zeros, holes past the base are copied from its object of zeros. progress
    counts the parts as they go."""
    size = sparse.size
    progress = progress or CommitProgress()
    assembler = Assembler(sparse, fetch_base)
    window = part_size_for(size, cfg.min_part_size)
    has_base = sparse.base_end >= 2 * window and (sparse.base_etag is not None)
    holes = zeros is not None and not cfg.uniform_parts and \
        size - max(sparse.base_end, max((e for _, e in sparse.valid), default=0)) >= 2 * window
    if size <= cfg.multipart_threshold and not has_base and not holes:  # nothing worth copying: one PUT
        async with _charged(budget, size), progress.part(size):
            return await store.put(key, await assembler.read(0, size) if size else b"", metadata)
    copy_part = window if cfg.uniform_parts else max(window, COPY_PART // window * window)
    base_end = sparse.base_end if has_base else 0
    zero_part = max(window, ZERO_PART // window * window) if holes else 0
    plan = plan_commit(size, base_end, dirty, window, min(copy_part, MAX_PART), sparse.valid, zero_part,
                       zero_from=sparse.base_end)
    kinds = {start: kind for kind, start, _ in plan}
    if any(kind == ZERO for kind in kinds.values()):
        zeros_key, zeros_etag = await zeros.at_least(max(e - s for k, s, e in plan if k == ZERO))

    async def send(upload_id: str, n: int, start: int, end: int) -> str:
        async with progress.part(end - start):
            return await send_part(upload_id, n, start, end)

    async def send_part(upload_id: str, n: int, start: int, end: int) -> str:
        if kinds[start] == COPY:
            return await store.upload_part_copy(key, upload_id, n, key, start, end)
        if kinds[start] == ZERO:
            return await store.upload_part_copy(key, upload_id, n, zeros_key, 0, end - start, src_etag=zeros_etag)
        async with _charged(budget, end - start):
            return await store.upload_part(key, upload_id, n, await assembler.read(start, end))

    await multipart(store, key, metadata, [(i + 1, s, e) for i, (_, s, e) in enumerate(plan)], cfg, send)
    return None
