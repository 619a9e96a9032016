"""The filesystem core: POSIX operations on inodes, in terms of the ObjectStore.

Plain values in and out (Inode, Stat, bytes); errors are s3pvefs.errors exceptions.
No pyfuse3 here, so it is tested against the in-memory store without a kernel.

It composes its parts and keeps none of their rules: what a name is comes from the
namespace (namespace/resolver.py: caches, listings, hidden objects), where a file's
pending bytes are and how they are committed from its FileData (filedata.py), renames
from renames.py. Rules kept here (SEMANTICS.md says them for users):
- close commits: flush commits a file's pending data and attributes; its errors are
  the caller's.
- An open file that is unlinked stays readable: its data is local, or its object is
  hidden from listings and deleted when the last handle closes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat as st
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import trio

from s3pvefs.config import Config
from s3pvefs.errors import (BadHandle, Changed, Exists, FsError, IsADir, NotADir, NotEmpty, NotFound, ReadOnly,
                            Stale, StoreError)
from s3pvefs.fs.filedata import FileContext, FileData
from s3pvefs.fs.handles import DirHandle, FileHandle
from s3pvefs.fs.renames import RENAME_EXCHANGE, RENAME_NOREPLACE, move_object, move_tree
from s3pvefs.fs.usage import UsageMeter
from s3pvefs.fs.dirtimes import DirectoryTimes
from s3pvefs.write.zeros import Zeros
from s3pvefs.namespace.headers import concurrency_for
from s3pvefs.namespace.hidden import HiddenObjects
from s3pvefs.namespace.inodes import MIXED, ROOT_INO, Inode, InodeTable
from s3pvefs.namespace.keys import DIR_CONTENT_TYPE, RESERVED_RAW, ZEROS_NAME, KeyMapper, check_name, join_path
from s3pvefs.namespace.metacache import Listing, MetaCache
from s3pvefs.namespace.resolver import Resolver
from s3pvefs.namespace.stat import (DIR, FILE, SPECIAL, SYMLINK, Defaults, Stat, encode_metadata, implicit_dir,
                                    kind_of_mode, new_stat, now_ns)
from s3pvefs.read.prefetcher import Prefetcher
from s3pvefs.read.smallbodies import SmallBodies
from s3pvefs.store.base import ObjectStore
from s3pvefs.store.keyorder import KeyOrderedStore
from s3pvefs.write.budget import MemoryBudget
from s3pvefs.write.cachespace import CacheSpace
from s3pvefs.write.commitstore import CommitStore
from s3pvefs.write.recovery import Recovered, lock_cache, recover, recover_uploads
from s3pvefs.write.uploadlog import UploadLog
from s3pvefs.write.uploader import copy_object

log = logging.getLogger(__name__)

RETRY_FIRST, RETRY_MAX = 10.0, 300.0  # seconds between background tries of a commit that failed

__all__ = ["Filesystem", "FsStat", "RENAME_EXCHANGE", "RENAME_NOREPLACE"]


@dataclass(frozen=True)
class FsStat:
    block_size: int
    blocks: int
    free_blocks: int
    name_max: int = 255


# A file grown past its data by more than this (truncate -s 2T, qemu-img create -f raw
# 32G) is committed in a task of its own, at its close or its handle-less truncate, and
# the caller waits GROWTH_WAIT seconds at most for it: its server-side copies of zeros can
# take minutes (Ceph copies them physically, ~230 MiB/s on loopback), during which nothing
# could interrupt the caller (pyfuse3 answers no FUSE interrupt). Past that the commit
# goes on in the background, listed by `s3pvefs status`, kept and retried on failure.
BACKGROUND_GROWTH = 512 << 20
GROWTH_WAIT = 10.0
DIR_TIMES_AT_EXIT = 5.0  # seconds the unmount gives pending directory times


class Filesystem:
    def __init__(self, store: ObjectStore, config: Config, nursery: trio.Nursery,
                 clock=time.monotonic):
        store = KeyOrderedStore(store)  # a last close's HEAD-then-DELETE never races a write
        self.store = store
        self.cfg = config
        self.keys = KeyMapper(config.store.prefix)
        self.table = InodeTable()
        self.cache = MetaCache(config.cache, clock)
        m = config.mount
        self.defaults = Defaults(m.uid, m.gid, m.file_mode, m.dir_mode)
        self.root_stat = implicit_dir(self.defaults, now_ns())
        self.read_only = m.read_only
        self._nursery = nursery
        self._handles: dict[int, FileHandle | DirHandle] = {}
        self._next_fh = 1
        self.uploads = UploadLog(os.path.join(config.resolved_cache_dir(), "uploads", config.mount_id()))
        self.hidden = HiddenObjects(journal=self.uploads)
        self.bodies = SmallBodies()
        self.resolver = Resolver(store, self.keys, self.cache, self.defaults, self.hidden, nursery, config.cache,
                                 self.bodies, concurrency_for(config.store.max_connections))
        # "staging" on disk: where earlier versions left what the next mount recovers
        self.writeback_dir = os.path.join(config.resolved_cache_dir(), "staging", config.mount_id())
        self._recovered_dir = os.path.join(config.resolved_cache_dir(), "recovered")
        self._cache_lock: int | None = None
        self.space = CacheSpace(config.cache.disk_budget)
        self.budget = MemoryBudget(config.write.memory_budget,
                                   copies=2 if getattr(store, "data_plane", "python") == "crt" else 1)
        self.read_budget = MemoryBudget(config.read.readahead_budget)
        self.usage = UsageMeter(store, self.keys.dir_prefix(""), config.mount.usage_interval)
        self.dir_times = DirectoryTimes(store, self.keys, self.cache)
        self.files: dict[int, FileData] = {}  # ino -> what this mount holds of it
        self.commits = CommitStore(store, config.write.outage_patience, self.uploads)
        # The FUSE adapter sets this: the kernel's attributes of an inode are out of date
        # (another writer replaced its object); it asks GETATTR before it trusts them again.
        self.kernel_attrs_stale: Callable[[int], None] = lambda ino: None
        self._ctx = FileContext(self.commits, config, nursery, self.budget, self.space, self.writeback_dir,
                                self.hidden, self._committed, self.uploads,
                                Zeros(self.commits, self.keys.key(ZEROS_NAME)))

    # ------------------------------------------------------------------ helpers
    def _inode(self, ino: int) -> Inode:
        inode = self.table.get(ino)
        if inode is None:
            raise NotFound(f"inode {ino} unknown")
        return inode

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnly("mounted read-only")

    def path(self, inode: Inode) -> str:
        return self.table.path(inode)

    def _object_key(self, inode: Inode) -> str:
        """Where the inode's object is (its name's key, or hidden after an unlink); Stale
        once its name holds another file's object, or nothing."""
        data = self.files.get(inode.ino)
        if data is not None:
            return data.object_key()
        if not inode.attached:
            raise Stale()
        return self.keys.key(self.path(inode))

    def _new_handle(self, h: FileHandle | DirHandle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = h
        return fh

    def _handle(self, fh: int, kind=FileHandle):
        h = self._handles.get(fh)
        if not isinstance(h, kind):
            raise BadHandle(f"no open handle {fh}")
        return h

    def _dir(self, ino: int) -> Inode:
        inode = self._inode(ino)
        if inode.kind != DIR:
            raise NotADir("not a directory")
        return inode

    async def _child(self, parent_ino: int, raw: bytes) -> tuple[Inode, str, Stat | None]:
        """The named child of a directory and what it is (maybe only as a listing says)."""
        parent = self._dir(parent_ino)
        name = check_name(raw)
        path = join_path(self.path(parent), name)
        self.keys.key(path)  # ENAMETOOLONG before any request
        child = self.table.child(parent.ino, name)
        data = self.files.get(child.ino) if child is not None else None
        if data is not None:
            return parent, name, data.stat
        return parent, name, await self.resolver.resolve(self.path(parent), name)

    def _entries_changed(self, parent: Inode) -> None:
        """A name in parent was created, removed or renamed: its mtime and ctime are now."""
        t = now_ns()
        if parent.ino == ROOT_INO:
            self.root_stat = self.root_stat.with_(mtime_ns=t, ctime_ns=t)
        else:
            self.dir_times.changed(self.path(parent), t)

    def _remember(self, parent: Inode, name: str, s: Stat) -> Inode:
        inode = self.table.attach(parent.ino, name, s.kind)
        inode.lookups += 1
        return inode

    def _detach(self, inode: Inode) -> None:
        """The inode's name is gone (unlinked, replaced, or the name is another kind now)."""
        data = self.files.get(inode.ino)
        if data is not None:
            data.detach()
        self.table.detach(inode)

    # ------------------------------------------------------------------ file data
    def _data(self, inode: Inode, s: Stat) -> FileData:
        """What this mount holds of the file, made from its attributes as its headers say."""
        data = self.files.get(inode.ino)
        if data is None:
            if not inode.attached:  # renamed over while open: its name's key is another file's
                raise Stale()
            path = self.path(inode)
            data = FileData(self._ctx, self.keys.key(path), path, s, s.size)
            self.files[inode.ino] = data
            inode.pinned = True
        return data

    def _drop_data(self, inode: Inode, *, force: bool = False) -> None:
        """Nothing is open any more: what was held goes (after its last commit; a file
        whose commit failed stays until a background try succeeds, or it is removed)."""
        data = self.files.get(inode.ino)
        if data is not None and inode.open_handles == 0 and (force or not (data.dirty and data.attached)):
            data.close()
            del self.files[inode.ino]
            inode.pinned = False
            self.table.drop_if_unused(inode)

    def _committed(self, path: str, s: Stat, replaced: int = 0) -> None:
        """A file's commit reached S3: the metadata cache says what is there now, the
        kernel's pages of it (written or read here) are that version, and the usage
        counts its new size instead of the old."""
        self.usage.changed(self.keys.key(path), s.size - replaced)
        self.cache.invalidate(path)
        self.cache.put_stat(path, s)
        inode = self.table.lookup_path(path)
        if inode is not None and inode.kind != DIR:
            inode.kernel_pages = s.etag or MIXED
            for h in self._handles.values():
                if isinstance(h, FileHandle) and h.inode is inode and h.prefetcher is not None:
                    h.prefetcher.close()  # a reader here sees what was written here
                    h.prefetcher = None

    async def _commit_grown(self, inode: Inode, data: FileData) -> None:
        """Commit a far-grown file, waiting GROWTH_WAIT at most (see BACKGROUND_GROWTH)."""
        ended = self._commit_in_background_soon(inode, data)
        with trio.move_on_after(GROWTH_WAIT):
            await ended.wait()
        if not ended.is_set():
            log.info("%s: committing its growth goes on in the background", data.path)

    def _commit_in_background_soon(self, inode: Inode, data: FileData) -> trio.Event:
        """Start the file's commit in a task of its own; the event is set when it ends."""
        ended = trio.Event()
        data.in_background = True  # from now: a release must not wait for it
        self._nursery.start_soon(self._commit_in_background, inode, data, ended)
        return ended

    async def _commit_in_background(self, inode: Inode, data: FileData, ended: trio.Event) -> None:
        try:
            if data.dirty and data.attached:
                await data.commit()
        except FsError as e:
            log.error("could not commit %s: %s; kept, tried again in the background", data.path, e)
            await data.keep(e)
            self._keep_trying(inode, data)
        finally:
            data.in_background = False
            ended.set()
            if self.files.get(inode.ino) is data:
                self._drop_data(inode)

    @contextlib.asynccontextmanager
    async def _commits_stopped(self, inode: Inode | None, data: FileData | None, *, moving: bool = False):
        """While the name of a file nobody has open is deleted, overwritten or moved, none
        of its commits runs: one under way (a far growth's, a retry's) is stopped first,
        rather than waited for or let land after. Moved (or the change failed): its
        commit starts again in the background, at the name it has then."""
        if inode is None or data is None or inode.open_handles:
            yield
            return
        await data.stop_commits()
        done = False
        try:
            yield
            done = True
        finally:
            if moving or not done:
                data.removing = False
                if data.dirty and data.attached and not data.in_background:
                    self._commit_in_background_soon(inode, data)

    def _keep_trying(self, inode: Inode, data: FileData) -> None:
        """A commit failed with nobody left to tell (the last close): the data is kept
        (FileData.keep) and committed in the background once S3 takes it."""
        if not data.retrying:
            data.retrying = True
            self._nursery.start_soon(self._retry_commit, inode, data)

    async def _retry_commit(self, inode: Inode, data: FileData) -> None:
        delay = RETRY_FIRST
        try:
            while self.files.get(inode.ino) is data and data.dirty and data.attached:
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                try:
                    await data.commit()
                except FsError as e:
                    log.info("%s is still not committed (%s): next try in %.0f s", data.path, e, delay)
        finally:
            data.retrying = False
            if self.files.get(inode.ino) is data:
                self._drop_data(inode)

    def pending_files(self) -> list[tuple[str | None, int, dict]]:
        """(path, open handles, progress) of every file with something not committed."""
        out = []
        for ino, data in self.files.items():
            progress = data.progress()
            if progress is not None:
                inode = self.table.get(ino)
                out.append((data.path, inode.open_handles if inode is not None else 0, progress))
        return out

    # ------------------------------------------------------------------ attributes
    async def lookup(self, parent_ino: int, raw: bytes) -> tuple[Inode, Stat]:
        """The name's attributes as its headers say (the kernel checks access against
        them): a listing's answer is completed first."""
        if raw in RESERVED_RAW:  # not names: as absent (creating them is refused)
            raise NotFound(raw.decode())
        parent, name, s = await self._child(parent_ino, raw)
        s = await self.resolver.complete(join_path(self.path(parent), name), s)
        if s is None:
            raise NotFound(name)
        return self._remember(parent, name, s), s

    async def getattr(self, ino: int, *, complete: bool = False) -> Stat:
        """Attributes, from a cached HEAD or directory listing while they last. A listing
        has no user metadata: ``complete`` asks for the headers (before a change that
        rewrites them), as does a listing that disagrees with the inode's kind."""
        if ino == ROOT_INO:
            return self.root_stat
        inode = self._inode(ino)
        data = self.files.get(ino)
        if data is not None:
            return data.stat
        if not inode.attached:
            if inode.open_handles:  # replaced by a rename while open: as read() says
                raise Stale()
            raise NotFound("unlinked")
        path = self.path(inode)
        s = self.cache.lookup(path)
        if not isinstance(s, Stat) or (not s.complete and (complete or s.kind != inode.kind)):
            s = await self.resolver.stat(path)
        if s is None or s.kind != inode.kind:
            self._detach(inode)
            raise NotFound(path)
        return s

    async def fstat(self, ino: int) -> Stat:
        """What the kernel's GETATTR gets: the headers (as getattr), and for a file that
        another was renamed over while open, the attributes it had -- its bytes are gone
        (reads and writes on its handles: ESTALE), its fstat still answers."""
        inode = self.table.get(ino)
        if inode is not None and inode.replaced_stat is not None and inode.open_handles and ino not in self.files:
            return inode.replaced_stat  # set only as a rename takes its name away
        return await self.getattr(ino, complete=True)

    async def setattr(self, ino: int, *, size: int | None = None, mode: int | None = None,
                      uid: int | None = None, gid: int | None = None,
                      atime_ns: int | None = None, mtime_ns: int | None = None) -> Stat:
        self._writable()
        s = await self.getattr(ino, complete=True)
        t = now_ns()
        changes: dict = {"ctime_ns": t}
        if mode is not None:
            changes["mode"] = st.S_IFMT(s.mode) | st.S_IMODE(mode)
        if uid is not None:
            changes["uid"] = uid
        if gid is not None:
            changes["gid"] = gid
        if atime_ns is not None:
            changes["atime_ns"] = atime_ns
        if mtime_ns is not None:
            changes["mtime_ns"] = mtime_ns
        if ino == ROOT_INO:  # the root has no object; its attributes live for the mount
            self.root_stat = s.with_(**changes)
            return self.root_stat
        inode = self._inode(ino)
        if inode.kind == DIR:
            if size is not None:
                raise IsADir("cannot truncate a directory")
            path = self.path(inode)
            new = await self.dir_times.write_attributes(path, s.with_(**changes), mtime_ns is not None)
            self.cache.put_stat(path, new)
            return new
        data = self._data(inode, s)
        if size is not None:
            await data.truncate(size)
            changes.update(size=size, mtime_ns=mtime_ns or t)
        if data.stream is not None and (atime_ns is not None or mtime_ns is not None):
            data.stream.explicit_times = True
        data.touch(data.stat.with_(**changes))
        if inode.open_handles == 0 and size is not None and data.hole_bytes() > BACKGROUND_GROWTH:
            await self._commit_grown(inode, data)  # `truncate -s 1T`: see BACKGROUND_GROWTH
            return data.stat
        if inode.open_handles == 0:  # nobody will close it: commit now
            try:
                await data.commit()
            finally:
                self._drop_data(inode, force=True)  # a failed change was told to its caller
        return data.stat

    # ------------------------------------------------------------------ directories
    async def opendir(self, ino: int) -> int:
        """A directory handle with its snapshot taken (the core's tests read it at once)."""
        fh = self.opendir_unread(ino)
        await self.read_dir(fh)
        return fh

    def opendir_unread(self, ino: int) -> int:
        """A directory handle whose snapshot the first read_dir takes: opening a
        directory asks nothing of S3."""
        return self._new_handle(DirHandle(self._dir(ino)))

    async def read_dir(self, fh: int) -> None:
        """Take the handle's snapshot, unless it has one."""
        h = self._handle(fh, DirHandle)
        if h.entries is not None:
            return
        entries = await self.resolver.entries(self.path(h.inode))
        for child in self.table.children(h.inode.ino):
            data = self.files.get(child.ino)
            if data is not None and data.attached:  # created or changed here, not committed yet
                entries[child.name] = data.stat
        h.entries = sorted(entries.items())

    def dot_entries(self, fh: int) -> list[tuple[bytes, int]]:
        """(name, inode number) of "." and ".." of the handle's directory."""
        inode = self._handle(fh, DirHandle).inode
        return [(b".", inode.ino), (b"..", inode.parent)]

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Inode, Stat]]:
        """(next offset, name, inode, attributes) from offset start (after read_dir). The
        caller counts a lookup with ``remember`` only for entries the kernel accepted."""
        h = self._handle(fh, DirHandle)
        for offset in range(start, len(h.entries)):
            name, s = h.entries[offset]
            inode = self.table.attach(h.inode.ino, name, s.kind)
            yield offset + 1, name, inode, s

    def remember(self, inode: Inode) -> None:
        inode.lookups += 1

    def unused(self, inode: Inode) -> None:
        self.table.drop_if_unused(inode)

    def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    async def mkdir(self, parent_ino: int, raw: bytes, mode: int, uid: int, gid: int) -> tuple[Inode, Stat]:
        self._writable()
        parent, name, existing = await self._child(parent_ino, raw)
        if existing is not None:
            raise Exists(name)
        path = join_path(self.path(parent), name)
        s = new_stat(DIR, mode, uid, gid)
        await self.store.put(self.keys.dir_prefix(path), b"", encode_metadata(s), DIR_CONTENT_TYPE)
        self.cache.invalidate(path)
        self.cache.put_stat(path, s)
        self.cache.put_listing(path, Listing({}))  # nothing was there: names in it need no request
        self._entries_changed(parent)
        return self._remember(parent, name, s), s

    async def _dir_is_empty(self, inode: Inode, path: str) -> bool:
        for child in self.table.children(inode.ino):
            data = self.files.get(child.ino)
            if data is not None and data.attached:  # a file created here, not committed yet
                return False
        return await self.resolver.is_empty(path)

    async def rmdir(self, parent_ino: int, raw: bytes) -> None:
        self._writable()
        parent, name, s = await self._child(parent_ino, raw)
        if s is None:
            raise NotFound(name)
        if s.kind != DIR:
            raise NotADir(name)
        path = join_path(self.path(parent), name)
        inode = self.table.attach(parent.ino, name, DIR)
        if not await self._dir_is_empty(inode, path):
            raise NotEmpty(path)
        old_style = await self.resolver.old_style_marker(path)
        await self.store.delete(self.keys.dir_prefix(path))
        if old_style:  # or the directory comes back
            await self.store.delete(old_style)
        self.dir_times.forget(path)
        self.cache.invalidate_tree(path)
        self.cache.put_negative(path)
        self.table.detach(inode)
        self._entries_changed(parent)

    # ------------------------------------------------------------------ files
    async def create(self, parent_ino: int, raw: bytes, mode: int, flags: int,
                     uid: int, gid: int) -> tuple[int, Inode, Stat]:
        self._writable()
        parent, name, existing = await self._child(parent_ino, raw)
        if existing is not None:
            if flags & os.O_EXCL:
                raise Exists(name)
            inode = self._remember(parent, name, existing)
            return await self.open(inode.ino, flags), inode, await self.getattr(inode.ino, complete=True)
        s = new_stat(FILE, mode, uid, gid)
        path = join_path(self.path(parent), name)
        await self._keep_hidden_bytes(self.keys.key(path))
        inode = self.table.attach(parent.ino, name, FILE)
        data = FileData(self._ctx, self.keys.key(path), path, s, None)
        self.files[inode.ino] = data
        inode.pinned = True
        data.start_new()
        inode.lookups += 1
        self.cache.invalidate(path)
        self._entries_changed(parent)
        inode.open_handles += 1
        # The creating open's flush before any write commits nothing (a shell's `> f`),
        # unless it cannot write at all: O_CREAT|O_RDONLY (Proxmox's .protected) commits
        # the empty file at its close, like any other close.
        may_write = (flags & os.O_ACCMODE) != os.O_RDONLY
        return self._new_handle(FileHandle(inode, writable=True, created=may_write)), inode, s

    async def open(self, ino: int, flags: int) -> int:
        inode = self._inode(ino)
        if inode.kind == DIR:
            raise IsADir("is a directory")
        # O_TRUNC empties the file whatever the access mode (Linux does, having checked
        # write permission), and sets its mtime and ctime even when it was empty already
        # (`: > stamp`); such a handle commits at close like a writer's.
        truncates = bool(flags & os.O_TRUNC)
        writable = truncates or (flags & os.O_ACCMODE) != os.O_RDONLY
        if writable:
            self._writable()
        s = await self.getattr(ino, complete=truncates)
        inode.open_handles += 1
        try:
            if truncates:
                await self._data(inode, s).empty()
        except BaseException:
            self.table.release_handle(inode)
            raise
        h = FileHandle(inode, writable)
        if ino not in self.files and inode.kernel_pages not in (None, s.etag):
            # The kernel's pages are of another version (or several): it drops them at
            # this open, so whatever this reader gets comes through read() below.
            h.keep_cache = False
            inode.kernel_pages = None
        h.served = h.keep_cache and inode.kernel_pages is not None
        return self._new_handle(h)

    def keep_cache(self, fh: int) -> bool:
        """Whether the kernel may keep the pages it has of the file for this open."""
        return self._handle(fh).keep_cache

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        h = self._handle(fh)
        inode = h.inode
        data = self.files.get(inode.ino)
        if data is None and h.writable and size < self.cfg.cache.fill_size and inode.attached:
            data = self._data(inode, await self.getattr(inode.ino, complete=True))  # it may start a cache
        if data is not None:
            inode.kernel_pages = MIXED  # pages of what is written here, committed or not
            got = await data.read(offset, size, h.writable)
            if got is not None:
                return got
            self._object_key(inode)  # an error, never another file's bytes
            readable = data.readable_size()  # written through this mount: the object's part still valid
            if h.prefetcher is not None and (h.prefetcher.size != readable or h.prefetcher.etag is not None):
                h.prefetcher.close()
                h.prefetcher = None
            if h.prefetcher is None:
                h.prefetcher = self._prefetcher(inode, readable, None)
            return await h.prefetcher.read(offset, size)
        self._object_key(inode)
        if h.prefetcher is None or h.prefetcher.etag is None:
            if h.prefetcher is not None:
                h.prefetcher.close()
            s = await self.getattr(inode.ino)
            h.prefetcher = self._prefetcher(inode, s.size, s.etag)
            h.prefetcher.body = self.bodies.get(self._object_key(inode), s.etag)
            self._kernel_size_at_least(inode, s.size)
        p = h.prefetcher
        try:
            got = await p.read(offset, size)
        except Changed:
            if h.prefetcher is not p:  # a read beside this one already went on to the new version
                got = await h.prefetcher.read(offset, size)
            else:
                got = await self._read_new_version(h, offset, size)
        self._served(h)
        return got

    def _prefetcher(self, inode: Inode, size: int, etag: str | None) -> Prefetcher:
        return Prefetcher(self.store, lambda: self._object_key(inode), size, self.cfg.read, self._nursery,
                          self.read_budget, etag=etag)

    def _served(self, h: FileHandle) -> None:
        h.served = True
        pages = h.inode.kernel_pages
        h.inode.kernel_pages = h.prefetcher.etag if pages in (None, h.prefetcher.etag) else MIXED

    async def _read_new_version(self, h: FileHandle, offset: int, size: int) -> bytes:
        """Another writer replaced the object this handle was reading. A reader that got
        nothing of the old version yet gets the new one (whole: the kernel is told its
        size changed); one that got some of the old cannot get the rest: ESTALE."""
        inode, old = h.inode, h.prefetcher
        path = self.path(inode)
        self.cache.invalidate(path)
        s = await self.resolver.stat(path)
        if s is None or s.kind != inode.kind:
            self._detach(inode)
            raise Stale(f"{path} was removed by another writer while open")
        if h.served:
            self.kernel_attrs_stale(inode.ino)
            inode.kernel_pages = MIXED  # the next open drops the kernel's pages
            raise Changed(f"{path} was replaced by another writer while being read")
        log.info("%s was replaced by another writer: reading the new version (%d bytes)", path, s.size)
        old.close()
        h.prefetcher = self._prefetcher(inode, s.size, s.etag)
        self._kernel_size_at_least(inode, s.size)
        return await h.prefetcher.read(offset, size)

    def _kernel_size_at_least(self, inode: Inode, size: int) -> None:
        """The kernel cuts what a reader gets at the size it knows: when the version read
        is longer, it must ask again (GETATTR) once a reader is past its size. A shorter
        version it learns from the short read itself -- which it would not trust if its
        attributes were invalidated while the read is under way."""
        if 0 <= inode.kernel_size < size:
            self.kernel_attrs_stale(inode.ino)
            inode.kernel_size = -1

    def has_name(self, ino: int) -> bool:
        """False once the inode was unlinked or replaced by a rename (open handles keep it)."""
        inode = self.table.get(ino)
        return inode is None or inode.attached

    def told_kernel(self, ino: int, s: Stat) -> None:
        """The FUSE adapter handed the kernel these attributes of ino."""
        inode = self.table.get(ino)
        if inode is not None:
            inode.kernel_size = s.size
    async def write(self, fh: int, offset: int, data: bytes) -> int:
        h = self._handle(fh)
        if not h.writable:
            raise BadHandle("not open for writing")
        inode = h.inode
        held = self.files.get(inode.ino)
        if held is None:
            held = self._data(inode, await self.getattr(inode.ino, complete=True))
        return await held.write(offset, data)

    async def flush(self, fh: int) -> None:
        h = self._handle(fh)
        data = self.files.get(h.inode.ino)
        if data is None or not h.writable or (h.created and data.untouched_new):
            return  # a reader's close commits nothing (nor fails for what a writer left pending)
        if data.hole_bytes() > BACKGROUND_GROWTH:  # `truncate -s 2T` opens and ftruncates
            await self._commit_grown(h.inode, data)
            return
        try:
            await data.commit()
        except StoreError as e:
            log.error("commit of %s failed: %s", data.path, e)
            raise

    async def fsync(self, fh: int) -> None:
        h = self._handle(fh)
        data = self.files.get(h.inode.ino)
        if data is None:
            return
        try:
            await data.fsync()
        except StoreError as e:
            log.error("commit of %s failed: %s", data.path, e)
            raise

    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if not isinstance(h, FileHandle):
            return
        if h.prefetcher is not None:
            h.prefetcher.close()
        inode = h.inode
        data = self.files.get(inode.ino)
        try:
            if inode.open_handles == 1 and data is not None:
                if data.dirty and data.attached and not data.in_background:
                    try:  # close() already flushed; this catches writes through mmap and the like
                        await data.commit()
                    except FsError as e:
                        await data.keep(e)
                        self._keep_trying(inode, data)
                etag = self.hidden.etag_of(data.key, data)
                if etag is not None:  # unlinked while open: its object goes now, unless replaced
                    await self._delete_hidden(data.key, etag, data)
        finally:  # whatever failed above, the handle is gone
            inode.open_handles -= 1
            self._drop_data(inode)
            self.table.drop_if_unused(inode)

    async def commit_all(self) -> None:
        """Commit every file with pending changes (shutdown with files still open), so
        what was written is not dropped silently; each failure is logged by name."""
        for ino, data in list(self.files.items()):
            if data.dirty and data.attached:
                retried = data.failed_since is not None
                try:
                    await data.commit()
                    log.warning("committed %s, which was %s at shutdown", data.path,
                                "kept after a failed commit" if retried else "still open")
                except FsError as e:
                    log.error("could not commit %s at shutdown: %s", data.path, e)
                    await data.keep(e)  # on local disk for the next mount
        with trio.move_on_after(DIR_TIMES_AT_EXIT) as scope:  # times only: never hold an unmount for long
            await self.dir_times.flush()
        if scope.cancelled_caught:
            log.warning("directory times not all written at unmount (S3 slow or away)")
        # Files unlinked while open: no handle outlives the daemon, so their objects go now
        # (what is left here, the next mount deletes: write/uploadlog.py).
        with trio.move_on_after(DIR_TIMES_AT_EXIT):
            for key, etag, owner in self.hidden.entries():
                try:
                    await self._delete_hidden(key, etag, owner)
                except StoreError as e:
                    log.warning("could not delete %s, a file unlinked while open (%s): the next mount tries "
                                "again", key, e)

    async def unlink(self, parent_ino: int, raw: bytes) -> None:
        self._writable()
        parent, name, s = await self._child(parent_ino, raw)
        if s is None:
            raise NotFound(name)
        if s.kind == DIR:
            raise IsADir(name)
        path = join_path(self.path(parent), name)
        key = self.keys.key(path)
        inode = self.table.child(parent.ino, name)
        data = self.files.get(inode.ino) if inode is not None else None
        async with self._commits_stopped(inode, data):  # else a commit could put the object back
            await self._unlink(parent, path, key, inode, data, s)

    async def _unlink(self, parent: Inode, path: str, key: str, inode: Inode | None, data: FileData | None,
                      s: Stat) -> None:
        if data is not None:
            # Still being written: what was never sent goes to its cache; what was
            # sent is committed, and that object is then hidden like any other.
            await data.leave_stream()
        remote = data.remote_size is not None if data is not None else True
        if inode is not None and inode.open_handles and remote:
            # Still open and (some of) its data is only in S3: hide the object, delete it
            # at last close.
            etag = s.etag or getattr(await self.store.head(key), "etag", None)
            if not inode.open_handles:  # its last handle closed during the HEAD (a close
                await self.store.delete(key)  # returns before its release): nobody left to wait for
            elif etag:
                if data is None:  # keeps fstat() answering after the name is gone
                    data = self._data(inode, await self.resolver.complete(path, s) or s)
                data.hide(etag)
        elif remote:
            await self.store.delete(key)
        if remote:  # deleted now, or once its last handle closes
            self.usage.changed(key, -(data.remote_size or 0 if data is not None else s.size))
        if data is not None and not self.hidden.holds(key, data):
            data.remote_size = None  # no object of its own any more
        self.cache.invalidate(path)
        self.cache.put_negative(path)
        if inode is not None:
            self._detach(inode)
            self._drop_data(inode)  # nothing open: a cache or data kept for a later commit goes too
        self._entries_changed(parent)

    async def symlink(self, parent_ino: int, raw: bytes, target: bytes, uid: int, gid: int) -> tuple[Inode, Stat]:
        self._writable()
        parent, name, existing = await self._child(parent_ino, raw)
        if existing is not None:
            raise Exists(name)
        path = join_path(self.path(parent), name)
        s = new_stat(SYMLINK, 0o777, uid, gid, size=len(target))
        await self._keep_hidden_bytes(self.keys.key(path))
        await self.store.put(self.keys.key(path), target, encode_metadata(s))
        self.usage.changed(self.keys.key(path), len(target))
        self.hidden.unhide(self.keys.key(path))
        self.cache.invalidate(path)
        self.cache.put_stat(path, s)
        self._entries_changed(parent)
        return self._remember(parent, name, s), s

    async def mknod(self, parent_ino: int, raw: bytes, mode: int, rdev: int, uid: int, gid: int
                    ) -> tuple[Inode, Stat]:
        """A FIFO, socket or device node: an empty object with its type in the mode header
        (s3fs's way); a regular file: the empty object, at once. Hard links stay refused."""
        self._writable()
        kind = FILE if st.S_ISREG(mode) or st.S_IFMT(mode) == 0 else kind_of_mode(mode)
        if kind not in (FILE, SPECIAL):
            raise FsError(f"mknod of type {st.S_IFMT(mode):o}", err=errno.EINVAL)
        parent, name, existing = await self._child(parent_ino, raw)
        if existing is not None:
            raise Exists(name)
        path = join_path(self.path(parent), name)
        s = new_stat(FILE, mode, uid, gid)
        if kind == SPECIAL:
            s = s.with_(kind=SPECIAL, mode=st.S_IFMT(mode) | st.S_IMODE(mode),
                        rdev=rdev if st.S_IFMT(mode) in (st.S_IFCHR, st.S_IFBLK) else 0)
        key = self.keys.key(path)
        await self._keep_hidden_bytes(key)
        etag = await self.store.put(key, b"", encode_metadata(s))
        s = s.with_(etag=etag)
        self.hidden.unhide(key)
        self.cache.invalidate(path)
        self.cache.put_stat(path, s)
        self._entries_changed(parent)
        return self._remember(parent, name, s), s

    async def readlink(self, ino: int) -> bytes:
        inode = self._inode(ino)
        s = await self.getattr(ino)
        if s.kind != SYMLINK:
            raise FsError("not a symlink", err=errno.EINVAL)
        # bytes, not any buffer: pyfuse3 hands a link target to the kernel as a bytes object
        return bytes(await self.store.get_range(self._object_key(inode), 0, s.size))

    # ------------------------------------------------------------------ renames
    async def rename(self, old_parent: int, old_raw: bytes, new_parent: int, new_raw: bytes,
                     flags: int = 0) -> None:
        """A file is copied server-side to its new key and the old one deleted (what this
        mount holds of it follows); a directory moves every object under its prefix.
        Not atomic; nothing is deleted before its copy exists."""
        self._writable()
        if flags & RENAME_EXCHANGE:
            raise FsError("RENAME_EXCHANGE is not supported on S3", err=errno.ENOTSUP)
        src_parent, src_name, src = await self._child(old_parent, old_raw)
        dst_parent, dst_name, dst = await self._child(new_parent, new_raw)
        if src is None:
            raise NotFound(src_name)
        src_inode = self.table.attach(src_parent.ino, src_name, src.kind)
        if dst_parent.ino == src_parent.ino and dst_name == src_name:
            return
        if dst is not None and flags & RENAME_NOREPLACE:
            raise Exists(dst_name)
        src_path = join_path(self.path(src_parent), src_name)
        dst_path = join_path(self.path(dst_parent), dst_name)
        if src.kind == DIR:
            if self.table.is_ancestor(src_inode, dst_parent):
                raise FsError("cannot move a directory into itself", err=errno.EINVAL)
            if dst is not None:
                if dst.kind != DIR:
                    raise NotADir(dst_name)
                dst_inode = self.table.attach(dst_parent.ino, dst_name, DIR)
                if not await self._dir_is_empty(dst_inode, dst_path):
                    raise NotEmpty(dst_name)
                await self.store.delete(self.keys.dir_prefix(dst_path))
            old_style = await self.resolver.old_style_marker(src_path)
            await move_tree(self.resolver, src_path, dst_path, self.cfg.write)
            if old_style:
                await self.store.delete(old_style)
            self.dir_times.forget(src_path)
            for data in self.files.values():  # files open below it follow (their objects moved)
                if data.path is not None and data.path.startswith(src_path + "/"):
                    path = dst_path + data.path[len(src_path):]
                    data.rekey(self.keys.key(path), path)
            self.cache.invalidate_tree(src_path)
            self.cache.invalidate_tree(dst_path)
        else:
            if dst is not None and dst.kind == DIR:
                raise IsADir(dst_name)
            replaced = self.table.child(dst_parent.ino, dst_name) if dst is not None else None
            replaced_data = self.files.get(replaced.ino) if replaced is not None else None
            if replaced_data is not None and replaced_data.stream is not None:
                await self._stop_streaming(replaced, replaced_data)
            src_key, dst_key = self.keys.key(src_path), self.keys.key(dst_path)
            if dst is not None:
                self.usage.changed(dst_key, -dst.size)  # its object is overwritten
            data = self.files.get(src_inode.ino)
            async with self._commits_stopped(replaced, replaced_data), \
                    self._commits_stopped(src_inode, data, moving=True):  # else a commit writes the old key
                if replaced is not None and replaced is not src_inode and dst is not None:
                    await self._unlink_open(replaced, replaced_data, dst, dst_key)
                await self._keep_hidden_bytes(dst_key)
                if data is not None:
                    await self.store.refuse_if_locked(src_key)  # Object Lock: before anything is copied
                    await data.move_to(dst_key, dst_path, replacing=dst is not None)
                    moved = data.stat
                else:
                    await move_object(self.store, src_key, dst_key, src.size, self.cfg.write)
                    self.hidden.unhide(dst_key)
                    # a copy may have another ETag (a multipart copy always does); its
                    # LastModified, now, is the ctime read back (stat.decode)
                    moved = src.with_(etag=None, ctime_ns=now_ns())
            self.cache.invalidate(src_path)
            self.cache.invalidate(dst_path)
            self.cache.put_negative(src_path)
            self.cache.put_stat(dst_path, moved)
        if (replaced := self.table.child(dst_parent.ino, dst_name)) is not None and replaced is not src_inode:
            if replaced.open_handles and dst is not None and dst.kind == replaced.kind:
                replaced.replaced_stat = dst
            self._detach(replaced)
            self._drop_data(replaced)
        self.table.move(src_inode, dst_parent.ino, dst_name)
        self._entries_changed(src_parent)
        if dst_parent is not src_parent:
            self._entries_changed(dst_parent)

    async def _stop_streaming(self, inode: Inode, data: FileData) -> None:
        """A file another is renamed over while it streams: its bytes go to its cache for
        its handles (_unlink_open), unless an upload is running -- that upload is at the
        key the source lands on and can never be committed: its handles get ESTALE."""
        if inode.open_handles and not data.stream.uploading:
            try:
                await data.leave_stream()
                return
            except FsError as e:
                log.info("%s, renamed over while open, cannot keep its bytes: %s", self.path(inode), e)
        if data.stream is not None:
            data.stream.fail(Stale("file was replaced while open"))

    async def _unlink_open(self, inode: Inode, data: FileData | None, s: Stat, key: str) -> None:
        """Another file is renamed over one still open: as on a local disk its handles keep
        it (reads, writes, fstat), as an unlinked one's do -- its object hidden at key,
        which _keep_hidden_bytes then copies aside before the rename's copy lands there.
        Not for a file whose upload was running (_stop_streaming failed it), a file on an
        Object Lock bucket (a default retention could keep the copy aside), or a version
        other than the one its handles read (another node replaced it meanwhile): those
        handles get ESTALE."""
        if (not inode.open_handles or s.kind != inode.kind or s.kind != FILE
                or (data is not None and data.stream is not None)
                or getattr(self.store, "object_lock", False) is not False):
            return
        read = {h.prefetcher.etag for h in self._handles.values() if isinstance(h, FileHandle)
                and h.inode is inode and h.prefetcher is not None and h.prefetcher.etag}
        if len(read) > 1:
            return
        if data is None:
            data = self._data(inode, await self.resolver.complete(self.path(inode), s) or s)
        if data.remote_size is None:
            return  # nothing of it in S3: its bytes are all here
        etag = s.etag or getattr(await self.store.head(key), "etag", None)
        if etag is not None and (not read or etag in read):
            data.hide(etag)

    async def _keep_hidden_bytes(self, key: str) -> None:
        """A new file takes a name whose object an unlinked file still open holds, hidden
        at that key (unlink, or _unlink_open): the object is copied server-side to
        PREFIX/.s3pvefs-open/<random> first (recorded in cache_dir before, so the next
        mount deletes what a killed daemon left), deleted at the name, and the open file
        goes on there, reading and writing as before; its last close deletes the copy.
        Another version there than the one hidden (another node's), or a copy that
        fails: the open file loses its bytes (ESTALE)."""
        owner = self.hidden.owner_of(key)
        if not isinstance(owner, FileData):
            return
        hidden_etag = self.hidden.etag_of(key, owner)
        aside = self.keys.aside_key(uuid.uuid4().hex)
        self.uploads.set_aside(aside)
        try:
            there = await self.store.head(key)
            if there is None or there.etag != hidden_etag:
                await self._delete_aside(aside)
                return
            await copy_object(self.store, key, aside, there.size, there.metadata or {}, self.cfg.write)
            info = await self.store.head(aside)
        except StoreError as e:
            log.warning("a file unlinked while open could not keep its bytes as its name was taken again "
                        "(%s): its handles get ESTALE", e)
            await self._delete_aside(aside)
            return
        if info is None or not self.hidden.holds(key, owner):  # its last close came meanwhile
            await self._delete_aside(aside)
            return
        owner.hidden_at(aside, info.etag)
        # Gone from the name too, or it shows again if the new file is never committed
        # (its record, made when it was hidden, stays until then).
        try:
            await self.store.delete_if_unchanged(key, hidden_etag)
        except StoreError as e:
            log.warning("could not delete %s, a file unlinked while open (%s): the next mount tries again", key, e)
            return
        self.uploads.unhidden(key)

    async def _delete_hidden(self, key: str, etag: str, owner: FileData) -> None:
        """The last close of a file unlinked while open (or the unmount): its object goes."""
        await self.store.delete_if_unchanged(key, etag)
        self.hidden.take(key, owner)
        if self.keys.is_aside(key):
            self.uploads.finished(key)

    async def _delete_aside(self, aside: str) -> None:
        try:
            await self.store.delete(aside)
        except StoreError as e:
            log.warning("could not delete %s, kept for a file open when its name was taken (%s): "
                        "the next mount tries again", aside, e)
            return
        self.uploads.finished(aside)

    # ------------------------------------------------------------------ misc
    async def recover(self) -> list[Recovered]:
        """Take this mount's cache directory and deal with what a killed daemon left in
        it (write/recovery.py). Before the mount is served: nobody sees the old bytes."""
        if self._cache_lock is None:
            self._cache_lock = lock_cache(self.writeback_dir)
        return (await recover(self.commits, self.writeback_dir, self._recovered_dir, self.cfg.write)
                + await recover_uploads(self.commits, self.uploads, self.cfg.write))

    def forget(self, inode_list) -> None:
        for ino, count in inode_list:
            self.table.forget(ino, count)

    def statfs(self) -> FsStat:
        """Local only: the configured capacity, less the last background count of the
        bytes used (fs/usage.py) if there is one; a bucket fuller than the capacity
        shows as full, never as zero blocks (Proxmox takes 0 for a dead storage)."""
        bs = 4096
        used = -(-self.usage.used // bs) if self.usage.used else 0
        blocks = max(1, self.cfg.mount.capacity // bs, used)
        return FsStat(bs, blocks, blocks - used)

    def open_file_count(self) -> int:
        return sum(1 for h in self._handles.values() if isinstance(h, FileHandle))
