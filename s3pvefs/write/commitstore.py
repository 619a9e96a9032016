"""The object store as the write path sees it: commits that ride out outages, lost
answers that do not lose commits, and a record of every upload this daemon starts.

- Outages: a data request (a part, a PUT, a copy, CreateMultipartUpload,
  CompleteMultipartUpload) that fails for a reason that may pass (no answer,
  connection refused or reset, 5xx, throttling) is tried again with backoff for up
  to ``outage_patience`` seconds (10 minutes by default): a writer waits (its memory
  stays within memory_budget) instead of failing a backup in a short outage.
  ``waiting`` says since when, for `s3pvefs status`. Each attempt is still bounded
  by the request deadline, and metadata requests (lookups, listings) do not come
  here: they stay as fast as before.
- Lost answers: a Complete, PUT or copy whose answer never came may have taken
  effect (its retry then gets NoSuchUpload, or times out again). Before such a
  failure is believed, a HEAD asks what the key holds: the multipart ETag of exactly
  the parts sent, or the MD5 of the body sent, or the metadata sent -- then it is a
  commit like any other.
- A CreateMultipartUpload that had to be sent again may have left an upload behind
  (the first answer was lost): those at the same key started since are aborted.
- Every upload created is recorded on local disk (uploadlog.py) until it is
  completed or aborted, so the next mount after a crash aborts it at once.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from typing import Awaitable, Callable

import trio

from s3pvefs.errors import StoreError
from s3pvefs.store.base import ObjectStore, PartEtag
from s3pvefs.write.uploadlog import UploadLog

log = logging.getLogger(__name__)

# Codes of failures that may pass by themselves (besides StoreError.transient).
TRANSIENT_CODES = frozenset({"Network", "Timeout", "ShortRead", "SlowDown", "InternalError", "ServiceUnavailable",
                             "RequestTimeout", "Throttling", "ThrottlingException", "500", "502", "503", "504"})
OUTAGE_BACKOFF_CAP = 30.0  # seconds between tries while S3 is away


def transient(e: StoreError) -> bool:
    return e.transient or e.code in TRANSIENT_CODES


def multipart_etag(parts: list[PartEtag]) -> str:
    """The ETag S3 gives the object completed from these parts (MD5 of their MD5s)."""
    digests = b"".join(bytes.fromhex(p.etag) for p in sorted(parts, key=lambda p: p.number))
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"


class CommitStore:
    def __init__(self, store: ObjectStore, patience: float, uploads: UploadLog | None = None,
                 rand: Callable[[], float] = random.random):
        self._store = store
        self.patience = patience
        self.uploads = uploads
        self._rand = rand
        self.waiting: dict[int, tuple[float, str]] = {}  # request -> (epoch seconds since, what)
        self.lost_answers = 0  # commits found to have taken effect after all
        self.orphans_aborted = 0

    def __getattr__(self, name):  # head, get_range, delete, list_all...: as they are
        return getattr(self._store, name)

    def waiting_since(self) -> float | None:
        """Since when (epoch seconds) a data request has been waiting for S3; None: none is."""
        return min((since for since, _ in self.waiting.values()), default=None)

    async def _patiently(self, what: str, call: Callable[[], Awaitable]):
        token = object()
        first: float | None = None
        attempt = 0
        try:
            while True:
                try:
                    return await call()
                except StoreError as e:
                    if not transient(e):
                        raise
                    now = trio.current_time()
                    if first is None:
                        first = now
                        self.waiting[id(token)] = (time.time(), what)
                        log.warning("%s: %s; trying again for up to %.0f s (outage_patience)", what, e,
                                    self.patience)
                    if now - first >= self.patience:
                        raise StoreError(f"{e}; S3 did not take it for {now - first:.0f} s (outage_patience)",
                                         code=e.code, transient=True) from None
                    attempt += 1
                    delay = min(OUTAGE_BACKOFF_CAP, 0.5 * 2 ** min(attempt, 10)) * (0.5 + self._rand() / 2)
                    await trio.sleep(min(delay, first + self.patience - now))
        finally:
            if self.waiting.pop(id(token), None) is not None:
                log.info("%s: S3 answered again after %.0f s", what, trio.current_time() - first)

    async def _holds(self, key: str, etag: str | None = None, metadata: dict[str, str] | None = None) -> bool:
        """Whether the object at key is the one a request whose answer was lost meant."""
        try:
            info = await self._store.head(key)
        except StoreError:
            return False
        if info is None or (etag is not None and info.etag != etag):
            return False
        return metadata is None or {k.lower(): v for k, v in metadata.items()} == (info.metadata or {})

    # ------------------------------------------------------------------ uploads
    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        attempts = 0

        async def call():
            nonlocal attempts
            attempts += 1
            return await self._store.create_multipart(key, metadata)

        upload_id = await self._patiently(f"create_multipart {key}", call)
        if self.uploads is not None:
            self.uploads.started(key, upload_id)
        retried = getattr(self._store, "create_was_retried", None)
        if attempts > 1 or (retried is not None and retried(upload_id)):
            await self._abort_lost_creates(key, upload_id)
        return upload_id

    async def _abort_lost_creates(self, key: str, keep: str) -> None:
        """The create was sent more than once: an earlier one may have taken effect. Every
        other upload at exactly this key that this daemon does not know is aborted (by
        key, not by time: servers' Initiated times are not to be trusted; two nodes
        writing one key at once is not a safe use anyway, SEMANTICS.md)."""
        known = {r["upload_id"] for r in self.uploads.entries()} if self.uploads is not None else set()
        try:
            for u in await self._store.list_multipart(key):
                if u.key == key and u.upload_id != keep and u.upload_id not in known:
                    await self._store.abort_multipart(key, u.upload_id)
                    self.orphans_aborted += 1
                    log.warning("aborted upload %s of %s: made by a CreateMultipartUpload whose answer was lost",
                                u.upload_id, key)
        except StoreError as e:
            log.warning("could not look for uploads of %s left by a lost answer: %s", key, e)

    async def upload_part(self, key: str, upload_id: str, number: int, body) -> str:
        return await self._patiently(f"upload_part {key} #{number}",
                                     lambda: self._store.upload_part(key, upload_id, number, body))

    async def upload_part_copy(self, key: str, upload_id: str, number: int, src: str, start: int, end: int,
                               src_etag: str | None = None) -> str:
        return await self._patiently(f"upload_part_copy {key} #{number}", lambda: self._store.upload_part_copy(
            key, upload_id, number, src, start, end, src_etag=src_etag))

    async def complete_multipart(self, key: str, upload_id: str, parts: list[PartEtag]) -> None:
        try:
            await self._patiently(f"complete_multipart {key}",
                                  lambda: self._store.complete_multipart(key, upload_id, parts))
        except StoreError as e:
            if not await self._holds(key, etag=multipart_etag(parts)):
                raise
            self.lost_answers += 1
            log.warning("complete of %s failed (%s) but had taken effect: the object holds the parts sent", key, e)
        if self.uploads is not None:
            self.uploads.finished(upload_id)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self._store.abort_multipart(key, upload_id)
        except StoreError as e:
            if e.code != "NoSuchUpload":
                raise  # left in the record: the next mount aborts it
        if self.uploads is not None:
            self.uploads.finished(upload_id)

    # ------------------------------------------------------------------ whole objects
    async def put(self, key: str, body, metadata: dict[str, str], content_type: str | None = None) -> str:
        try:
            return await self._patiently(f"put_object {key}",
                                         lambda: self._store.put(key, body, metadata, content_type))
        except StoreError as e:
            etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
            if not await self._holds(key, etag=etag, metadata=metadata):
                raise
            self.lost_answers += 1
            log.warning("put of %s failed (%s) but had taken effect", key, e)
            return etag

    async def copy(self, src: str, dst: str, metadata: dict[str, str] | None,
                   content_type: str | None = None) -> None:
        try:
            await self._patiently(f"copy_object {dst}", lambda: self._store.copy(src, dst, metadata, content_type))
        except StoreError as e:
            if metadata is None or not await self._holds(dst, metadata=metadata):
                raise
            self.lost_answers += 1
            log.warning("copy to %s failed (%s) but had taken effect", dst, e)
