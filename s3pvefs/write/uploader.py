"""Multipart uploads and server-side copies of whole objects.

multipart: parts from a plan, at most upload_concurrency (so that many part
buffers) in flight. Any failure aborts the upload: no partial object, no
incomplete upload left behind.

copy_object: CopyObject up to 5 GiB, parallel UploadPartCopy above; no data passes
through this process.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from s3pvefs.config import WriteConfig
from s3pvefs.errors import StoreError, single_error
from s3pvefs.namespace.stat import format_time, last_modified_ns
from s3pvefs.store.base import ObjectStore, PartEtag
from s3pvefs.write.parts import MAX_SINGLE_COPY, part_ranges, part_size_for

log = logging.getLogger(__name__)

# UploadPartCopy moves no data through us, so big parts only save requests.
COPY_PART = 256 << 20


async def multipart(store: ObjectStore, key: str, metadata: dict[str, str],
                    ranges: list[tuple[int, int, int]], cfg: WriteConfig,
                    send_part: Callable[[str, int, int, int], Awaitable[str]]) -> None:
    """Run a multipart upload of parts (number, start, end), each produced by
    send_part(upload_id, number, start, end)."""
    upload_id = await store.create_multipart(key, metadata)
    etags: list[PartEtag] = []
    # Taken before a part starts, given back when it is stored: at most
    # upload_concurrency parts (and their buffers) exist at once.
    slots = trio.Semaphore(cfg.upload_concurrency)

    async def one(n: int, start: int, end: int) -> None:
        try:
            etags.append(PartEtag(n, await send_part(upload_id, n, start, end)))
        finally:
            slots.release()

    try:
        with single_error():
            async with trio.open_nursery() as nursery:
                for n, start, end in ranges:
                    await slots.acquire()
                    nursery.start_soon(one, n, start, end)
        # S3 wants the list in ascending order; parts finish in any order
        await store.complete_multipart(key, upload_id, sorted(etags, key=lambda p: p.number))
    except BaseException:
        with trio.CancelScope(shield=True):
            try:
                await store.abort_multipart(key, upload_id)
            except StoreError as e:
                log.warning("could not abort multipart upload of %s: %s", key, e)
        raise


async def copy_object(store: ObjectStore, src: str, dst: str, size: int,
                      metadata: dict[str, str] | None, cfg: WriteConfig) -> None:
    """Server-side copy; metadata None keeps the source's, and its mtime: a source with
    no mtime header (what a multipart upload of a streamed file completes: its
    LastModified is its mtime; or another tool's object) gives the copy one, or the
    file's mtime would become the time of the copy. A server that cannot CopyObject the
    source (Ceph RGW before 17 answers NotImplemented for every encrypted object) gets
    the same copy as UploadPartCopy parts, still server-side."""
    info = await store.head(src) if metadata is None or size == 0 else None
    content_type = info.content_type if info is not None else None
    if metadata is None and info is not None and info.metadata is not None and "mtime" not in info.metadata:
        metadata = {**info.metadata, "mtime": format_time(last_modified_ns(info))}
    if size <= MAX_SINGLE_COPY:
        try:
            await store.copy(src, dst, metadata, content_type)
            return
        except StoreError as e:
            if e.code not in ("NotImplemented", "501"):
                raise
            log.info("CopyObject of %s refused (%s): copying it by UploadPartCopy", src, e.code)
    if metadata is None:
        metadata = dict(info.metadata or {}) if info else {}
    if size == 0:  # no part to copy
        await store.put(dst, b"", metadata, info.content_type if info else None)
        return

    async def send(upload_id: str, n: int, start: int, end: int) -> str:
        return await store.upload_part_copy(dst, upload_id, n, src, start, end)

    part = part_size_for(size, max(cfg.min_part_size, COPY_PART))
    await multipart(store, dst, metadata, part_ranges(size, part), cfg, send)
