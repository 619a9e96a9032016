"""The filesystem core: POSIX operations on inodes, in terms of the ObjectStore.

Plain values in and out (Inode, Stat, bytes); errors are s3pvefs.errors exceptions.
No pyfuse3 here, so it is tested against the in-memory store without a kernel.

Rules kept here (SEMANTICS.md says them for users):
- close commits: flush uploads a file's pending data and attributes; its errors
  are the caller's.
- A directory shadows a file of the same name.
- An open file that is unlinked stays readable: its data is local, or its object
  is hidden from listings and deleted when the last handle closes.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as st
import time
from dataclasses import dataclass
from typing import Iterator

import trio

from s3pvefs.config import Config
from s3pvefs.errors import (BadHandle, Exists, FsError, IsADir, NotADir, NotEmpty, NotFound,
                            ReadOnly, StoreError, single_error)
from s3pvefs.fs.cached import CachedFiles
from s3pvefs.fs.handles import DirHandle, FileHandle, LocalFile
from s3pvefs.fs.renames import Renames
from s3pvefs.fs.streamed import StreamedFiles
from s3pvefs.fs.usage import UsageMeter
from s3pvefs.namespace.freshness import Freshness
from s3pvefs.namespace.headers import HeaderReader
from s3pvefs.namespace.inodes import ROOT_INO, Inode, InodeTable
from s3pvefs.namespace.keys import (DIR_CONTENT_TYPE, FOLDER_SUFFIX, KeyMapper, check_name, join_path,
                                    listable_name)
from s3pvefs.namespace.metacache import Listing, MetaCache, parent_of
from s3pvefs.namespace.stat import (DIR, FILE, SYMLINK, Defaults, Stat, decode, encode_metadata,
                                    implicit_dir, new_stat, now_ns)
from s3pvefs.read.prefetcher import Prefetcher
from s3pvefs.store.base import ObjectStore
from s3pvefs.write.budget import MemoryBudget
from s3pvefs.write.cachespace import CacheSpace
from s3pvefs.write.sparse import SparseFile
from s3pvefs.write.uploader import copy_object

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class FsStat:
    block_size: int
    blocks: int
    free_blocks: int
    name_max: int = 255


class Filesystem(StreamedFiles, CachedFiles, Renames):
    """Resolution, attributes, directories and the file operations; how a file's data
    travels is in the mixins: streamed.py (sequential writes, straight to S3),
    cached.py (files changed in place), renames.py."""

    def __init__(self, store: ObjectStore, config: Config, nursery: trio.Nursery,
                 clock=time.monotonic):
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
        self._hidden: dict[str, str] = {}  # key -> etag of unlinked objects still open
        self._hidden_inodes: dict[str, Inode] = {}  # key -> the unlinked inode hidden there
        self._staging_dir = os.path.join(config.resolved_cache_dir(), "staging", config.mount_id())
        self._recovered_dir = os.path.join(config.resolved_cache_dir(), "recovered")
        self.space = CacheSpace(config.cache.disk_budget, self._write_back)
        self._sparse_owner: dict[SparseFile, Inode] = {}
        self._cache_lock: int | None = None
        self.fresh = Freshness(self._fetch_stat, self.cache, nursery, config.cache.stale_answer_after)
        self.headers = HeaderReader(store, self.keys, self.cache, self.defaults, nursery,
                                    hidden=lambda key, etag: self._hidden.get(key) == etag)
        self.usage = UsageMeter(store, self.keys.dir_prefix(""), config.mount.usage_interval)
        self.budget = MemoryBudget(config.write.memory_budget)
        self.read_budget = MemoryBudget(config.read.readahead_budget)

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

    def key(self, inode: Inode) -> str:
        return inode.frozen_key or self.keys.key(self.path(inode))

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

    # ------------------------------------------------------------------ resolution
    async def _fetch_stat(self, path: str) -> Stat | None:
        """Ask S3 what path is. A name the parent's fresh listing shows needs only its
        headers (namespace/headers.py: one HEAD, read ahead with its neighbours);
        otherwise HEAD of the file key, HEAD of the directory marker and a one-key
        LIST of the directory prefix, in parallel (one round trip)."""
        listing = self.cache.listings.get(parent_of(path))
        listed = listing.entries.get(path.rpartition("/")[2]) if listing is not None else None
        if listed is not None and not listed.complete:
            s = await self.headers.read(path, listed)
            if s is not None:
                return s
        key, prefix = self.keys.key(path), self.keys.dir_prefix(path)
        found: dict[str, object] = {}

        async def head_file():
            found["file"] = await self.store.head(key)

        async def head_marker():
            found["marker"] = await self.store.head(prefix)

        async def list_prefix():
            found["list"] = await self.store.list_page(prefix, "/", None, 2)

        with single_error():
            async with trio.open_nursery() as n:
                n.start_soon(head_file)
                n.start_soon(head_marker)
                n.start_soon(list_prefix)
        page, marker, info = found["list"], found["marker"], found["file"]
        children = [o for o in page.objects if o.key != prefix and self._hidden.get(o.key) != o.etag]
        busy = bool(children or page.prefixes)
        if marker is None and self._hidden_under(prefix):  # maybe only unlinked files still open
            busy = await self._has_visible(prefix, marker=False)
        if marker is not None or busy:
            s = decode(marker, DIR, self.defaults) if marker else implicit_dir(self.defaults, now_ns())
        elif info is not None and self._hidden.get(key) != info.etag:
            s = decode(info, FILE, self.defaults)
        else:
            self.cache.put_negative(path)
            return None
        self.cache.put_stat(path, s)
        return s

    async def _resolve(self, parent: Inode, name: str) -> Stat | None:
        child = self.table.child(parent.ino, name)
        if child is not None and child.local is not None:
            return child.local.stat
        parent_path = self.path(parent)
        path = join_path(parent_path, name)
        cached = self.cache.lookup(path)
        if cached is None and path not in self.cache.last_known and self.cache.worth_relisting(parent_path):
            # The names answer for those not there (cp -r asks before each create); one
            # that is there still gets its headers read (mode, times: a hookscript's x bit).
            listing = await self._fetch_listing(parent_path)
            self.cache.put_names(parent_path, set(listing.entries))
            cached = self.cache.lookup(path)
        if cached is False:
            return None
        if cached is not None:
            return cached
        return await self.fresh.stat(path)

    def _dir(self, ino: int) -> Inode:
        inode = self._inode(ino)
        if inode.kind != DIR:
            raise NotADir("not a directory")
        return inode

    async def _child(self, parent_ino: int, raw: bytes) -> tuple[Inode, str, Stat | None]:
        parent = self._dir(parent_ino)
        name = check_name(raw)
        self.keys.key(join_path(self.path(parent), name))  # ENAMETOOLONG before any request
        return parent, name, await self._resolve(parent, name)

    def _remember(self, parent: Inode, name: str, s: Stat) -> Inode:
        inode = self.table.attach(parent.ino, name, s.kind)
        inode.lookups += 1
        return inode

    # ------------------------------------------------------------------ attributes
    async def lookup(self, parent_ino: int, raw: bytes) -> tuple[Inode, Stat]:
        """The name's attributes as its headers say (the kernel checks access against
        them): a listing's answer is completed first."""
        parent, name, s = await self._child(parent_ino, raw)
        if s is not None and not s.complete:
            s = await self.fresh.stat(join_path(self.path(parent), name))
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
        if inode.local is not None:
            return inode.local.stat
        if not inode.attached:
            if inode.open_handles:  # replaced by a rename while open: as read() says
                raise FsError("file was replaced or removed while open", err=errno.ESTALE)
            raise NotFound("unlinked")
        path = self.path(inode)
        s = self.cache.lookup(path)
        if not isinstance(s, Stat) or (not s.complete and (complete or s.kind != inode.kind)):
            s = await self.fresh.stat(path)
        if s is None or s.kind != inode.kind:
            self.table.detach(inode)
            raise NotFound(path)
        return s

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
            new = s.with_(**changes)
            path = self.path(inode)
            await self.store.put(self.keys.dir_prefix(path), b"", encode_metadata(new), DIR_CONTENT_TYPE)
            self.cache.put_stat(path, new)
            return new
        local = self._local(inode, s)
        if size is not None:
            await self._truncate(inode, size)
            changes.update(size=size, mtime_ns=mtime_ns or t)
        if local.stream is not None and (atime_ns is not None or mtime_ns is not None):
            local.stream.explicit_times = True
        local.touch(local.stat.with_(**changes))
        if inode.open_handles == 0:  # nobody will close it: commit now
            try:
                await self._commit(inode)
            finally:
                self._drop_local(inode)
        return local.stat

    # ------------------------------------------------------------------ directories
    async def _list_dir(self, path: str) -> Listing:
        listing = self.cache.listings.get(path)
        if listing is None:
            listing = await self._fetch_listing(path)
            self.cache.put_listing(path, listing)
        return listing

    async def _fetch_listing(self, path: str) -> Listing:
        """A full paginated LIST of the directory at path."""
        prefix = self.keys.dir_prefix(path)
        files: dict[str, Stat] = {}
        dirs: dict[str, Stat] = {}
        t = now_ns()
        token = None
        while True:
            page = await self.store.list_page(prefix, "/", token)
            for p in page.prefixes:
                name = p[len(prefix):-1]
                if self._hidden_under(p) and not await self._has_visible(p, marker=True):
                    continue  # only unlinked files still open are left there
                if listable_name(name):
                    dirs.setdefault(name, implicit_dir(self.defaults, t).with_(complete=False))
            for o in page.objects:
                rest = o.key[len(prefix):]
                if not rest or self._hidden.get(o.key) == o.etag:
                    continue
                if rest.endswith(FOLDER_SUFFIX):
                    name = rest[: -len(FOLDER_SUFFIX)]
                    if listable_name(name):
                        dirs.setdefault(name, implicit_dir(self.defaults, t).with_(complete=False))
                elif listable_name(rest):
                    files[rest] = decode(o, FILE, self.defaults)
            token = page.next_token
            if not token:
                break
        return Listing({**files, **dirs})  # a directory shadows a file of the same name

    async def opendir(self, ino: int) -> int:
        inode = self._dir(ino)
        path = self.path(inode)
        entries = dict((await self._list_dir(path)).entries)
        self._merge_known(path, entries)
        unread = [name for name, s in entries.items() if not s.complete]
        if unread and (self.cfg.cache.listing_heads or len(unread) <= self.cfg.cache.listing_heads_below):
            await self.headers.read_all(path, unread)  # the listing shows real modes and times
            self._merge_known(path, entries)
        for child in self.table.children(ino):
            if child.local is not None:  # created here, not committed yet
                entries[child.name] = child.local.stat
        return self._new_handle(DirHandle(inode, sorted(entries.items())))

    def _merge_known(self, path: str, entries: dict[str, Stat]) -> None:
        """Listed entries whose headers were read (a HEAD knows more than a LIST)."""
        for name, s in entries.items():
            known = self.cache.stats.get(join_path(path, name))
            if known is not None and (known.kind == s.kind or (s.kind, known.kind) == (FILE, SYMLINK)):
                entries[name] = known  # a LIST cannot tell a symlink from a file

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Inode, Stat]]:
        """(next offset, name, inode, attributes) from offset start. The caller counts
        a lookup with ``remember`` only for entries the kernel accepted."""
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
        return self._remember(parent, name, s), s

    async def _dir_is_empty(self, inode: Inode, path: str) -> bool:
        if any(c.local is not None and c.attached for c in self.table.children(inode.ino)):
            return False
        prefix = self.keys.dir_prefix(path)
        if self._hidden_under(prefix):
            return not await self._has_visible(prefix, marker=False)
        page = await self.store.list_page(prefix, "/", None, 3)
        others = [o for o in page.objects
                  if o.key != prefix and self._hidden.get(o.key) != o.etag]
        return not others and not page.prefixes

    def _hidden_under(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self._hidden)

    async def _has_visible(self, prefix: str, *, marker: bool) -> bool:
        """Whether any object under prefix is not a hidden one (an unlinked file still
        open); the prefix's own marker counts if ``marker``. A full LIST, so only
        for prefixes that hold hidden keys: a delimited LIST shows such a prefix
        even when nothing else is left in it."""
        token = None
        while True:
            page = await self.store.list_page(prefix, None, token)
            if any((marker or o.key != prefix) and self._hidden.get(o.key) != o.etag
                   for o in page.objects):
                return True
            token = page.next_token
            if not token:
                return False

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
        await self.store.delete(self.keys.dir_prefix(path))
        self.cache.invalidate_tree(path)
        self.cache.put_negative(path)
        self.table.detach(inode)

    # ------------------------------------------------------------------ files
    def _local(self, inode: Inode, s: Stat) -> LocalFile:
        """The file's local state, made from its attributes as read from its headers
        (a commit writes them back: a listing's defaults must never get there)."""
        if inode.local is None:
            if not s.complete:
                raise FsError(f"attributes of {self.path(inode)} not read", err=errno.EIO)
            inode.local = LocalFile(stat=s, remote_size=s.size)
        return inode.local

    async def _truncate(self, inode: Inode, size: int) -> None:
        local = inode.local
        if local.stream is not None:
            if size == 0:
                local.stream.reset()
                return
            if local.stream.truncate(size):
                return
            await self._unstream(inode)
        await self._load(inode)
        async with local.lock:  # not in the middle of a commit reading it
            local.staged.truncate(size)

    async def _load(self, inode: Inode) -> LocalFile:
        """Make the file's whole contents local (staged) before a change to its data."""
        local = inode.local
        if local.stream is not None:
            await self._unstream(inode)
        if local.staged is not None:
            return local
        async with local.lock:
            if local.staged is not None:
                return local
            if local.remote_size and not inode.attached and inode.frozen_key not in self._hidden:
                # As in read(): its key holds another file's object now, or nothing.
                raise FsError("file was replaced or removed while open", err=errno.ESTALE)
            etag = None
            if local.remote_size is not None:
                etag = local.stat.etag
                if etag is None:
                    info = await self.store.head(self.key(inode))
                    if info is None or info.size != local.remote_size:
                        raise FsError("file was replaced or removed while open", err=errno.ESTALE)
                    etag = info.etag
            local.staged = self._new_sparse(inode, local.remote_size, etag,
                                            local.stat.size if local.remote_size is not None else 0)
        return local

    def _drop_local(self, inode: Inode) -> None:
        if inode.local is not None and inode.open_handles == 0:
            if inode.local.staged is not None:
                self._drop_sparse(inode.local.staged)
                inode.local.staged = None
            inode.local.close()
            inode.local = None
            self.table.drop_if_unused(inode)

    async def _commit(self, inode: Inode) -> None:
        """Upload what is pending for inode (data, or attributes only). Raises on failure;
        the data stays staged and dirty so a later flush can try again."""
        local = inode.local
        if local is None or not local.dirty or not inode.attached:
            return
        async with local.lock:
            if not local.dirty or not inode.attached:
                return
            generation = local.generation
            path = self.path(inode)
            key = self.keys.key(path)
            meta = encode_metadata(local.stat)
            if local.stream is not None and not local.stream.clean():
                await local.stream.commit(meta)
            elif local.staged is not None:
                await self._commit_sparse(inode, key, meta)
            elif local.remote_size is not None:  # attributes only: rewrite metadata in place
                await copy_object(self.store, key, key, local.remote_size, meta, self.cfg.write)
            else:
                await self.store.put(key, b"", meta)
            self._unhide(key)
            local.remote_size = local.stat.size
            local.stat = local.stat.with_(etag=None)  # the new object's ETag is not known here
            if local.generation == generation:
                local.dirty = False
                local.cancel_timer()  # nothing left for a commit an fsync put off
            self.cache.invalidate(path)
            self.cache.put_stat(path, local.stat.with_(etag=None))

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
        inode = self.table.attach(parent.ino, name, FILE)
        local = LocalFile(stat=s, remote_size=None, dirty=True)
        inode.local = local
        local.stream = self._new_stream(inode)
        local.stream.reset()  # the first commit writes the object, even an empty one
        inode.lookups += 1
        path = join_path(self.path(parent), name)
        self.cache.invalidate(path)
        inode.open_handles += 1
        return self._new_handle(FileHandle(inode, writable=True)), inode, s

    async def open(self, ino: int, flags: int) -> int:
        inode = self._inode(ino)
        if inode.kind == DIR:
            raise IsADir("is a directory")
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if writable or flags & os.O_TRUNC:
            self._writable()
        s = await self.getattr(ino, complete=bool(writable and flags & os.O_TRUNC))
        inode.open_handles += 1
        try:
            if flags & os.O_TRUNC and writable and s.size:
                local = self._local(inode, s)
                if local.staged is not None:
                    async with local.lock:
                        local.staged.truncate(0)
                elif inode.attached:
                    if local.stream is None:
                        local.stream = self._new_stream(inode)
                    local.stream.reset()
                else:
                    await self._load(inode)
                    async with local.lock:
                        local.staged.truncate(0)
                t = now_ns()
                local.touch(local.stat.with_(size=0, mtime_ns=t, ctime_ns=t))
        except BaseException:
            self.table.release_handle(inode)
            raise
        return self._new_handle(FileHandle(inode, writable))

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        h = self._handle(fh)
        inode = h.inode
        local = inode.local
        if local is not None and local.stream is not None:
            data = await self._read_streamed(inode, local.stream, offset,
                                             min(size, max(0, local.stat.size - offset)))
            if data is not None:
                return data
            await self._unstream(inode)  # bytes in parts of an upload: commit, then read the object
        if h.writable and size < self.cfg.cache.fill_size and inode.attached and (local is None or (
                local.stream is None and local.staged is None)):
            # A small read through a handle open for writing (a VM disk, QEMU opens them
            # O_RDWR): the cache fetches fill_size around it and keeps it for the next ones.
            local = self._local(inode, await self.getattr(inode.ino, complete=True))
            await self._load(inode)
        if local is not None and local.staged is not None:
            sparse = local.staged
            end = min(offset + size, sparse.size)
            if not (end - offset >= self.cfg.cache.fill_size and sparse.untouched(offset, end)):
                return await sparse.read(offset, size, self._base_fetcher(inode, sparse))
            # a long read of bytes only the base has: from S3 with read-ahead, not cached
        if not inode.attached and (inode.frozen_key is None or inode.frozen_key not in self._hidden):
            # Its name is gone (unlinked, replaced by a rename) and its key holds another
            # file's object now, or nothing: an error, never another file's bytes.
            raise FsError("file was replaced or removed while open", err=errno.ESTALE)
        if local is not None:  # written through this mount: the object's part still valid
            readable = local.staged.base_end if local.staged is not None else local.stat.size
        else:
            readable = (await self.getattr(inode.ino)).size
        if h.prefetcher is not None and h.prefetcher.size != readable:
            h.prefetcher.close()
            h.prefetcher = None
        if h.prefetcher is None:
            h.prefetcher = Prefetcher(self.store, lambda: self.key(inode), readable, self.cfg.read,
                                      self._nursery, self.read_budget)
        return await h.prefetcher.read(offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        h = self._handle(fh)
        if not h.writable:
            raise BadHandle("not open for writing")
        inode = h.inode
        local = self._local(inode, inode.local.stat if inode.local
                            else await self.getattr(inode.ino, complete=True))
        n = len(data)
        stream = self._stream_for_write(inode, offset)
        if stream is not None:
            async with local.lock:
                taken = local.stream is stream and await stream.write(offset, data)
            if not taken:
                await self._load(inode)  # not sequential: the staging path takes over
        if local.stream is None:
            await self._load(inode)
            n = await self._sparse_write(inode, local.staged, offset, data)
        t = now_ns()
        local.touch(local.stat.with_(size=max(local.stat.size, offset + n), mtime_ns=t, ctime_ns=t))
        return n

    async def flush(self, fh: int) -> None:
        h = self._handle(fh)
        try:
            await self._commit(h.inode)
        except StoreError as e:
            log.error("commit of %s failed: %s", self.path(h.inode), e)
            raise

    async def fsync(self, fh: int) -> None:
        """A streamed file: until every part sent so far is stored (the object itself
        appears at close). A cached file: its data and journal made durable on local
        disk, and a commit due sync_interval from now (close commits sooner).
        Otherwise, or with sync_interval 0: commit, as close does."""
        inode = self._handle(fh).inode
        local = inode.local
        if local is not None and local.stream is not None:
            await local.stream.wait_sent()
            return
        interval = self.cfg.cache.sync_interval
        if interval and local is not None and local.staged is not None and local.dirty and inode.attached:
            async with local.lock:
                if local.staged is not None:
                    await self._sync_locally(local)
            self._put_off_commit(inode, interval)
            return
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if not isinstance(h, FileHandle):
            return
        if h.prefetcher is not None:
            h.prefetcher.close()
        inode = h.inode
        try:
            if inode.open_handles == 1:
                if inode.local is not None and inode.local.dirty and inode.attached:
                    try:  # close() already flushed; this catches writes through mmap and the like
                        await self._commit(inode)
                    except FsError as e:
                        await self._give_up_commit(inode, e)
                if inode.frozen_key is not None:
                    await self._delete_hidden(inode.frozen_key)
        finally:  # whatever failed above, the handle is gone
            inode.open_handles -= 1
            self._drop_local(inode)
            self.table.drop_if_unused(inode)

    async def commit_all(self) -> None:
        """Commit every file with pending changes (shutdown with files still open), so
        what was written is not dropped silently; each failure is logged by name."""
        for inode in self.table.with_local():
            if inode.local.dirty and inode.attached:
                try:
                    await self._commit(inode)
                    log.warning("committed %s, which was still open at shutdown", self.path(inode))
                except FsError as e:
                    log.error("could not commit %s at shutdown: %s", self.path(inode), e)

    def _unhide(self, key: str) -> None:
        """Another object was written at key: the unlinked open file hidden there lost
        its data (its handles get ESTALE) and its last close deletes nothing."""
        self._hidden.pop(key, None)
        inode = self._hidden_inodes.pop(key, None)
        if inode is not None:
            inode.frozen_key = None

    async def _delete_hidden(self, key: str) -> None:
        self._hidden_inodes.pop(key, None)
        etag = self._hidden.pop(key, None)
        if etag is None:
            return
        info = await self.store.head(key)
        if info is not None and info.etag == etag:  # not replaced meanwhile
            await self.store.delete(key)

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
        local = inode.local if inode is not None else None
        if local is not None and local.stream is not None:
            # Still being written: what was never sent goes to a staging file; what
            # was sent is committed, and that object is then hidden like any other.
            await self._unstream(inode)
        remote = local.remote_size is not None if local is not None else True
        if local is not None and local.staged is not None:
            local.staged.forget_key()  # its cached data is no file's any more: never recovered
        if inode is not None and inode.open_handles and remote:
            # Still open and (some of) its data is only in S3: hide the object, delete it
            # at last close.
            etag = s.etag or getattr(await self.store.head(key), "etag", None)
            if not inode.open_handles:  # its last handle closed during the HEAD (a close
                await self.store.delete(key)  # returns before its release): nobody left to wait for
            elif etag:
                self._hidden[key] = etag
                self._hidden_inodes[key] = inode
                inode.frozen_key = key
                if inode.local is None:  # keeps fstat() answering after the name is gone
                    inode.local = LocalFile(stat=s, remote_size=s.size)
        elif remote:
            await self.store.delete(key)
        if local is not None and inode.frozen_key is None:  # a hidden object is still there
            local.remote_size = None
        self.cache.invalidate(path)
        self.cache.put_negative(path)
        if inode is not None:
            self.table.detach(inode)

    async def symlink(self, parent_ino: int, raw: bytes, target: bytes, uid: int, gid: int) -> tuple[Inode, Stat]:
        self._writable()
        parent, name, existing = await self._child(parent_ino, raw)
        if existing is not None:
            raise Exists(name)
        path = join_path(self.path(parent), name)
        s = new_stat(SYMLINK, 0o777, uid, gid, size=len(target))
        await self.store.put(self.keys.key(path), target, encode_metadata(s))
        self._unhide(self.keys.key(path))
        self.cache.invalidate(path)
        self.cache.put_stat(path, s)
        return self._remember(parent, name, s), s

    async def readlink(self, ino: int) -> bytes:
        inode = self._inode(ino)
        s = await self.getattr(ino)
        if s.kind != SYMLINK:
            raise FsError("not a symlink", err=errno.EINVAL)
        return await self.store.get_range(self.key(inode), 0, s.size)

    # ------------------------------------------------------------------ misc
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
