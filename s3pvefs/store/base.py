"""The ObjectStore protocol: the only view of S3 the core has.

Keys are full keys (prefix included); the store knows nothing about files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: float  # epoch seconds
    metadata: dict[str, str] | None = None  # user metadata (x-amz-meta-*); None when from a LIST
    content_type: str | None = None  # from a HEAD or GET; None from a LIST
    storage_class: str | None = None  # as the server says (None: STANDARD, or not said)
    # S3 Object Lock of this version, from a HEAD or GET: mode, retain-until (epoch s), hold
    lock_mode: str | None = None
    lock_until: float | None = None
    legal_hold: bool = False
    encryption: str | None = None  # from a HEAD or GET: AES256, aws:kms, SSE-C; None: none said


@dataclass(frozen=True)
class ListPage:
    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)  # common prefixes, each ending in the delimiter
    next_token: str | None = None


@dataclass(frozen=True)
class PartEtag:
    number: int
    etag: str


@dataclass(frozen=True)
class MultipartUpload:
    key: str
    upload_id: str
    initiated: float


class ListAll:
    """Every page of a listing, following continuation tokens: the one pagination loop
    (mixed into each store)."""

    async def list_all(self, prefix: str, delimiter: str | None = "/") -> AsyncIterator[ListPage]:
        token = None
        while True:
            page = await self.list_page(prefix, delimiter, token)
            yield page
            token = page.next_token
            if not token:
                return


class ObjectStore(Protocol):
    def list_all(self, prefix: str, delimiter: str | None = "/") -> AsyncIterator[ListPage]:
        """Every page under prefix (ListAll)."""

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def get_small(self, key: str, limit: int) -> tuple[ObjectInfo, bytes | None] | None:
        """An object's headers and, if it holds at most limit bytes, its body: one GET of
        its first limit bytes instead of a HEAD and a GET. The body is None for a larger
        object (never more than limit bytes are fetched, whatever the object became)."""

    async def list_page(self, prefix: str, delimiter: str | None = "/",
                        token: str | None = None, max_keys: int = 1000) -> ListPage: ...

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None,
                        into: bytearray | None = None) -> bytes | bytearray | memoryview:
        """Bytes [start, end) of the object, as any bytes-like object (the CRT plane fills a
        bytearray in place: ``into`` when given, then a view of it is returned); ``etag``
        (If-Match) raises errors.Changed if another version is there now."""

    async def put(self, key: str, body: bytes, metadata: dict[str, str],
                  content_type: str | None = None) -> str: ...

    async def copy(self, src: str, dst: str, metadata: dict[str, str] | None,
                   content_type: str | None = None) -> None:
        """Server-side copy of an object up to 5 GiB; metadata None keeps the source's
        (and its Content-Type); else content_type is the copy's (None: the default)."""

    async def delete(self, key: str) -> None: ...

    async def refuse_if_locked(self, key: str) -> None:
        """Locked (EACCES) if Object Lock keeps the object at key from being deleted."""

    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str: ...

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str: ...

    async def upload_part_copy(self, key: str, upload_id: str, number: int, src: str,
                               start: int, end: int, src_etag: str | None = None) -> str:
        """Part ``number`` = bytes [start, end) of object ``src`` (only while its ETag is
        src_etag, when given); returns the part's ETag."""

    async def complete_multipart(self, key: str, upload_id: str, parts: list[PartEtag]) -> None: ...

    async def abort_multipart(self, key: str, upload_id: str) -> None: ...

    async def list_multipart(self, prefix: str) -> list[MultipartUpload]: ...

    async def last_activity(self, key: str, upload_id: str) -> float:
        """When the upload last got a part (its initiation if none): epoch seconds."""
        ...
