"""In-memory ObjectStore for the core's unit tests: counts every request and can be
told to fail. Not a substitute for the S3 adapter tests against a real server."""

from __future__ import annotations

import collections
import hashlib
import itertools
import time
from dataclasses import dataclass, field

import trio

from s3pvefs.errors import Changed, StoreError
from s3pvefs.store.base import ListAll, ListPage, MultipartUpload, ObjectInfo, PartEtag


@dataclass
class _Object:
    data: bytes
    metadata: dict[str, str]
    etag: str
    last_modified: float
    content_type: str | None = None


@dataclass
class _Upload:
    key: str
    metadata: dict[str, str]
    parts: dict[int, bytes] = field(default_factory=dict)
    initiated: float = field(default_factory=time.time)
    last_part: float | None = None


class MemoryStore(ListAll):
    def __init__(self) -> None:
        self.objects: dict[str, _Object] = {}
        self.uploads: dict[str, _Upload] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        # name of a store method -> exception to raise on its next calls (fault hook)
        self.fail: dict[str, Exception] = {}
        self.stall: set[str] = set()  # store methods whose calls hang until removed from it
        # store methods whose next call takes effect but whose answer is lost (a timeout)
        self.lose_answer: set[str] = set()
        self._ids = itertools.count(1)
        self.min_part_size = 5 << 20  # as S3: every part but the last at least this
        self.ranges: list[tuple[str, int, int]] = []  # every GET: (key, start, end)
        self.sent = 0  # body bytes of PUTs and parts: what a client uploads
        self.copied = 0  # bytes copied server-side (CopyObject, UploadPartCopy)

    # -- test helpers -------------------------------------------------------
    def put_outside(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Write as another tool would, without counting a request. data may also be
        any sized, sliceable stand-in for bytes too big to hold (a 50 GiB object)."""
        etag = hashlib.md5(data).hexdigest() if isinstance(data, bytes) else f"synthetic-{len(data)}"
        self.objects[key] = _Object(data, dict(metadata or {}), etag, time.time())

    def reset_counts(self) -> None:
        self.calls.clear()

    async def _enter(self, op: str) -> None:
        self.calls[op] += 1
        await trio.lowlevel.checkpoint()
        while op in self.stall:  # until the test lets the server answer again
            await trio.sleep(0.01)
        if op in self.fail:
            raise self.fail[op]

    def _answer_lost(self, op: str) -> None:
        if op in self.lose_answer:
            self.lose_answer.discard(op)
            raise StoreError(f"{op}: no answer from S3 (it took effect)", code="Timeout", transient=True)

    def _info(self, key: str, obj: _Object, with_meta: bool) -> ObjectInfo:
        return ObjectInfo(key, len(obj.data), obj.etag, obj.last_modified,
                          dict(obj.metadata) if with_meta else None, obj.content_type if with_meta else None)

    # -- ObjectStore --------------------------------------------------------
    async def head(self, key):
        await self._enter("head")
        obj = self.objects.get(key)
        return None if obj is None else self._info(key, obj, True)

    async def get_small(self, key, limit):
        await self._enter("get")
        obj = self.objects.get(key)
        if obj is None:
            return None
        self.ranges.append((key, 0, min(limit, len(obj.data))))
        return self._info(key, obj, True), bytes(obj.data) if len(obj.data) <= limit else None

    async def list_page(self, prefix, delimiter="/", token=None, max_keys=1000):
        await self._enter("list")
        objects, prefixes = [], set()
        entries = []
        for key in sorted(self.objects):
            if not key.startswith(prefix) or (token is not None and key <= token):
                continue
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                cp = prefix + rest[: rest.index(delimiter) + 1]
                if cp in prefixes:
                    continue
                prefixes.add(cp)
                entries.append((cp, None))
            else:
                entries.append((key, self.objects[key]))
            if len(entries) == max_keys:
                break
        for key, obj in entries:
            if obj is not None:
                objects.append(self._info(key, obj, False))
        more = len(entries) == max_keys
        last = entries[-1][0] if entries else None
        if more and last is not None and last.endswith(delimiter or "\0"):
            last = last[:-1] + chr(ord(delimiter) + 1)  # skip the whole common prefix
        return ListPage(objects, sorted(p for p, o in entries if o is None),
                        last if more else None)

    async def get_range(self, key, start, end, etag=None, into=None):
        await self._enter("get")
        obj = self.objects.get(key)
        if obj is None:
            raise StoreError(f"GET {key}: no such key", code="NoSuchKey")
        if etag is not None and obj.etag != etag:
            raise Changed(f"GET {key}: the object changed (If-Match {etag})")
        self.ranges.append((key, start, end))
        return bytes(obj.data[start:end])

    async def put(self, key, body, metadata, content_type=None):
        await self._enter("put")
        self.sent += len(body)
        obj = _Object(bytes(body), dict(metadata), hashlib.md5(body).hexdigest(), time.time(), content_type)
        self.objects[key] = obj
        self._answer_lost("put")
        return obj.etag

    async def copy(self, src, dst, metadata, content_type=None):
        await self._enter("copy")
        obj = self.objects.get(src)
        if obj is None:
            raise StoreError(f"COPY {src}: no such key", code="NoSuchKey")
        meta = dict(obj.metadata if metadata is None else metadata)
        self.copied += len(obj.data)
        kept_type = obj.content_type if metadata is None else content_type  # as S3's REPLACE
        self.objects[dst] = _Object(obj.data, meta, obj.etag, time.time(), kept_type)

    async def delete(self, key):
        await self._enter("delete")
        self.objects.pop(key, None)

    async def refuse_if_locked(self, key):
        """No Object Lock here."""

    async def create_multipart(self, key, metadata):
        await self._enter("create_multipart")
        upload_id = f"up{next(self._ids)}"
        self.uploads[upload_id] = _Upload(key, dict(metadata))
        self._answer_lost("create_multipart")
        return upload_id

    async def upload_part(self, key, upload_id, number, body):
        await self._enter("upload_part")
        if upload_id not in self.uploads or self.uploads[upload_id].key != key:
            raise StoreError(f"NoSuchUpload: {upload_id}", code="NoSuchUpload")
        self.sent += len(body)
        body = bytes(body)  # a streamed part comes as its pieces (write/pieces.py)
        self.uploads[upload_id].parts[number] = body
        self.uploads[upload_id].last_part = time.time()
        return hashlib.md5(body).hexdigest()

    async def upload_part_copy(self, key, upload_id, number, src, start, end, src_etag=None):
        await self._enter("upload_part_copy")
        if src_etag is not None and self.objects[src].etag != src_etag:
            raise StoreError(f"upload_part_copy {key}: PreconditionFailed (412)", code="PreconditionFailed")
        data = self.objects[src].data[start:end]
        self.copied += len(data)
        self.uploads[upload_id].parts[number] = data
        return hashlib.md5(data).hexdigest()

    async def complete_multipart(self, key, upload_id, parts: list[PartEtag]):
        await self._enter("complete_multipart")
        up = self.uploads[upload_id]
        numbers = [p.number for p in parts]
        if up.key != key or numbers != sorted(set(numbers)) or not numbers \
                or any(n not in up.parts for n in numbers):
            raise StoreError(f"InvalidPart: bad part list for {key}", code="InvalidPart")
        if any(len(up.parts[n]) < self.min_part_size for n in numbers[:-1]):
            raise StoreError(f"EntityTooSmall: a part of {key} is below the minimum", code="EntityTooSmall")
        del self.uploads[upload_id]
        data = b"".join(up.parts[n] for n in numbers)
        digests = b"".join(hashlib.md5(up.parts[n]).digest() for n in numbers)  # as S3 makes it
        self.objects[key] = _Object(data, up.metadata, hashlib.md5(digests).hexdigest() + f"-{len(parts)}",
                                    time.time())
        self._answer_lost("complete_multipart")

    async def abort_multipart(self, key, upload_id):
        await self._enter("abort_multipart")
        self.uploads.pop(upload_id, None)

    async def last_activity(self, key, upload_id):
        await self._enter("list_parts")
        u = self.uploads.get(upload_id)
        if u is None:
            raise StoreError(f"NoSuchUpload: {upload_id}", code="NoSuchUpload")
        return u.last_part or u.initiated

    async def list_multipart(self, prefix):
        await self._enter("list_multipart")
        return [MultipartUpload(u.key, uid, u.initiated) for uid, u in self.uploads.items()
                if u.key.startswith(prefix)]
