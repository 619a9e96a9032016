"""Moving objects for rename: a file's object is copied server-side to its new key and
the old one deleted; a directory moves every object under its prefix. Not atomic;
nothing is deleted before its copy exists. (A file this mount holds something of
moves itself: FileData.move_to.)"""

from __future__ import annotations

import trio

from s3pvefs.config import WriteConfig
from s3pvefs.errors import single_error
from s3pvefs.namespace.keys import DIR_CONTENT_TYPE
from s3pvefs.namespace.resolver import Resolver
from s3pvefs.namespace.stat import encode_metadata, implicit_dir, now_ns
from s3pvefs.store.base import ObjectStore
from s3pvefs.write.uploader import copy_object

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


async def move_object(store: ObjectStore, src_key: str, dst_key: str, size: int, cfg: WriteConfig) -> None:
    """CopyObject (UploadPartCopy past 5 GiB) with the source's metadata, then DELETE."""
    await store.refuse_if_locked(src_key)  # Object Lock: refused before anything is copied
    await copy_object(store, src_key, dst_key, size, None, cfg)
    await store.delete(src_key)


async def move_tree(resolver: Resolver, src_path: str, dst_path: str, cfg: WriteConfig) -> None:
    """Copy every object under a directory to its new prefix, then delete the
    originals. Not atomic: a failure midway leaves both trees partly present, and
    nothing is deleted before its copy exists."""
    store, keys = resolver.store, resolver.keys
    src_prefix, dst_prefix = keys.dir_prefix(src_path), keys.dir_prefix(dst_path)
    objects = await resolver.objects_under(src_path)
    if not any(o.key == src_prefix for o in objects):  # keep an empty/implicit dir visible
        await store.put(dst_prefix, b"", encode_metadata(implicit_dir(resolver.defaults, now_ns())),
                        DIR_CONTENT_TYPE)
    limiter = trio.CapacityLimiter(cfg.upload_concurrency * 2)

    async def check_one(o):  # Object Lock: every object movable, or nothing is copied
        async with limiter:
            await store.refuse_if_locked(o.key)

    async def copy_one(o):
        async with limiter:
            dst = dst_prefix + o.key[len(src_prefix):]
            await copy_object(store, o.key, dst, o.size, None, cfg)
            resolver.hidden.unhide(dst)

    async def delete_one(o):
        async with limiter:
            await store.delete(o.key)

    for step in (check_one, copy_one, delete_one):
        with single_error():
            async with trio.open_nursery() as n:
                for o in objects:
                    n.start_soon(step, o)
