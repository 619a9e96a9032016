"""One file's bytes and attributes that S3 does not have yet, and where they are.

A FileData exists for every file this mount holds something of that is not (yet)
the object at its key. Its state says where the bytes are, and ``_become`` is the one
place it changes:

- ATTRS: nothing but attributes differ from the object (a chmod not committed yet, a
  new empty file, an unlinked file still open for reading);
- STREAMING: written sequentially, on its way to S3 from memory as it is written
  (write/stream.py);
- CACHED: changed in place, held in a sparse write-back cache over the object it
  started from (write/sparse.py; committed by write/writeback.py);
- KEPT: a streamed file whose commit failed (S3 away past outage_patience): its
  parts stay in their unfinished upload, what only memory held is in a spill file on
  local disk (write/resume.py), until a later commit finishes it.

    ATTRS -> STREAMING   a write at 0 of an empty file, an append at the object's end,
                         an open with O_TRUNC
    ATTRS -> CACHED      any other write, a truncate, a small read through a writable handle
    STREAMING -> CACHED  a write or read behind what was sent, a truncate the stream cannot do
    STREAMING -> ATTRS   committed in order to leave the stream while parts were in flight
    STREAMING -> KEPT    its commit failed (``keep``)
    KEPT -> ATTRS        a later commit finished it (a change of its bytes waits for that)
    any -> gone          ``close`` (the file's last handle, when nothing is left to commit)

It is given what it needs from the mount (FileContext: store, settings, budgets,
cache space, nursery, hidden objects), never the Filesystem, and it owns the commit:
data, or attributes only, to the object at its key.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Callable

import trio

from s3pvefs.config import Config
from s3pvefs.errors import FsError, Stale
from s3pvefs.namespace.hidden import HiddenObjects
from s3pvefs.namespace.stat import Stat, encode_metadata, now_ns
from s3pvefs.store.base import ObjectStore
from s3pvefs.write.budget import MemoryBudget
from s3pvefs.write.cachespace import CacheSpace
from s3pvefs.write.sparse import SparseFile
from s3pvefs.write.zeros import Zeros
from s3pvefs.write.stream import StreamedFile
from s3pvefs.write.resume import Suspended
from s3pvefs.write.uploader import copy_object
from s3pvefs.write.uploadlog import UploadLog
from s3pvefs.write.writeback import CommitProgress, upload_sparse

log = logging.getLogger(__name__)


class State(enum.Enum):
    ATTRS = "attributes"
    STREAMING = "streamed"
    CACHED = "cached"
    KEPT = "kept"


@dataclass
class FileContext:
    """What a file's data needs from the mount."""

    store: ObjectStore  # write/commitstore.py: commits ride out outages, lost answers are checked
    cfg: Config
    nursery: trio.Nursery
    budget: MemoryBudget  # memory of streamed bytes and of windows being sent
    space: CacheSpace  # local disk of the write-back caches
    writeback_dir: str  # where the caches and their journals are
    hidden: HiddenObjects
    # (path, stat, size of the object it replaced or 0): the metadata cache and the usage
    # meter learn of a commit
    committed: Callable[[str, Stat, int], None]
    uploads: UploadLog  # this daemon's uploads, for the next mount
    zeros: Zeros | None = None  # holes are copied from it at commits (write/zeros.py)


class FileData:
    def __init__(self, ctx: FileContext, key: str, path: str, stat: Stat, remote_size: int | None):
        if not stat.complete:  # a commit writes them back: a listing's defaults must never get there
            raise FsError(f"attributes of {path} not read")
        self.ctx = ctx
        self.key = key  # the name's key: commits go there, the base object is there
        self.path: str | None = path  # None once unlinked
        self.stat = stat
        self.remote_size = remote_size  # size of the object at the key; None: there is none
        self.in_background = False  # a commit of it runs in the background (a far-grown file)
        self.commit_progress: CommitProgress | None = None  # the parts of a cached commit under way
        self._commits: set[trio.CancelScope] = set()  # commits under way, for stop_commits
        self.removing = False  # its name is being deleted, overwritten or moved: no commit runs
        self.state = State.ATTRS
        self.stream: StreamedFile | None = None
        self.cache: SparseFile | None = None
        self.kept: Suspended | None = None
        self.failed_since: float | None = None  # epoch seconds of the first commit that failed, still unresolved
        self.last_error: str | None = None
        self.retrying = False  # the mount tries its commit again in the background
        # Created here and not changed since: a flush of the creating open does not
        # commit it yet (a shell's `> f` flushes once before anything is written: a failing
        # writer must not leave an empty object behind); the last close does.
        self.untouched_new = False
        self.dirty = False
        self.generation = 0  # bumped by every change, so a commit knows if it caught them all
        self.lock = trio.Lock()  # one commit or state change at a time
        self.commit_timer: trio.CancelScope | None = None  # a commit put off by an fsync
        self.commit_due: float | None = None  # trio.current_time() when it runs

    # ------------------------------------------------------------------ state
    @property
    def attached(self) -> bool:
        return self.path is not None

    def _become(self, state: State, *, cache: SparseFile | None = None, kept: Suspended | None = None) -> None:
        """The one transition: the new state's holder in, the old one's out (a cache's
        files were removed or kept by the caller before)."""
        if self.stream is not None and state is not State.STREAMING:
            self.stream.close()
            self.stream = None
        if self.cache is not None and state is not State.CACHED:
            self.ctx.space.untrack(self)
            self.cache = None
        if self.kept is not None and state is not State.KEPT:
            self.ctx.space.give_back(self.kept.spilled)
            self.kept = None
        if state is State.STREAMING and self.stream is None:
            self.stream = StreamedFile(self.ctx.store, lambda: self.key, lambda: encode_metadata(self.stat),
                                       self.ctx.cfg.write, self.ctx.budget, self.ctx.nursery)
        if state is State.CACHED:
            self.cache = cache
            self.ctx.space.track(self)
        if state is State.KEPT:
            self.kept = kept
        self.state = state

    def touch(self, stat: Stat) -> None:
        self.untouched_new = False
        self.stat = stat
        self.dirty = True
        self.generation += 1

    def object_key(self) -> str:
        """Where this file's object is: its name's key, or, unlinked but still open, the
        key its object is hidden at; Stale once another file's object (or nothing) is there."""
        if self.attached or self.ctx.hidden.holds(self.key, self):
            return self.key
        raise Stale()

    def rekey(self, key: str, path: str) -> None:
        """Renamed: commits (and, after the caller moved it, the base object) go there."""
        self.key, self.path = key, path
        self.stat = self.stat.with_(etag=None)  # a copy may have another ETag
        if self.cache is not None:
            self.cache.rekey(key, path)

    async def move_to(self, key: str, path: str, replacing: bool) -> None:
        """Rename: the object (if any) is copied server-side to key and the old one
        deleted; what this mount holds follows it (a cache and its journal too)."""
        await self._finish_kept()
        if self.state is State.STREAMING and self.stream.uploading:
            await self.commit()  # its parts belong to an upload at the old key
        store = self.ctx.store
        async with self.lock:  # no commit to the old key meanwhile
            if self.remote_size is not None:
                cached = self.state is State.CACHED
                meta = None if cached else encode_metadata(self.stat)  # a cache's ride with its commit
                await copy_object(store, self.key, key, self.remote_size, meta, self.ctx.cfg.write)
                self.ctx.hidden.unhide(key)
                info = await store.head(key) if cached else None
                await store.delete(self.key)
                if cached:
                    self.cache.base_etag = info.etag if info is not None else None
                elif self.stream is None or self.stream.clean():
                    self.dirty = False  # the copy carried the pending attributes
            elif replacing:
                await store.delete(key)  # replaced by a file not committed yet
            self.rekey(key, path)

    def detach(self) -> None:
        """The name is gone (unlinked, or replaced by a rename): nothing is committed any
        more, and the cache is no file's for recovery."""
        self.path = None
        self.cancel_timer()
        if self.cache is not None:
            self.cache.forget_key()

    def hide(self, etag: str) -> None:
        """Unlinked while open and its object still needed: hidden, deleted at last close."""
        self.ctx.hidden.hide(self.key, etag, self)

    def hidden_at(self, key: str, etag: str) -> None:
        """Unlinked while open, its object was copied to key (a new file takes its name):
        read there from now on, and deleted there at its last close."""
        self.ctx.hidden.move(self.key, key, etag, self)
        self.key = key
        self.stat = self.stat.with_(etag=etag)
        if self.cache is not None and self.cache.base_etag is not None:
            self.cache.base_etag = etag  # a copy of a multipart object has another ETag

    # ------------------------------------------------------------------ reading
    def readable_size(self) -> int:
        """Bytes of the object at object_key() that are still this file's."""
        return self.cache.base_end if self.cache is not None else self.stat.size

    async def _finish_kept(self) -> None:
        """A kept file's bytes change only once S3 took them (EIO until then)."""
        if self.state is State.KEPT:
            await self.commit()

    async def read(self, offset: int, size: int, writable: bool) -> bytes | None:
        """Bytes this mount holds; None: read them from the object (read-ahead)."""
        if self.state is State.STREAMING:
            async with self.lock:  # not while the stream is being kept (keep) or committed
                streaming = self.state is State.STREAMING
                data = await self._read_streamed(offset, min(size, max(0, self.stat.size - offset))) \
                    if streaming else None
            if data is not None:
                return data
            if streaming:
                await self._leave_stream()  # bytes in parts of an upload: commit, then read the object
        if self.state is State.KEPT and self.kept.whole_in_spill():
            return await trio.to_thread.run_sync(self.kept.read, offset, size)
        await self._finish_kept()
        fill = self.ctx.cfg.cache.fill_size
        if writable and size < fill and self.attached and self.state is State.ATTRS:
            # A small read through a handle open for writing (a VM disk, QEMU opens them
            # O_RDWR): the cache fetches fill_size around it and keeps it for the next ones.
            await self._cached()
        if self.state is State.CACHED:
            cache = self.cache
            end = min(offset + size, cache.size)
            if not (end - offset >= fill and cache.untouched(offset, end)):
                return await cache.read(offset, size, self._base_fetcher())
            # a long read of bytes only the base has: from S3 with read-ahead, not cached
        return None

    async def _read_streamed(self, offset: int, size: int) -> bytes | None:
        """From memory, and from the object committed at the key (before stream.base);
        None if some are in an unfinished upload."""
        stream = self.stream
        if offset >= stream.base:
            return stream.read(offset, size)
        key = self.object_key()
        if stream.uploading:
            return None
        end = offset + size
        head = await self.ctx.store.get_range(key, offset, min(end, stream.base))
        if stream is not self.stream or stream.uploading or len(head) != min(end, stream.base) - offset:
            return None  # changed while we read: take the slow path
        return head + (stream.read(stream.base, end - stream.base) if end > stream.base else b"")

    # ------------------------------------------------------------------ writing
    async def write(self, offset: int, data: bytes) -> int:
        await self._finish_kept()
        n = len(data)
        stream = self._stream_for(offset)
        if stream is not None:
            async with self.lock:
                taken = self.stream is stream and await stream.write(offset, data)
            if not taken:
                await self._leave_stream()
        if self.state is not State.STREAMING:
            cache = await self._cached()
            await self.ctx.space.make_room(len(data))
            n = await cache.write(offset, data, self._base_fetcher())
        t = now_ns()
        self.touch(self.stat.with_(size=max(self.stat.size, offset + n), mtime_ns=t, ctime_ns=t))
        return n

    def _stream_for(self, offset: int) -> StreamedFile | None:
        """The stream a write at offset goes to: the file's, or a new one for a file
        that is empty or appended to right at its committed end; None: the cache."""
        if self.state is not State.ATTRS or not self.attached:
            return self.stream
        if self.stat.size == 0:
            self._become(State.STREAMING)
        elif offset == self.stat.size == self.remote_size and not self.ctx.cfg.write.uniform_parts:
            self._become(State.STREAMING)  # an append: the object is its first bytes
            self.stream.base = self.stream.committed = self.remote_size
        return self.stream

    async def truncate(self, size: int) -> None:
        await self._finish_kept()
        if self.state is State.STREAMING:
            if size == 0:
                self.stream.reset()
                return
            if self.stream.truncate(size):
                return
            await self._leave_stream()
        cache = await self._cached()
        async with self.lock:  # not in the middle of a commit reading it
            cache.truncate(size)

    async def empty(self) -> None:
        """open(O_TRUNC): the file starts over (streamed, if it can), its mtime and ctime now."""
        if self.state is State.KEPT:  # all of it goes: nothing to finish
            self._discard_kept()
        if self.state is State.CACHED:
            async with self.lock:
                self.cache.truncate(0)
        elif self.attached:
            if self.state is not State.STREAMING:
                self._become(State.STREAMING)
            self.stream.reset()
        else:
            cache = await self._cached()
            async with self.lock:
                cache.truncate(0)
        t = now_ns()
        self.touch(self.stat.with_(size=0, mtime_ns=t, ctime_ns=t))

    def start_new(self) -> None:
        """A file created here: its first commit writes the object, even an empty one."""
        self._become(State.STREAMING)
        self.stream.reset()
        self.dirty = True
        self.untouched_new = True

    async def leave_stream(self) -> None:
        """Before an unlink or rename of a file still streaming (see _leave_stream)."""
        if self.state is State.STREAMING:
            await self._leave_stream()

    async def _leave_stream(self) -> None:
        """Move a streamed file to its write-back cache. With no upload running, the
        cache starts over the committed object (if any) and takes the bytes in memory;
        parts of an unfinished upload cannot be read back, so then everything is
        committed first and the cache starts over that object when needed."""
        while self.state is State.STREAMING:
            async with self.lock:
                stream = self.stream
                if stream is None:
                    return
                if stream.uploading:
                    pass  # commit below, outside the lock (commit takes it)
                else:
                    etag = None
                    if stream.committed:  # an append: the object at the key is the base
                        info = await self.ctx.store.head(self.key)
                        etag = info.etag if info is not None and info.size == stream.committed else None
                        if etag is None:
                            raise Stale("file changed in S3 while being appended to")
                    if self.stream is stream and not stream.uploading:
                        cache = self._new_cache(stream.committed if stream.committed else None, etag,
                                                stream.committed)
                        try:
                            await self.ctx.space.make_room(len(stream.buf))
                            await cache.write(stream.base, stream.buf.join(), self._base_fetcher(cache))
                            cache.truncate(stream.end)
                        except BaseException:
                            cache.remove()
                            raise
                        self._become(State.CACHED, cache=cache)
                        return
                    continue  # an upload started (budget pressure) while we asked S3: look again
            await self.commit()
            if self.stream is stream:
                self._become(State.ATTRS)

    # ------------------------------------------------------------------ the cache
    def _new_cache(self, base_size: int | None, base_etag: str | None, size: int) -> SparseFile:
        """A write-back cache over the object at the key (base_size None: none)."""
        return SparseFile(self.ctx.writeback_dir, key=self.key, path=self.path or "",
                          base_size=base_size or 0, base_etag=base_etag if base_size is not None else None,
                          size=size, metadata=encode_metadata(self.stat), fill_size=self.ctx.cfg.cache.fill_size)

    async def _cached(self) -> SparseFile:
        """The file's write-back cache, started over its object if there is none yet."""
        if self.state is State.STREAMING:
            await self._leave_stream()
        await self._finish_kept()
        if self.state is State.CACHED:
            return self.cache
        async with self.lock:
            if self.state is State.CACHED:
                return self.cache
            etag = None
            if self.remote_size is not None:
                key = self.object_key() if self.remote_size else self.key
                etag = self.stat.etag
                if etag is None:
                    info = await self.ctx.store.head(key)
                    if info is None or info.size != self.remote_size:
                        raise Stale()
                    etag = info.etag
            self._become(State.CACHED, cache=self._new_cache(
                self.remote_size, etag, self.stat.size if self.remote_size is not None else 0))
            return self.cache

    def _base_fetcher(self, cache: SparseFile | None = None, *, to_cache: bool = True):
        """Bytes of the base object; to_cache: they will be held locally (room first)."""
        cache = cache or self.cache

        async def fetch(start: int, end: int) -> bytes:
            if to_cache:
                await self.ctx.space.make_room(end - start)
            return await self.ctx.store.get_range(self.object_key(), start, end, cache.base_etag)
        return fetch

    async def write_back(self) -> None:
        """For the cache space: commit early, the disk budget is full of unsent data."""
        if self.state is State.CACHED:
            await self.commit()

    # ------------------------------------------------------------------ commit
    def hole_bytes(self) -> int:
        """Bytes past the base and past everything written: zeros a commit copies server-side."""
        c = self.cache
        if c is None or not self.dirty:
            return 0
        return c.size - max(c.base_end, max((e for _, e in c.valid), default=0))

    async def commit(self) -> None:
        """Make the object at the key what this mount holds (data, or attributes only).
        Raises on failure (S3 away past outage_patience, or refusing); the data stays,
        dirty, so a later commit can try again. A commit its file's removal stopped
        (stop_commits) just ends: there is nothing left to commit."""
        with trio.CancelScope() as scope:
            self._commits.add(scope)
            try:
                await self._commit()
            except FsError as e:
                if self.failed_since is None:
                    self.failed_since = time.time()
                self.last_error = str(e)
                raise
            finally:
                self._commits.discard(scope)

    async def stop_commits(self) -> None:
        """The file's name is about to be deleted, overwritten or moved, and nothing has it
        open: a commit under way (a far growth in the background, a retry of a kept file)
        is cancelled, its multipart upload aborted, and this returns once it has unwound,
        so it cannot write the object back after that DELETE, over the new file, or at the
        old name. Until `removing` is cleared no other commit starts."""
        self.removing = True  # and no new one starts (a retry waking up meanwhile)
        for scope in list(self._commits):
            scope.cancel()
        async with self.lock:
            pass

    async def _commit(self) -> None:
        if not self.dirty or not self.attached or self.removing:
            return
        async with self.lock:
            if not self.dirty or not self.attached or self.removing:
                return
            generation = self.generation
            key, meta = self.key, encode_metadata(self.stat)
            if self.state is State.STREAMING and not self.stream.clean():
                await self.stream.commit(meta)
            elif self.state is State.CACHED:
                await self._commit_cache(key, meta)
            elif self.state is State.KEPT:
                self.kept.metadata = meta
                await self.kept.resume(self.ctx.store, self.ctx.uploads, self.ctx.cfg.write)
                self._become(State.ATTRS)
            elif self.remote_size is not None:  # attributes only: rewrite metadata in place
                await copy_object(self.ctx.store, key, key, self.remote_size, meta, self.ctx.cfg.write)
            else:
                await self.ctx.store.put(key, b"", meta)
            self.ctx.hidden.unhide(key)  # an unlinked file hidden there lost its object
            replaced, self.remote_size = self.remote_size or 0, self.stat.size
            self.stat = self.stat.with_(etag=None)  # the new object's ETag is not known here
            if self.failed_since is not None:
                log.warning("committed %s, %.0f s after its commit first failed", self.path,
                            time.time() - self.failed_since)
                self.failed_since = self.last_error = None
            if self.generation == generation:
                self.dirty = False
                self.cancel_timer()  # nothing left for a commit an fsync put off
            if self.path is not None:
                self.ctx.committed(self.path, self.stat, replaced)

    async def _commit_cache(self, key: str, meta: dict[str, str]) -> None:
        cache = self.cache
        size = cache.size
        taken = cache.begin_commit()
        try:
            if not taken and size == cache.base_size == cache.base_end == self.remote_size:
                await copy_object(self.ctx.store, key, key, size, meta, self.ctx.cfg.write)  # attributes only
                etag = None
            else:
                fetch = self._base_fetcher(to_cache=False)  # into parts, not the cache
                self.commit_progress = CommitProgress()
                etag = await upload_sparse(self.ctx.store, key, cache, taken, meta, self.ctx.cfg.write, fetch,
                                           self.ctx.budget, self.ctx.zeros, self.commit_progress)
        except BaseException:
            cache.commit_failed(taken)
            raise
        finally:
            self.commit_progress = None
        if etag is None:
            info = await self.ctx.store.head(key)
            etag = info.etag if info is not None else None
        cache.metadata = meta
        cache.committed(size, etag)

    async def fsync(self) -> None:
        """Streamed: until every part sent so far is stored (the object itself appears
        at close). Cached: data and journal durable on local disk, and a commit due
        sync_interval from now (close commits sooner). Otherwise, or with
        sync_interval 0: commit, as close does."""
        if self.state is State.STREAMING:
            await self.stream.wait_sent()
            return
        interval = self.ctx.cfg.cache.sync_interval
        if interval and self.state is State.CACHED and self.dirty and self.attached:
            async with self.lock:
                if self.state is State.CACHED:
                    await self._sync_locally()
            self._put_off_commit(interval)
            return
        await self.commit()

    async def _sync_locally(self) -> None:
        """fsync without a commit: the cache file and its journal (with the metadata
        recovery would write) durable on local disk. The caller holds the lock, so no
        commit rewrites the journal meanwhile."""
        await trio.to_thread.run_sync(self.cache.sync, encode_metadata(self.stat))

    def _put_off_commit(self, interval: float) -> None:
        """After an fsync that only synced locally: a commit interval from now, unless
        one is due already (close, or a commit catching every change, cancels it)."""
        if self.commit_timer is None:
            self.commit_due = trio.current_time() + interval
            self.commit_timer = trio.CancelScope(deadline=self.commit_due)
            self.ctx.nursery.start_soon(self._commit_when_due, self.commit_timer)

    async def _commit_when_due(self, timer: trio.CancelScope) -> None:
        with timer:
            await trio.sleep_forever()  # until the timer's deadline
        if timer.cancelled_caught and self.commit_timer is timer:
            self.commit_timer = self.commit_due = None
            try:
                await self.commit()
            except FsError as e:  # the data stays cached and dirty: close or the next fsync retries
                log.error("commit of %s (fsynced %.0f s before) failed, kept for the next try: %s",
                          self.path, self.ctx.cfg.cache.sync_interval, e)

    def cancel_timer(self) -> None:
        if self.commit_timer is not None:
            self.commit_timer.cancel()
        self.commit_timer = self.commit_due = None

    async def keep(self, error: FsError) -> None:
        """A commit failed (S3 away past outage_patience, or refusing): keep the data
        for a later commit, which the mount tries in the background and the next mount
        at start-up. Streamed bytes go from memory to a spill file (the parts S3 stored
        stay in their upload); a cache is made durable as it is (with its journal)."""
        self.cancel_timer()  # the put-off commit is the background retry's now
        if not self.attached:  # unlinked meanwhile: nothing of it is to be kept
            return
        if self.state is State.STREAMING:
            async with self.lock:
                if self.state is State.STREAMING:
                    await self._spill()
        elif self.state is State.CACHED:
            async with self.lock:
                try:
                    await self._sync_locally()
                except FsError as why:
                    log.error("commit of %s failed (%s) and its cache could not be made durable: %s",
                              self.path, error, why)
                    return
            log.error("commit of %s failed: %s; its data stays in the cache (%s), committed when S3 takes it "
                      "(or at the next mount)", self.path, error, self.cache.data_path)

    async def _spill(self) -> None:
        held = await self.stream.kept()
        spilled = sum(len(body) for _, body in held["pieces"])
        stored = sum(1 for _ in held["parts"])
        try:
            await self.ctx.space.make_room(spilled)
            self.ctx.space.reserve(spilled)
            try:
                kept = await trio.to_thread.run_sync(lambda: Suspended.keep(
                    self.ctx.uploads.directory, self.ctx.uploads, key=self.key, path=self.path or "",
                    metadata=encode_metadata(self.stat), **held))
            except BaseException:
                self.ctx.space.give_back(spilled)
                raise
        except (OSError, FsError) as e:
            log.error("%s: its data could not be kept on local disk (%s): %d bytes lost; the object at its "
                      "key is unchanged", self.path, getattr(e, "strerror", None) or e, held["size"])
            if held["upload_id"] is not None:
                self.ctx.nursery.start_soon(self._abort_quietly, held["upload_id"])
            self._become(State.ATTRS)
            self.dirty = False
            return
        self._become(State.KEPT, kept=kept)
        log.error("commit of %s failed: %s; its data is kept: %d part(s) stored in S3's unfinished upload, "
                  "%d bytes in %s; committed when S3 takes them (or at the next mount)",
                  self.path, self.last_error, stored, spilled, kept.spill)

    async def _abort_quietly(self, upload_id: str) -> None:
        try:
            await self.ctx.store.abort_multipart(self.key, upload_id)
        except Exception as e:  # noqa: BLE001 - left in the upload log: the next mount aborts it
            log.warning("could not abort the upload of %s: %s", self.key, e)

    def _discard_kept(self) -> None:
        kept = self.kept
        self._become(State.ATTRS)
        self.ctx.nursery.start_soon(kept.discard, self.ctx.store, self.ctx.uploads)

    # ------------------------------------------------------------------ the end
    def close(self) -> None:
        """Drop what is held (the last handle is gone, nothing left to commit)."""
        self.cancel_timer()
        if self.cache is not None:
            self.cache.remove()
        if self.kept is not None:
            self._discard_kept()
        self._become(State.ATTRS)

    def progress(self) -> dict | None:
        """For `s3pvefs status`: where this file's pending bytes are; None: nothing pending."""
        failed = {"failed_since": self.failed_since, "error": self.last_error} if self.failed_since else {}
        if self.state is State.STREAMING:
            return {"kind": State.STREAMING.value, **self.stream.progress(), **failed}
        if not self.dirty:
            return None
        if self.state is State.KEPT:
            return {"kind": State.KEPT.value, "written": self.stat.size, "sent": self.stat.size - self.kept.spilled,
                    "stored": self.stat.size - self.kept.spilled, "parts_in_flight": 0, "local": self.kept.spilled,
                    **failed}
        if self.state is State.CACHED:
            under_way = self.commit_progress or CommitProgress()
            return {"kind": State.CACHED.value, "written": self.stat.size, "sent": under_way.sent,
                    "stored": under_way.stored, "parts_in_flight": under_way.parts_in_flight,
                    "dirty": self.cache.dirty_bytes, "local": self.cache.local_bytes,
                    "commit_in": (None if self.commit_due is None
                                  else round(max(0.0, self.commit_due - trio.current_time()), 1)), **failed}
        return {"kind": State.ATTRS.value, "written": 0, "sent": 0, "stored": 0, "parts_in_flight": 0, **failed}
