"""Streaming a sequentially written file into a multipart upload while it is written.

No local disk: written bytes wait in memory (charged to the mount's MemoryBudget),
as the pieces they were written in (pieces.py), until they fill a part, then go to
S3 as those pieces while the writer goes on. Part sizes follow
parts.stream_part_size. The last reorder_window bytes stay in memory a little
longer, so writes that arrive slightly out of order (several writer threads)
still land in memory; a gap ahead of the end is filled with zeros as it would
read, and sent like data.

A write before ``base`` (bytes already sent) cannot be served here: ``write``
returns False and the filesystem moves the file to its write-back cache (sparse.py).

``commit`` makes the object at the key hold everything written so far: a single
PUT when nothing was sent yet, else the last part and CompleteMultipartUpload.
The stream can go on after a commit (close of one of several descriptors,
rename while open, a file past one upload's 10,000 parts): the next upload
starts with UploadPartCopy parts of the committed object, so nothing is sent
twice. A failure does not abort the upload: the parts S3 stored stay, the bodies
of parts it did not store stay in memory (still charged), and ``kept`` hands all of
it over (the file keeps it on disk until S3 takes it: resume.py). Only a file that
is dropped (unlinked, truncated to 0, replaced) aborts its upload.

Multipart uploads are created without time headers: the object's LastModified,
set at completion, is then the file's mtime. Explicit times or a chmod/chown
while streaming are written after completion by an in-place metadata copy.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from typing import Callable

import trio

from s3pvefs.config import WriteConfig
from s3pvefs.errors import FsError, StoreError
from s3pvefs.store.base import ObjectStore, PartEtag
from s3pvefs.store.body import Body
from s3pvefs.write.budget import MemoryBudget
from s3pvefs.write.parts import MAX_OBJECT, MAX_PARTS, MIN_PART, copy_ranges, stream_part_size
from s3pvefs.write.pieces import Pieces
from s3pvefs.write.uploader import copy_object
from s3pvefs.write.window import InflightWindow

log = logging.getLogger(__name__)

ZERO_CHUNK = 1 << 20
_TIME_KEYS = ("mtime", "ctime", "atime")


def _without_times(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k not in _TIME_KEYS}


@dataclass(eq=False)
class _Upload:
    key: str
    first_data_part: int  # part numbers before it copy the committed prefix
    next_number: int
    metadata: dict[str, str]
    upload_id: str | None = None
    etags: list[PartEtag] = field(default_factory=list)
    started: trio.Event = field(default_factory=trio.Event)
    failed: bool = False
    copies: list[tuple[int, int, int]] = field(default_factory=list)  # (number, start, end) of the committed prefix
    unsent: dict[int, Body] = field(default_factory=dict)  # bodies of parts S3 did not store: kept, not lost


class StreamedFile:
    def __init__(self, store: ObjectStore, key: Callable[[], str], metadata: Callable[[], dict[str, str]],
                 cfg: WriteConfig, budget: MemoryBudget, nursery: trio.Nursery):
        self._store, self._key, self._metadata = store, key, metadata
        self._cfg, self._budget, self._nursery = cfg, budget, nursery
        # S3's smallest part but the last; tests configure smaller parts on the memory store
        self._min_part = min(MIN_PART, cfg.min_part_size)
        self.base = 0  # bytes before this are in S3 (parts sent, or the committed object)
        self.buf = Pieces()  # bytes [base, base + len(buf)), as written: no copy until sent
        self.committed = 0  # size of the object this stream committed at the key; 0 = none
        self.explicit_times = False  # utimes while streaming: write the times after completion
        self._pending = False  # changed since the last commit
        self.error: FsError | None = None
        self._upload: _Upload | None = None
        self._data_parts = 0  # over the stream's whole life: drives the part-size plan
        self._sending = 0  # part uploads running
        self.window = InflightWindow(cfg.upload_concurrency, cfg.max_upload_concurrency)
        self.stored = 0  # bytes of this stream's parts S3 has confirmed (for `s3pvefs status`)
        self._changed = trio.Event()
        self._closed = False
        self._dropped = False  # fail(): the bytes are gone, reads raise the error
        budget.holders.add(self)

    # ------------------------------------------------------------------ state
    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    @property
    def uploading(self) -> bool:
        return self._upload is not None

    def clean(self) -> bool:
        """Nothing written since the last commit."""
        return not self._pending

    def buffered(self) -> int:
        return len(self.buf)

    def progress(self) -> dict[str, int]:
        """Bytes written so far, handed to part uploads, and confirmed stored by S3."""
        return {"written": self.end, "sent": self.base, "stored": min(self.base, self.committed + self.stored),
                "parts_in_flight": self._sending, "window": self.window.limit, "buffered": len(self.buf)}

    def read(self, offset: int, size: int) -> bytes | None:
        """Bytes still in memory, or None when [offset, offset+size) was sent already
        (also after a failed part or commit: what was written is kept)."""
        if self._dropped:
            raise self.error
        if offset < self.base:
            return None
        return self.buf.copy(offset - self.base, offset - self.base + size)

    # ------------------------------------------------------------------ writing
    async def write(self, offset: int, data: bytes) -> bool:
        """Take data at offset; False if offset is before what is still in memory."""
        self._check()
        if offset + len(data) > MAX_OBJECT:
            raise FsError("S3 objects end at 5 TiB", err=errno.EFBIG)
        while offset > self.end:  # a hole: zeros, as a read of it would return
            if not await self._append(self.end, bytes(min(offset - self.end, ZERO_CHUNK))):
                return False
        return await self._append(offset, data)

    async def _append(self, offset: int, data: bytes) -> bool:
        if offset < self.base:
            return False
        grow = max(0, offset + len(data) - self.end)
        if grow:
            await self._budget.acquire(grow)
            self._check(release=grow)
        if offset < self.base:  # the buffer was sent early while we waited
            self._budget.release(grow)
            return False
        i = offset - self.base
        self.buf.write(i, data)
        self._pending = True
        while len(self.buf) >= self._part_size() + self._cfg.reorder_window:
            await self._send(self._part_size())
        return True

    def truncate(self, size: int) -> bool:
        """Cut what is in memory; False if that is not enough."""
        self._check()
        if size < self.base:
            return False
        if size > self.end:
            return False  # an extension needs budget: let the write-back cache have it
        if size < self.end:
            cut = self.end - size
            self.buf.truncate(size - self.base)
            self._budget.release(cut)
            self._pending = True
        return True

    def reset(self) -> None:
        """Forget everything written (truncate to 0): the upload is aborted."""
        self._drop_upload()
        self._budget.release(len(self.buf))
        self.buf = Pieces()
        self.base = self.committed = 0  # the next commit replaces the object whole
        self._pending = True

    def _part_size(self) -> int:
        c = self._cfg
        return stream_part_size(self._data_parts + 1, c.min_part_size, c.max_part_size, c.uniform_parts,
                                c.parts_per_step)

    def _check(self, release: int = 0) -> None:
        if self.error is not None:
            if release:
                self._budget.release(release)
            raise self.error

    # ------------------------------------------------------------------ parts
    async def _send(self, n: int) -> None:
        """Hand the first n buffered bytes to a part upload."""
        while self.window.full(self._sending):
            await self._wait()
        self._check()
        if self._upload is not None and self._upload.next_number > MAX_PARTS:
            if self._cfg.uniform_parts:  # a follow-up upload would need copy parts of other sizes
                raise FsError(f"file larger than {MAX_PARTS} parts of {self._cfg.min_part_size} bytes "
                              "(uniform_parts)", err=errno.EFBIG)
            await self.commit(self._metadata())
        if self._upload is None and 0 < self.committed < self._min_part:
            await self._reload_small_prefix()
        self._cut(min(n, len(self.buf)))

    def _cut(self, n: int) -> None:
        if n <= 0:
            return
        upload = self._upload or self._begin_upload()
        body = self.buf.take(n)
        self.base += n
        self._data_parts += 1
        number = upload.next_number
        upload.next_number += 1
        self._budget.start_sending(n)
        self._sending += 1
        self._nursery.start_soon(self._upload_part, upload, number, body)

    def flush_early(self) -> bool:
        """For the budget: send the buffer now as a shorter part, if S3 allows one."""
        if (self._cfg.uniform_parts or len(self.buf) < self._min_part or self.error is not None
                or (self._upload is None and 0 < self.committed < self._min_part)
                or (self._upload is not None and self._upload.next_number > MAX_PARTS)):
            return False
        self._cut(len(self.buf))
        return True

    def _begin_upload(self) -> _Upload:
        copies = [(n, start, end) for n, (start, end) in enumerate(copy_ranges(self.committed), 1)] \
            if self.committed else []
        upload = _Upload(self._key(), len(copies) + 1, len(copies) + 1, _without_times(self._metadata()),
                         copies=copies)
        self._upload = upload
        self._sending += 1  # the creation and the copy parts count as one running upload
        self._nursery.start_soon(self._start_upload, upload)
        return upload

    async def _start_upload(self, upload: _Upload) -> None:
        try:
            upload.upload_id = await self._store.create_multipart(upload.key, upload.metadata)
            upload.started.set()
            async with trio.open_nursery() as n:
                for number, start, end in upload.copies:
                    n.start_soon(self._copy_part, upload, number, start, end)
        except Exception as e:
            self._fail(upload, e)
        finally:
            upload.started.set()
            self._sending -= 1
            self._wake()

    async def _copy_part(self, upload: _Upload, number: int, start: int, end: int) -> None:
        try:
            etag = await self._store.upload_part_copy(upload.key, upload.upload_id, number, upload.key, start, end)
        except Exception as e:  # noqa: BLE001 - kept: a later try copies it again
            self._fail(upload, e)
            return
        upload.etags.append(PartEtag(number, etag))

    async def _upload_part(self, upload: _Upload, number: int, body: Body) -> None:
        stored = False
        try:
            await upload.started.wait()
            if upload.upload_id is not None and not upload.failed:
                self.window.started(trio.current_time())
                etag = await self._store.upload_part(upload.key, upload.upload_id, number, body)
                upload.etags.append(PartEtag(number, etag))
                self.stored += len(body)
                self.window.completed(len(body), trio.current_time())
                stored = True
        except Exception as e:
            self._fail(upload, e)
        finally:
            if stored:
                self._budget.done_sending(len(body))
            else:  # kept in memory (still charged) until the file hands it over
                upload.unsent[number] = body
                self._budget.stop_sending(len(body))
            self._sending -= 1
            self._wake()

    def _fail(self, upload: _Upload, e: Exception) -> None:
        upload.failed = True
        if self.error is None:
            if not isinstance(e, FsError):
                log.exception("unexpected error uploading %s", upload.key)
            self.error = FsError(f"upload of {upload.key} failed: {e}", err=errno.EIO)
            log.error("%s: what was written is kept for a later try", self.error)

    async def _reload_small_prefix(self) -> None:
        """A committed object under 5 MiB cannot be a copy part: read it back into memory."""
        size = self.committed
        await self._budget.acquire(size)
        try:
            data = await self._store.get_range(self._key(), 0, size)
        except BaseException:
            self._budget.release(size)
            raise
        self.buf.prepend(data)
        self.base -= size
        self.committed = 0

    async def wait_sent(self) -> None:
        """Until every part handed over so far is stored (fsync); raises its error."""
        while self._sending:
            await self._wait()
        self._check()

    # ------------------------------------------------------------------ commit
    async def commit(self, metadata: dict[str, str]) -> None:
        """Make the object at the key hold all bytes written; raises (and aborts) on failure."""
        self._check()
        if self.clean():
            return
        if self._upload is None and 0 < self.committed < self._min_part:
            await self._reload_small_prefix()
        if self._upload is None and not self.committed:
            # Everything is still in memory: a failed PUT loses nothing, a later commit retries.
            await self._put_whole(metadata)
            return
        try:
            while len(self.buf) > self._part_size():  # the window's extra bytes: no oversized last part
                self._cut(self._part_size())
            if self.buf:
                self._cut(len(self.buf))
            if self._upload is None:  # nothing new since the last commit
                self._pending = False
                return
            upload = self._upload
            await self.wait_sent()
            etags = sorted(upload.etags, key=lambda p: p.number)
            await self._store.complete_multipart(upload.key, upload.upload_id, etags)
            self._upload = None
            self.committed = self.base
            if _without_times(metadata) != upload.metadata or self.explicit_times:
                await copy_object(self._store, upload.key, upload.key, self.committed, metadata, self._cfg)
            self.explicit_times = False
            self._pending = False
        except (StoreError, FsError) as e:  # the upload stays, with what S3 stored (kept)
            if self.error is None:
                self.error = FsError(f"upload of {self._key()} failed: {e}", err=errno.EIO)
            raise self.error from None

    async def _put_whole(self, metadata: dict[str, str]) -> None:
        body = self.buf.join()
        await self._store.put(self._key(), body, metadata)
        self._budget.release(len(self.buf))
        self.buf = Pieces()
        self.base += len(body)
        self.committed = self.base
        self._pending = False

    # ------------------------------------------------------------------ the end
    def _drop_upload(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.failed = True
            self._nursery.start_soon(self._abort, upload)

    async def _abort(self, upload: _Upload) -> None:
        with trio.CancelScope(shield=True):
            while self._sending:  # a part still running could outlive the abort
                await self._wait()
            if upload.upload_id is None:
                return
            try:
                await self._store.abort_multipart(upload.key, upload.upload_id)
            except StoreError as e:
                log.warning("could not abort multipart upload of %s: %s", upload.key, e)

    def fail(self, error: FsError) -> None:
        """The file can no longer be committed (replaced by a rename): every later
        operation raises error; memory back, upload aborted."""
        self.error = error
        self._dropped = True
        self._drop_upload()
        self._budget.release(len(self.buf))
        self.buf = Pieces()

    def close(self) -> None:
        """Drop what was not committed (release): memory back, upload aborted."""
        if self._closed:
            return
        self._closed = True
        self._drop_upload()
        self._release_memory()
        self._budget.holders.discard(self)

    def _release_memory(self) -> None:
        self._budget.release(len(self.buf))
        self.buf = Pieces()
        if self._upload is not None:
            self._budget.release(sum(len(b) for b in self._upload.unsent.values()))
            self._upload.unsent.clear()

    async def kept(self) -> dict:
        """After a commit that failed: everything this stream holds, for the file to keep
        (resume.py), once the parts still in flight have ended: the upload (if one was
        made), its parts S3 stored, copy parts still to make, and the bodies S3 does not
        have (parts it did not store, then the unsent tail as the last part). The stream
        is closed without aborting anything; its memory is given back."""
        while self._sending:
            await self._wait()
        upload = self._upload
        pieces: list[tuple[int, bytes]] = []
        copies: list[tuple[int, int, int]] = []
        parts: list[PartEtag] = []
        if upload is not None:
            stored = {p.number for p in upload.etags}
            parts = sorted(upload.etags, key=lambda p: p.number)
            copies = [c for c in upload.copies if c[0] not in stored]
            pieces = sorted((number, bytes(body)) for number, body in upload.unsent.items())
            if self.buf:
                pieces.append((upload.next_number, self.buf.join()))
        elif self.buf or not self.committed:
            pieces = [(1, self.buf.join())]  # never sent: one PUT of it all
        held = {"upload_id": upload.upload_id if upload is not None else None, "parts": parts, "copies": copies,
                "pieces": pieces, "size": self.end,
                "create_metadata": upload.metadata if upload is not None else _without_times(self._metadata()),
                "explicit_times": self.explicit_times}
        self._closed = True
        self._release_memory()
        self._upload = None  # handed over: never aborted here
        self._budget.holders.discard(self)
        return held

    async def _wait(self) -> None:
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
