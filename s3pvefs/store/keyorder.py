"""This mount's writes at one key, and its check-then-delete there, one at a time.

S3 has no conditional DELETE (not on Ceph 16, moto or most providers). The last close
of a file unlinked while open deletes its hidden object only if that object is still
the file's: a HEAD, then a DELETE. close(2) returns before the kernel's RELEASE is
handled, so the name may already be reused (a file created, renamed or linked there)
and its new object written between the HEAD and the DELETE, which would then remove
the new file. So every request that makes an object appear at a key (PUT, CopyObject,
CompleteMultipartUpload) and that HEAD-then-DELETE take the key's lock; everything
else passes straight through.
"""

from __future__ import annotations

import contextlib

import trio

from s3pvefs.store.base import ObjectStore


class KeyOrderedStore:
    def __init__(self, store: ObjectStore):
        self._store = store
        self._locks: dict[str, tuple[trio.Lock, int]] = {}  # key -> (lock, tasks holding or waiting)

    def __getattr__(self, name):  # every other request, and the store's attributes, as they are
        return getattr(self._store, name)

    @contextlib.asynccontextmanager
    async def _holding(self, key: str):
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or trio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def put(self, key, body, metadata, content_type=None):
        async with self._holding(key):
            return await self._store.put(key, body, metadata, content_type)

    async def copy(self, src, dst, metadata, content_type=None):
        async with self._holding(dst):
            return await self._store.copy(src, dst, metadata, content_type)

    async def complete_multipart(self, key, upload_id, parts):
        async with self._holding(key):
            return await self._store.complete_multipart(key, upload_id, parts)

    async def delete_if_unchanged(self, key: str, etag: str) -> None:
        """Delete the object at key if it is still the one with etag."""
        async with self._holding(key):
            info = await self._store.head(key)
            if info is not None and info.etag == etag:
                await self._store.delete(key)
