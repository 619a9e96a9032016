"""Zeros without bandwidth: a file grown far past its data (`truncate -s 32G`, `qemu-img
create -f raw`, a sparse disk) is committed with its all-zero windows copied
server-side (UploadPartCopy) from an object of zeros the mount keeps under its prefix,
so growing a file costs requests, not the upload of its zeros.

The object, PREFIX/.s3pvefs-zeros (namespace/keys.py ZEROS_NAME), is hidden from listings and `s3pvefs ls`. Each
mount writes it itself the first time it needs it (an object found there is not
trusted to hold zeros): one PUT of SEED bytes of zeros, then, when a copy needs more,
a multipart upload of copies of itself until it is large enough (each round doubles
it at most fourfold, every byte copied server-side). Its ETag is remembered; a copy
from it carries x-amz-copy-source-if-match, so an object replaced meanwhile by another
tool fails the commit (EIO, the data kept) instead of copying its bytes into a file.
"""

from __future__ import annotations

import trio

from s3pvefs.config import WriteConfig
from s3pvefs.store.base import ObjectStore
from s3pvefs.write.uploader import multipart

SEED = 8 << 20  # bytes PUT once; every larger size is built from copies of it
MAX_COPY = 5 << 30  # S3's largest UploadPartCopy
ONE_PART_AT_A_TIME = WriteConfig(upload_concurrency=1)  # a build happens once per mount: no hurry


class Zeros:
    def __init__(self, store: ObjectStore, key: str):
        self._store, self.key = store, key
        self.size = 0  # what this mount wrote there (0: not yet)
        self.etag: str | None = None
        self._lock = trio.Lock()

    async def at_least(self, n: int) -> tuple[str, str]:
        """(key, etag) of an object of at least n zero bytes (n <= MAX_COPY)."""
        async with self._lock:
            if self.size == 0:
                await self._store.put(self.key, bytes(SEED), {})
                self.size = SEED
                self.etag = getattr(await self._store.head(self.key), "etag", None)

            async def copy(upload: str, number: int, start: int, end: int) -> str:  # a part: the object so far
                return await self._store.upload_part_copy(self.key, upload, number, self.key, 0, end - start,
                                                          src_etag=self.etag)

            while self.size < n:
                want = min(MAX_COPY, max(n, 2 * self.size), 4 * self.size)
                ranges = [(number, start, min(start + self.size, want))
                          for number, start in enumerate(range(0, want, self.size), 1)]
                # aborted if it fails, or if the commit that wanted it is stopped (its file removed)
                await multipart(self._store, self.key, {}, ranges, ONE_PART_AT_A_TIME, copy)
                self.size = want
                self.etag = getattr(await self._store.head(self.key), "etag", None)
            return self.key, self.etag or ""
