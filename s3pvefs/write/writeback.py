"""Committing a sparse-cached file: send what changed, copy the rest server-side.

The file is cut into aligned windows of one part size (parts.part_size_for, so the
plan never passes 10,000 parts). A window wholly below base_end that holds no
dirty byte is the base object's: it becomes (merged with its unchanged neighbours)
an UploadPartCopy of the object at the same key, and no byte of it passes through
this host. Every other window is sent: its bytes come from the local cache, from
the base (a ranged GET, for the parts of a window a write did not cover) or are
zeros (holes). Rewriting 1 MiB in the middle of a 4 GiB disk therefore sends one
or two 8 MiB parts and copies the rest.

A small file (up to multipart_threshold) is one PUT of the assembled bytes.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import trio

from s3pvefs.config import WriteConfig
from s3pvefs.store.base import ObjectStore
from s3pvefs.write.extents import Extents
from s3pvefs.write.parts import MAX_PART, part_size_for
from s3pvefs.write.sparse import SparseFile
from s3pvefs.write.uploader import COPY_PART, multipart

COPY, SEND = "copy", "send"


def plan_commit(size: int, base_end: int, dirty: Extents, window: int,
                copy_part: int = COPY_PART) -> list[tuple[str, int, int]]:
    """[(COPY or SEND, start, end)] covering [0, size) in order; copies of unchanged
    neighbouring windows merge up to copy_part (a multiple of window)."""
    plan: list[tuple[str, int, int]] = []
    for start in range(0, size, window):
        end = min(start + window, size)
        kind = COPY if end <= base_end and not dirty.touches(start, end) else SEND
        if kind == COPY and plan and plan[-1][0] == COPY and end - plan[-1][1] <= copy_part:
            plan[-1] = (COPY, plan[-1][1], end)
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

    async def read(self, start: int, end: int) -> bytes:
        s = self.sparse
        gaps = s.valid.gaps(start, min(end, s.base_end))
        base = b""
        if gaps:  # one GET over all of them: scattered 4 KiB writes leave many small gaps
            first = gaps[0][0]
            base = await self.fetch_base(first, gaps[-1][1])
            self.fetched += len(base)
        out = bytearray(await trio.to_thread.run_sync(s.read_local, start, end - start))
        for gs, ge in gaps:
            out[gs - start:ge - start] = base[gs - first:ge - first]
        return bytes(out)


async def upload_sparse(store: ObjectStore, key: str, sparse: SparseFile, dirty: Extents,
                        metadata: dict[str, str], cfg: WriteConfig,
                        fetch_base: Callable[[int, int], Awaitable[bytes]]) -> str | None:
    """Write the file as the cache has it to key; the new ETag when one PUT did it."""
    size = sparse.size
    assembler = Assembler(sparse, fetch_base)
    if size <= cfg.multipart_threshold:
        return await store.put(key, await assembler.read(0, size) if size else b"", metadata)
    window = part_size_for(size, cfg.min_part_size)
    copy_part = window if cfg.uniform_parts else max(window, COPY_PART // window * window)
    base_end = sparse.base_end if sparse.base_etag is not None or sparse.base_end == 0 else 0
    plan = plan_commit(size, base_end, dirty, window, min(copy_part, MAX_PART))
    kinds = {start: kind for kind, start, _ in plan}

    async def send(upload_id: str, n: int, start: int, end: int) -> str:
        if kinds[start] == COPY:
            return await store.upload_part_copy(key, upload_id, n, key, start, end)
        return await store.upload_part(key, upload_id, n, await assembler.read(start, end))

    await multipart(store, key, metadata, [(i + 1, s, e) for i, (_, s, e) in enumerate(plan)], cfg, send)
    return None
