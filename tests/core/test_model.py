"""Reference-model test of the filesystem core (Hypothesis stateful testing).

A RuleBasedStateMachine runs random sequences of operations against a
Filesystem on the in-memory store and against a small model (class Model):
directories (a set of paths, the root '' implicit), files as identities (fid,
standing for an inode) with contents, names -> fids, open handles -> fids, and
``store``: what the bucket must hold for each path (the contents committed by
the last close/flush, or by a setattr with no handle open). After every step:

* the tree as the kernel sees it: opendir/readdir recursively (names, kinds,
  sizes), getattr, then lookup/open/read/release of every file, equals the model;
* every open handle reads its file's contents, also after the file was unlinked;
* the store holds exactly one object ``pve/<path>`` per committed file with its
  bytes and one ``pve/<dir>/`` marker per directory (every directory here is made
  by mkdir or moved by rename, which keeps or creates markers), plus at most the
  hidden objects of files unlinked while still open; no multipart upload left;
* every operation the model says must fail fails with the errno it predicts
  (ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, EINVAL), and nothing else fails.

Operations through the core: create+write+close (O_TRUNC, optionally O_EXCL) or
create+write kept open, open kept (read-only or read-write), overwrite at an
offset (open/write/flush/close), truncate and chmod by path, read/write/
ftruncate/fchmod/flush/close on open handles, rename (files and directories,
same and cross directory, replacing targets, onto an open file or onto the name
of an unlinked open one), unlink (also of open files), mkdir, rmdir, partial
reads, and the kernel forgetting every inode it holds. Paths come from a tiny
name space (a, b, x; depth <= 3), so names collide, replace and shadow often;
contents are often equal on purpose, since equal bytes make equal ETags.

What the model allows beyond POSIX (SEMANTICS of this mount, not bugs): a file
replaced by a rename while open, or unlinked while open and then its name's
object rewritten, is "stale": its handles may fail with ESTALE (never return
another file's bytes). Writes to an unlinked file are never committed.

Operations from outside (another S3 tool): put_outside of an object with no
metadata (a new file or new contents for a file) and deleting a file's object,
never on open files. This mount legitimately shows stale data for an outside
change until its metadata cache entries expire (CacheConfig stat_ttl /
negative_ttl / listing_ttl), so the Filesystem gets a fake clock and every
outside change is followed by advancing that clock past the longest TTL.
Changes made through the core itself get no such grace: visible at once.

Driving trio from Hypothesis: the machine is synchronous, the core needs a
nursery that outlives single calls (read-ahead tasks run in it). Each machine
instance (one example) starts a thread running ``trio.run`` with a nursery in
which the Filesystem is built; every rule sends one coroutine to it with
``trio.from_thread.run(..., trio_token=...)`` and gets its result or exception
back. Teardown cancels the nursery and joins the thread.

MODEL_EXAMPLES=5000 MODEL_STEPS=60 in the environment run a longer search.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from s3pvefs.config import CacheConfig, Config, ReadConfig, StoreConfig, WriteConfig
from s3pvefs.errors import FsError, NotADir
from s3pvefs.fs.filesystem import Filesystem
from s3pvefs.namespace.stat import DIR, FILE
from s3pvefs.store.memory import MemoryStore

PREFIX = "pve"
ROOT = 1
# Tiny streamed parts, so a few bytes written go out in several parts (and S3's part
# size rule is checked by the store), and a budget that makes writers wait.
STREAM = WriteConfig(min_part_size=4, max_part_size=8, reorder_window=2, memory_budget=48,
                     upload_concurrency=2)
CACHE = CacheConfig(stat_ttl=10.0, negative_ttl=5.0, listing_ttl=10.0)
TTL_MAX = max(CACHE.stat_ttl, CACHE.negative_ttl, CACHE.listing_ttl)

NAMES = ["a", "b", "x"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
# Equal contents are likely on purpose: equal bytes make equal ETags.
contents = st.one_of(st.sampled_from([b"", b"same"]), st.binary(max_size=24))
offsets = st.integers(0, 32)


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def name_of(path: str) -> str:
    return path.rpartition("/")[2]


class TrioThread:
    """A trio run in a background thread with a Filesystem living in its nursery."""

    def __init__(self, store: MemoryStore, config: Config, clock) -> None:
        self._ready = threading.Event()
        self.crash: BaseException | None = None
        self._args = (store, config, clock)
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self.crash is not None:
            raise self.crash

    def _main(self) -> None:
        try:
            trio.run(self._amain)
        except BaseException as e:  # noqa: BLE001 - reported by the next call
            self.crash = e
            self._ready.set()

    async def _amain(self) -> None:
        async with trio.open_nursery() as nursery:
            self.token = trio.lowlevel.current_trio_token()
            self.nursery = nursery
            self.fs = Filesystem(*self._args[:2], nursery, clock=self._args[2])
            self._ready.set()
            await trio.sleep_forever()

    def run(self, afn, *args):
        if self.crash is not None:
            raise AssertionError("the trio run died") from self.crash
        return trio.from_thread.run(self._settled, afn, *args, trio_token=self.token)

    @staticmethod
    async def _settled(afn, *args):
        """afn, then let background work (part uploads, aborts) run out, so every
        check sees the same state whatever the scheduling."""
        try:
            return await afn(*args)
        finally:
            await trio.testing.wait_all_tasks_blocked()

    def close(self) -> None:
        if self.crash is None and self._thread.is_alive():
            trio.from_thread.run_sync(self.nursery.cancel_scope.cancel, trio_token=self.token)
        self._thread.join(10)
        if self.crash is not None:
            raise AssertionError("the trio run died") from self.crash


class Model:
    """POSIX as this mount promises it, plus what the bucket must hold.

    A file is an identity (fid, standing for an inode) with contents; names map to
    fids; open handles refer to fids, so a file unlinked or replaced while open keeps
    its contents for those handles. ``store`` is what the bucket must hold per path:
    the contents committed by the last close/flush (or by setattr with no handle
    open), moved by rename and removed by unlink.
    """

    def __init__(self) -> None:
        self.files: dict[str, int] = {}  # path -> fid
        self.dirs: dict[str, int] = {}  # path -> permission bits
        self.data: dict[int, bytes] = {}  # fid -> contents every reader sees
        self.mode: dict[int, int] = {}  # fid -> permission bits
        self.store: dict[str, bytes] = {}  # path -> committed object contents
        self.dirty: set[int] = set()  # fids with changes not committed yet
        # fids created by a create and not changed since: the creating handle's flush
        # commits nothing (a shell's `> f` flushes before writing), its last close does
        self.untouched: set[int] = set()
        self.handles: list[Handle] = []
        # Keys of files unlinked while open, which the bucket may still hold
        # (hidden from listings) until their last handle closes: path -> fids.
        self.orphan_keys: dict[str, set[int]] = {}
        # Open files whose object key now holds another file's object (replaced by
        # a rename, or their name reused after unlink). The core's rule (see
        # Filesystem.read): their handles may fail with ESTALE, but never return
        # the other file's bytes.
        self.stale: set[int] = set()
        self._fids = iter(range(1, 1 << 30))

    def new_fid(self, content: bytes) -> int:
        fid = next(self._fids)
        self.data[fid] = content
        self.mode[fid] = 0o644  # what create is given, and file_mode for foreign objects
        return fid

    def content(self, path: str) -> bytes:
        return self.data[self.files[path]]

    def is_dir(self, p: str) -> bool:
        return p == "" or p in self.dirs

    def exists(self, p: str) -> bool:
        return self.is_dir(p) or p in self.files

    def is_open(self, fid: int) -> bool:
        return any(h.fid == fid for h in self.handles)

    def open_paths(self) -> list[str]:
        return sorted(p for p, f in self.files.items() if self.is_open(f))

    def path_of(self, fid: int) -> str | None:
        return next((p for p, f in self.files.items() if f == fid), None)

    def children(self, d: str) -> list[str]:
        below = d + "/" if d else ""
        return [p for p in [*self.files, *self.dirs]
                if p.startswith(below) and "/" not in p[len(below):]]

    def parent_error(self, path: str) -> int | None:
        """The errno of walking to path's parent, None if the parent is a directory."""
        parts = path.split("/")[:-1]
        cur = ""
        for part in parts:
            cur = f"{cur}/{part}" if cur else part
            if cur in self.files:
                return errno.ENOTDIR
            if cur not in self.dirs:
                return errno.ENOENT
        return None

    def reuse_key(self, path: str) -> None:
        """Another file's object is written at path's key."""
        self.stale |= self.orphan_keys.pop(path, set())

    def touch(self, fid: int) -> None:
        self.dirty.add(fid)
        self.untouched.discard(fid)

    def flush_commits(self, h: "Handle") -> bool:
        """A reader's flush commits nothing, nor the creating open's before any change
        (a shell's `> f`); the last close commits in any case."""
        return h.writable and not (h.created and h.fid in self.untouched)

    def commit(self, fid: int) -> None:
        path = self.path_of(fid)
        if path is not None and fid in self.dirty:
            self.store[path] = self.data[fid]
            self.reuse_key(path)
        self.dirty.discard(fid)

    def drop_name(self, path: str, replaced: bool = False) -> None:
        """path's file loses its name (unlink, or replaced by a rename)."""
        fid = self.files.pop(path)
        if not self.is_open(fid):
            del self.data[fid]
            self.dirty.discard(fid)
        elif replaced:
            self.stale.add(fid)
        else:
            self.orphan_keys.setdefault(path, set()).add(fid)

    def closed(self, fid: int) -> None:
        if not self.is_open(fid):
            for k, fids in list(self.orphan_keys.items()):
                fids.discard(fid)
                if not fids:
                    del self.orphan_keys[k]
            self.stale.discard(fid)
            if self.path_of(fid) is None:
                del self.data[fid]
                self.dirty.discard(fid)


@dataclass(frozen=True)
class Handle:
    fh: int
    ino: int
    fid: int
    writable: bool
    created: bool = False  # the open that created the file


MAX_HANDLES = 4


class FilesystemModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.tmp = tempfile.mkdtemp(prefix="s3pvefs-model-")
        self.store = MemoryStore()
        # A tiny read chunk so reads and loads span several ranged GETs.
        cfg = Config(store=StoreConfig(bucket="b", prefix=PREFIX),
                     cache=CacheConfig(stat_ttl=CACHE.stat_ttl, negative_ttl=CACHE.negative_ttl,
                                       listing_ttl=CACHE.listing_ttl, cache_dir=self.tmp),
                     read=ReadConfig(chunk_size=8, max_readahead_chunks=2),
                     write=STREAM)
        self.store.min_part_size = STREAM.min_part_size
        self.trio = TrioThread(self.store, cfg, lambda: self.now)
        self.fs = self.trio.fs
        self.model = Model()
        self.lookups: dict[int, int] = {}  # what the "kernel" holds, returned by forget

    def teardown(self) -> None:
        try:
            self.trio.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    async def _lookup(self, parent: int, name: str):
        inode, s = await self.fs.lookup(parent, name.encode())
        self.lookups[inode.ino] = self.lookups.get(inode.ino, 0) + 1
        return inode, s

    async def _walk(self, path: str, *, parent: bool = False) -> int:
        """Inode number of path ('' is the root), by lookups like the kernel's path
        walk: a file where a directory is needed is ENOTDIR before the core is asked.
        With parent=True, path is a parent and must itself be a directory."""
        ino = ROOT
        parts = path.split("/") if path else []
        for i, part in enumerate(parts):
            inode, s = await self._lookup(ino, part)
            if s.kind != DIR and (parent or i < len(parts) - 1):
                raise NotADir(part)
            ino = inode.ino
        return ino

    async def _walk_parent(self, path: str) -> int:
        return await self._walk(parent_of(path), parent=True)

    def _streaming_with_parts(self) -> set[int]:
        """Open files whose sequential write has sent parts to an upload not completed yet."""
        fids = set()
        for h in self.model.handles:
            data = self.fs.files.get(h.ino)
            stream = data.stream if data is not None else None
            if stream is not None and stream.uploading:
                fids.add(h.fid)
        return fids

    def _run(self, afn, *args):
        """Run afn in trio. A file whose parts are in an unfinished upload cannot be
        read back, renamed, unlinked or rewritten behind them without completing the
        upload first (SEMANTICS: streamed writes): such an operation commits what was
        written before it, which the model records here, before the rule applies the
        operation's own effect."""
        before = self._streaming_with_parts()
        try:
            return self.trio.run(afn, *args)
        finally:
            for fid in before - self._streaming_with_parts():
                if fid in self.model.data:
                    event("an operation completed a streamed upload")
                    self.model.commit(fid)

    def call(self, expected: int | None, afn, *args):
        """Run afn in trio; it must fail with errno ``expected``, or succeed if None."""
        event(f"{afn.__qualname__.split('.')[1].lstrip('_')}: "
              f"{'ok' if expected is None else errno.errorcode[expected]}")
        try:
            result = self._run(afn, *args)
        except FsError as e:
            assert expected is not None, f"unexpected {type(e).__name__} errno={e.errno}: {e}"
            assert e.errno == expected, \
                f"expected {errno.errorcode[expected]}, got {errno.errorcode.get(e.errno)}: {e!r}"
            return None
        assert expected is None, f"expected {errno.errorcode[expected]}, but it succeeded"
        return result

    def _pick(self, data, pool, label: str) -> str:
        """A path: any path of the small name space (mostly failing lookups), a name
        in an existing directory, or an existing path from pool."""
        pool = sorted(pool)
        fresh = sorted(f"{d}/{n}" if d else n for d in ["", *self.model.dirs] for n in NAMES)
        how = data.draw(st.integers(0, 4), label=f"{label} from")
        if how >= 2 and pool:
            return data.draw(st.sampled_from(pool), label=label)
        if how >= 1:
            return data.draw(st.sampled_from(fresh), label=label)
        return data.draw(paths, label=label)

    def _file_error(self, path: str) -> int | None:
        """The errno of opening path as an existing file."""
        m = self.model
        expected = m.parent_error(path)
        if expected is None and not m.exists(path):
            return errno.ENOENT
        if expected is None and m.is_dir(path):
            return errno.EISDIR
        return expected

    def outside_change_done(self) -> None:
        # The mount may show stale attributes, listings and negative entries for
        # an outside change until their TTLs run out: let them run out.
        self.now += TTL_MAX + 1

    # ------------------------------------------------------------------ rules: core
    @initialize(tree=st.dictionaries(st.sampled_from(["a", "b", "x", "a/a", "a/x", "b/x"]),
                                     contents, max_size=4),
                dirs=st.sets(st.sampled_from(["a", "b"])))
    def populate(self, tree, dirs):
        """Start from a few directories and files (made through the core), so that
        examples reach open, unlinked and replaced files in fewer steps."""
        m = self.model
        for d in sorted(dirs):
            self.call(None, self._mkdir, d)
            m.dirs[d] = 0o755
        for path, content in sorted(tree.items()):
            if m.parent_error(path) is None and not m.exists(path):
                self.call(None, self._write_file, path, content)
                m.files[path] = m.new_fid(content)
                m.store[path] = content

    async def _mkdir(self, path: str) -> None:
        await self.fs.mkdir(await self._walk_parent(path), name_of(path).encode(), 0o755, 0, 0)

    async def _write_file(self, path: str, content: bytes) -> None:
        parent = await self._walk_parent(path)
        fh, _, _ = await self.fs.create(parent, name_of(path).encode(), 0o644,
                                        os.O_WRONLY | os.O_CREAT, 0, 0)
        try:
            if content:
                await self.fs.write(fh, 0, content)
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)

    def _create(self, data, content, excl, keep):
        m = self.model
        path = self._pick(data, [*m.files, *m.orphan_keys], "path")
        expected = m.parent_error(path)
        if expected is None and m.is_dir(path):
            expected = errno.EEXIST if excl else errno.EISDIR
        elif expected is None and path in m.files and excl:
            expected = errno.EEXIST

        async def create():
            parent = await self._walk_parent(path)
            flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | (os.O_EXCL if excl else 0)
            fh, inode, _ = await self.fs.create(parent, name_of(path).encode(), 0o644, flags, 0, 0)
            self.lookups[inode.ino] = self.lookups.get(inode.ino, 0) + 1
            try:
                if content:
                    assert await self.fs.write(fh, 0, content) == len(content)
                if not keep:
                    await self.fs.flush(fh)
            except BaseException:
                await self.fs.release(fh)
                raise
            if not keep:
                await self.fs.release(fh)
            return fh, inode.ino

        r = self.call(expected, create)
        if expected is not None:
            return
        fid = m.files.get(path)
        new = fid is None
        if new:
            fid = m.files[path] = m.new_fid(content)
        if content or (not new and m.data[fid]):  # written, or emptied by O_TRUNC
            m.untouched.discard(fid)
        elif new:
            m.untouched.add(fid)
        m.data[fid] = content
        m.dirty.add(fid)
        if keep:
            m.handles.append(Handle(*r, fid, True, created=new))
        else:
            m.commit(fid)

    @rule(data=st.data(), content=contents, excl=st.booleans())
    def create_write_close(self, data, content, excl):
        self._create(data, content, excl, keep=False)

    @precondition(lambda self: len(self.model.handles) < MAX_HANDLES)
    @rule(data=st.data(), content=contents, excl=st.booleans())
    def create_write_keep_open(self, data, content, excl):
        self._create(data, content, excl, keep=True)

    @precondition(lambda self: len(self.model.handles) < MAX_HANDLES)
    @rule(data=st.data(), writable=st.booleans())
    def open_keep(self, data, writable):
        m = self.model
        path = self._pick(data, m.files, "path")
        expected = self._file_error(path)

        async def go():
            ino = await self._walk(path)
            return await self.fs.open(ino, os.O_RDWR if writable else os.O_RDONLY), ino

        r = self.call(expected, go)
        if expected is None:
            m.handles.append(Handle(*r, m.files[path], writable))

    @rule(data=st.data(), offset=offsets, content=contents.filter(bool), rdwr=st.booleans())
    def overwrite(self, data, offset, content, rdwr):
        m = self.model
        path = self._pick(data, m.files, "path")
        expected = self._file_error(path)

        async def go():
            ino = await self._walk(path)
            fh = await self.fs.open(ino, os.O_RDWR if rdwr else os.O_WRONLY)
            try:
                assert await self.fs.write(fh, offset, content) == len(content)
                await self.fs.flush(fh)
            finally:
                await self.fs.release(fh)

        self.call(expected, go)
        if expected is None:
            fid = m.files[path]
            m.data[fid] = _patch(m.data[fid], offset, content)
            m.touch(fid)
            m.commit(fid)

    @rule(data=st.data(), size=offsets)
    def truncate(self, data, size):
        m = self.model
        path = self._pick(data, m.files, "path")
        expected = self._file_error(path)

        async def go():
            s = await self.fs.setattr(await self._walk(path), size=size)
            assert s.size == size

        self.call(expected, go)
        if expected is None:
            fid = m.files[path]
            m.data[fid] = (m.data[fid] + b"\0" * size)[:size]
            m.touch(fid)
            if not m.is_open(fid):  # nobody will close it: committed at once
                m.commit(fid)

    @rule(data=st.data(), mode=st.sampled_from([0o600, 0o640, 0o755]))
    def chmod(self, data, mode):
        m = self.model
        path = self._pick(data, [*m.files, *m.dirs], "path")
        expected = m.parent_error(path)
        if expected is None and not m.exists(path):
            expected = errno.ENOENT

        async def go():
            s = await self.fs.setattr(await self._walk(path), mode=mode)
            assert s.mode & 0o7777 == mode
            s = await self.fs.getattr(await self._walk(path))
            assert s.mode & 0o7777 == mode

        self.call(expected, go)
        if expected is None and path in m.files:
            m.mode[m.files[path]] = mode
            m.untouched.discard(m.files[path])
        elif expected is None:
            m.dirs[path] = mode

    @rule(data=st.data())
    def rename(self, data):
        m = self.model
        src = self._pick(data, [*m.files, *m.dirs], "src")
        dst = self._pick(data, [*m.files, *m.dirs, *m.orphan_keys], "dst")
        self._rename(src, dst)

    @precondition(lambda self: self.model.files
                  and len(self.model.files) + len(self.model.orphan_keys) >= 2)
    @rule(data=st.data())
    def rename_file_over(self, data):
        """The write-then-rename-over pattern: an existing file onto another file's
        name, or onto the name of a file unlinked while still open."""
        m = self.model
        src = data.draw(st.sampled_from(sorted(m.files)), label="src")
        others = sorted({*m.files, *m.orphan_keys} - {src})
        if others:
            self._rename(src, data.draw(st.sampled_from(others), label="dst"))

    def _rename(self, src: str, dst: str) -> None:
        m = self.model
        expected = m.parent_error(src) or m.parent_error(dst)
        if expected is None and not m.exists(src):
            expected = errno.ENOENT
        elif expected is None and src == dst:
            pass
        elif expected is None and m.is_dir(src):
            if dst.startswith(src + "/"):
                expected = errno.EINVAL
            elif dst in m.files:
                expected = errno.ENOTDIR
            elif dst in m.dirs and m.children(dst):
                expected = errno.ENOTEMPTY
        elif expected is None and m.is_dir(dst):
            expected = errno.EISDIR

        async def go():
            sp = await self._walk_parent(src)
            dp = await self._walk_parent(dst)
            await self.fs.rename(sp, name_of(src).encode(), dp, name_of(dst).encode())

        if dst in m.orphan_keys:
            event("rename onto the key of an unlinked open file")
            if any(m.store.get(src) == m.data[f] for f in m.orphan_keys[dst]):
                event("rename onto the key of an unlinked open file, same bytes")
        self.call(expected, go)
        if expected is not None or src == dst:
            return
        if src in m.files:
            if dst in m.files:
                m.drop_name(dst, replaced=True)
            m.files[dst] = m.files.pop(src)
            if src in m.store:
                m.store[dst] = m.store.pop(src)
                m.reuse_key(dst)
            else:
                m.store.pop(dst, None)
            return
        m.dirs.pop(dst, None)
        below = src + "/"
        for p in sorted(m.dirs):
            if p == src or p.startswith(below):
                m.dirs[dst + p[len(src):]] = m.dirs.pop(p)
        for table in (m.files, m.store):
            for p in sorted(table):
                if p.startswith(below):
                    table[dst + p[len(src):]] = table.pop(p)
        for p in list(m.store):
            if p.startswith(dst + "/"):
                m.reuse_key(p)

    @rule(data=st.data())
    def unlink(self, data):
        self._unlink(self._pick(data, self.model.files, "path"))

    @precondition(lambda self: self.model.open_paths())
    @rule(data=st.data())
    def unlink_open_file(self, data):
        """Delete a file someone has open (pruning a backup that is being read)."""
        self._unlink(data.draw(st.sampled_from(self.model.open_paths()), label="path"))

    def _unlink(self, path: str) -> None:
        m = self.model
        expected = m.parent_error(path)
        if expected is None and not m.exists(path):
            expected = errno.ENOENT
        elif expected is None and m.is_dir(path):
            expected = errno.EISDIR

        async def go():
            await self.fs.unlink(await self._walk_parent(path), name_of(path).encode())

        if path in m.files and m.is_open(m.files[path]):
            event("unlink of an open file")
        self.call(expected, go)
        if expected is None:
            m.drop_name(path)
            m.store.pop(path, None)

    @rule(data=st.data())
    def mkdir(self, data):
        m = self.model
        path = self._pick(data, [], "path")
        expected = m.parent_error(path)
        if expected is None and m.exists(path):
            expected = errno.EEXIST

        async def go():
            parent = await self._walk_parent(path)
            inode, s = await self.fs.mkdir(parent, name_of(path).encode(), 0o755, 0, 0)
            self.lookups[inode.ino] = self.lookups.get(inode.ino, 0) + 1
            assert s.kind == DIR

        self.call(expected, go)
        if expected is None:
            m.dirs[path] = 0o755

    @rule(data=st.data())
    def rmdir(self, data):
        m = self.model
        path = self._pick(data, m.dirs, "path")
        expected = m.parent_error(path)
        if expected is None and not m.exists(path):
            expected = errno.ENOENT
        elif expected is None and path in m.files:
            expected = errno.ENOTDIR
        elif expected is None and m.children(path):
            expected = errno.ENOTEMPTY

        async def go():
            await self.fs.rmdir(await self._walk_parent(path), name_of(path).encode())

        self.call(expected, go)
        if expected is None:
            del m.dirs[path]

    @precondition(lambda self: self.model.files)
    @rule(data=st.data(), offset=offsets, size=st.integers(1, 40))
    def read_part(self, data, offset, size):
        path = data.draw(st.sampled_from(sorted(self.model.files)), label="path")

        async def go():
            fh = await self.fs.open(await self._walk(path), os.O_RDONLY)
            try:
                return await self.fs.read(fh, offset, size)
            finally:
                await self.fs.release(fh)

        assert self.call(None, go) == self.model.content(path)[offset:offset + size]

    @rule()
    def kernel_forgets(self):
        held, self.lookups = list(self.lookups.items()), {}
        self._run(_forget, self.fs, held)

    # ------------------------------------------------------------------ rules: open handles
    def _handle(self, data, writable_only=False) -> Handle:
        hs = [h for h in self.model.handles if h.writable or not writable_only]
        return data.draw(st.sampled_from(hs), label="handle")

    def call_on(self, h: Handle, afn, *args):
        """call() for an operation on an open handle: a stale one may fail with ESTALE."""
        stale = h.fid in self.model.stale
        event(f"{afn.__name__} on {'stale' if stale else 'live'} handle")
        try:
            return True, self._run(afn, *args)
        except FsError as e:
            assert stale and e.errno == errno.ESTALE, \
                f"unexpected {type(e).__name__} errno={errno.errorcode.get(e.errno)}: {e}"
            return False, None

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data(), offset=offsets, size=st.integers(1, 40))
    def handle_read(self, data, offset, size):
        h = self._handle(data)
        ok, got = self.call_on(h, self.fs.read, h.fh, offset, size)
        if ok:
            assert got == self.model.data[h.fid][offset:offset + size]

    @precondition(lambda self: any(h.writable for h in self.model.handles))
    @rule(data=st.data(), offset=offsets, content=contents.filter(bool))
    def handle_write(self, data, offset, content):
        h = self._handle(data, writable_only=True)
        ok, n = self.call_on(h, self.fs.write, h.fh, offset, content)
        if ok:
            assert n == len(content)
            m = self.model
            m.data[h.fid] = _patch(m.data[h.fid], offset, content)
            m.touch(h.fid)

    @precondition(lambda self: any(h.writable for h in self.model.handles))
    @rule(data=st.data(), size=offsets)
    def handle_truncate(self, data, size):
        h = self._handle(data, writable_only=True)

        async def ftruncate():
            return await self.fs.setattr(h.ino, size=size)

        ok, s = self.call_on(h, ftruncate)
        if ok:
            assert s.size == size
            m = self.model
            m.data[h.fid] = (m.data[h.fid] + b"\0" * size)[:size]
            m.touch(h.fid)

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data(), mode=st.sampled_from([0o600, 0o640, 0o644]))
    def handle_chmod(self, data, mode):
        h = self._handle(data)

        async def fchmod():
            return await self.fs.setattr(h.ino, mode=mode)

        ok, s = self.call_on(h, fchmod)
        if ok:
            assert s.mode & 0o7777 == mode and s.size == len(self.model.data[h.fid])
            self.model.mode[h.fid] = mode
            self.model.untouched.discard(h.fid)

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data())
    def handle_flush(self, data):
        h = self._handle(data)
        self.call(None, self.fs.flush, h.fh)
        if self.model.flush_commits(h):
            self.model.commit(h.fid)

    @precondition(lambda self: self.model.handles)
    @rule(data=st.data())
    def handle_close(self, data):
        h = self._handle(data)

        async def close():
            try:
                await self.fs.flush(h.fh)
            finally:
                await self.fs.release(h.fh)

        self.call(None, close)
        m = self.model
        m.handles.remove(h)
        if m.flush_commits(h) or not m.is_open(h.fid):  # the last close commits anyway
            m.commit(h.fid)
        m.closed(h.fid)

    # ------------------------------------------------------------------ rules: outside
    def _outside_ok(self, path: str) -> bool:
        # Outside changes to open files, or to keys an open unlinked file may
        # still read from, are races this mount does not promise anything about.
        m = self.model
        fid = m.files.get(path)
        return (fid is None or not m.is_open(fid)) and path not in m.orphan_keys

    @rule(data=st.data(), content=contents)
    def outside_put(self, data, content):
        m = self.model
        path = self._pick(data, m.files, "path")
        if m.parent_error(path) is not None or m.is_dir(path) or not self._outside_ok(path):
            return  # keep the bucket free of implicit directories and shadowed files
        self.store.put_outside(f"{PREFIX}/{path}", content)
        if path in m.files:
            m.data[m.files[path]] = content
            m.mode[m.files[path]] = 0o644  # no metadata: the mount's file_mode
        else:
            m.files[path] = m.new_fid(content)
        m.store[path] = content
        self.outside_change_done()

    @precondition(lambda self: self.model.files)
    @rule(data=st.data())
    def outside_delete(self, data):
        m = self.model
        path = data.draw(st.sampled_from(sorted(m.files)), label="path")
        if not self._outside_ok(path) or path not in m.store:
            return
        del self.store.objects[f"{PREFIX}/{path}"]
        m.drop_name(path)
        del m.store[path]
        self.outside_change_done()

    @rule()
    def time_passes(self):
        self.now += TTL_MAX + 1

    # ------------------------------------------------------------------ checks
    @invariant()
    def store_matches(self):
        m = self.model
        want = {f"{PREFIX}/{p}": data for p, data in m.store.items()}
        want.update({f"{PREFIX}/{d}/": b"" for d in m.dirs})
        got = {k: o.data for k, o in self.store.objects.items()}
        # copies kept for open files whose name another file took: only while they are open
        aside = {k for k in got if k.startswith(f"{PREFIX}/.s3pvefs-open/")}
        assert not aside or m.handles, f"copies kept aside with no file open: {sorted(aside)}"
        extra = set(got) - set(want) - {f"{PREFIX}/{p}" for p in m.orphan_keys} - aside
        assert not extra, f"unexpected objects {sorted(extra)}"
        assert {k: got.get(k) for k in want} == want
        if not m.handles:  # files open for writing may be uploading parts
            assert not self.store.uploads, "multipart uploads left behind"

    @invariant()
    def tree_matches(self):
        tree, contents_, modes = self._run(self._read_tree)
        m = self.model
        want = {p: (FILE, len(m.data[f])) for p, f in m.files.items()}
        want.update({d: (DIR, 0) for d in m.dirs})
        assert tree == want
        assert contents_ == {p: m.data[f] for p, f in m.files.items()}
        assert modes == {**{p: m.mode[f] for p, f in m.files.items()}, **m.dirs}
        assert self.fs.open_file_count() == len(m.handles)

    @invariant()
    def handles_read_their_file(self):
        """Every open handle reads its file's contents, also after unlink or rename
        (a stale one may say ESTALE instead)."""
        for h in self.model.handles:
            ok, got = self.call_on(h, self.fs.read, h.fh, 0, 64)
            if ok:
                assert got == self.model.data[h.fid], f"handle {h}"

    async def _read_tree(self):
        tree: dict[str, tuple[str, int]] = {}
        data: dict[str, bytes] = {}
        modes: dict[str, int] = {}

        async def walk(ino: int, path: str):
            dh = await self.fs.opendir(ino)
            try:
                entries = list(self.fs.readdir(dh, 0))
            finally:
                self.fs.releasedir(dh)
            for _, name, inode, s in entries:
                self.fs.remember(inode)  # as readdirplus does for each entry it returns
                self.lookups[inode.ino] = self.lookups.get(inode.ino, 0) + 1
                p = f"{path}/{name}" if path else name
                tree[p] = (s.kind, s.size)
                if s.kind == DIR:
                    await walk(inode.ino, p)

        await walk(ROOT, "")
        for p, (kind, size) in tree.items():
            ino = await self._walk(p)
            s = await self.fs.getattr(ino)
            assert (s.kind, s.size) == (kind, size), f"{p}: getattr {s} vs readdir size {size}"
            # A listing carries no headers; ask for them as a change of attributes does.
            modes[p] = (await self.fs.getattr(ino, complete=True)).mode & 0o7777
            if kind != FILE:
                continue
            fh = await self.fs.open(ino, os.O_RDONLY)
            try:
                chunks, off = [], 0
                while True:  # 5-byte reads: sequential, across the 8-byte chunks
                    b = await self.fs.read(fh, off, 5)
                    if not b:
                        break
                    chunks.append(b)
                    off += len(b)
                data[p] = b"".join(chunks)
            finally:
                await self.fs.release(fh)
        return tree, data, modes


def _patch(old: bytes, offset: int, content: bytes) -> bytes:
    old = old + b"\0" * max(0, offset - len(old))
    return old[:offset] + content + old[offset + len(content):]


async def _forget(fs: Filesystem, held) -> None:
    fs.forget(held)


FilesystemModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", 150)),
    stateful_step_count=int(os.environ.get("MODEL_STEPS", 30)), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFilesystemModel = FilesystemModel.TestCase


# ---------------------------------------------------------------------- regressions
# The shortest sequences the machine found for bugs it caught, as plain tests.

async def _put_file(fs, parent: int, name: bytes, data: bytes) -> None:
    fh, _, _ = await fs.create(parent, name, 0o644, os.O_WRONLY | os.O_CREAT, 0, 0)
    if data:
        await fs.write(fh, 0, data)
    await fs.flush(fh)
    await fs.release(fh)


async def _names(fs, ino: int = ROOT) -> list[str]:
    dh = await fs.opendir(ino)
    try:
        return [name for _, name, _, _ in fs.readdir(dh, 0)]
    finally:
        fs.releasedir(dh)


def test_dir_left_with_only_an_unlinked_open_file_is_gone(run):
    async def body(fs, store):
        b, _ = await fs.mkdir(ROOT, b"b", 0o755, 0, 0)
        await _put_file(fs, b.ino, b"x", b"data")
        x, _ = await fs.lookup(b.ino, b"x")
        fh = await fs.open(x.ino, os.O_RDONLY)
        await fs.unlink(b.ino, b"x")  # still open: its object stays, hidden
        await fs.rename(ROOT, b"b", ROOT, b"a")
        assert await _names(fs) == ["a"]
        with pytest.raises(FsError) as e:
            await fs.lookup(ROOT, b"b")
        assert e.value.errno == errno.ENOENT
        c, _ = await fs.mkdir(ROOT, b"c", 0o755, 0, 0)
        await _put_file(fs, c.ino, b"y", b"data")
        y, _ = await fs.lookup(c.ino, b"y")
        fh2 = await fs.open(y.ino, os.O_RDONLY)
        await fs.unlink(c.ino, b"y")
        await fs.rmdir(ROOT, b"c")
        assert await _names(fs) == ["a"]
        assert await fs.read(fh, 0, 10) == b"data"
        await fs.release(fh)
        await fs.release(fh2)
        assert sorted(store.objects) == ["pve/a/"]

    run(body)


def test_rename_of_equal_bytes_onto_an_unlinked_open_file(run):
    async def body(fs, store):
        await _put_file(fs, ROOT, b"b", b"same")
        b, _ = await fs.lookup(ROOT, b"b")
        fh = await fs.open(b.ino, os.O_RDONLY)
        await fs.unlink(ROOT, b"b")
        await _put_file(fs, ROOT, b"a", b"same")  # same bytes, same ETag
        await fs.rename(ROOT, b"a", ROOT, b"b")
        assert await _names(fs) == ["b"]
        await fs.release(fh)  # must not delete the renamed file's object
        assert sorted(store.objects) == ["pve/b"]
        assert store.objects["pve/b"].data == b"same"

    run(body)


@pytest.mark.parametrize("reuse", ["recreate", "recreate+unlink"])
def test_write_to_unlinked_open_file_whose_name_was_reused(run, reuse):
    async def body(fs, store):
        await _put_file(fs, ROOT, b"a", b"same")
        a, _ = await fs.lookup(ROOT, b"a")
        fh = await fs.open(a.ino, os.O_RDWR)
        await fs.unlink(ROOT, b"a")
        await _put_file(fs, ROOT, b"a", b"")  # the key holds another file now
        if reuse == "recreate+unlink":
            await fs.unlink(ROOT, b"a")  # ... or nothing
        # as on a local disk: the open file is still its own (its object was copied aside)
        assert await fs.write(fh, 1, b"ame!") == 4
        assert await fs.read(fh, 0, 10) == b"same!"
        await fs.release(fh)
        want = {"pve/a": b""} if reuse == "recreate" else {}
        assert {k: o.data for k, o in store.objects.items()} == want  # the new file untouched

    run(body)


def test_write_to_file_replaced_by_rename_while_open(run):
    """As on a local disk, its handles keep it: reads, writes, ftruncate, fchmod work on
    the old file (its object copied aside), and nothing of them reaches the new file."""
    async def body(fs, store):
        await _put_file(fs, ROOT, b"a", b"old")
        await _put_file(fs, ROOT, b"b", b"new")
        a, _ = await fs.lookup(ROOT, b"a")
        fh = await fs.open(a.ino, os.O_RDWR)
        await fs.rename(ROOT, b"b", ROOT, b"a")
        assert await fs.write(fh, 3, b"er") == 2
        assert (await fs.setattr(a.ino, mode=0o600)).mode & 0o777 == 0o600
        assert await fs.read(fh, 0, 10) == b"older"
        await fs.setattr(a.ino, size=2)
        assert await fs.read(fh, 0, 10) == b"ol"
        assert (await fs.fstat(a.ino)).size == 2
        assert not fs.has_name(a.ino)  # nlink 0
        await fs.release(fh)
        assert {k: o.data for k, o in store.objects.items()} == {"pve/a": b"new"}

    run(body)


def test_write_after_fchmod_and_unlink_keeps_the_data(run):
    async def body(fs, store):
        await _put_file(fs, ROOT, b"a", b"same")
        a, _ = await fs.lookup(ROOT, b"a")
        fh = await fs.open(a.ino, os.O_RDWR)
        await fs.setattr(a.ino, mode=0o600)  # attributes pending, data not local
        await fs.unlink(ROOT, b"a")
        assert await fs.write(fh, 1, b"X") == 1
        assert await fs.read(fh, 0, 10) == b"sXme"
        await fs.release(fh)
        assert store.objects == {}

    run(body)


def test_close_of_a_stale_unlinked_file_spares_a_newer_one_hidden_at_its_key(run):
    async def body(fs, store):
        await _put_file(fs, ROOT, b"a", b"old")
        a, _ = await fs.lookup(ROOT, b"a")
        old = await fs.open(a.ino, os.O_RDONLY)
        await fs.unlink(ROOT, b"a")
        await _put_file(fs, ROOT, b"a", b"new")  # the old file's handle is stale now
        a2, _ = await fs.lookup(ROOT, b"a")
        new = await fs.open(a2.ino, os.O_RDONLY)
        await fs.unlink(ROOT, b"a")  # hidden at the same key
        await fs.release(old)  # must not delete (or unhide) the new file's object
        assert await fs.read(new, 0, 10) == b"new"
        with pytest.raises(FsError) as e:
            await fs.read(old, 0, 10)
        assert e.value.errno == errno.EBADF
        await fs.release(new)
        assert store.objects == {}

    run(body)


def test_symlink_of_equal_bytes_onto_an_unlinked_open_file(run):
    async def body(fs, store):
        await _put_file(fs, ROOT, b"a", b"target")
        a, _ = await fs.lookup(ROOT, b"a")
        fh = await fs.open(a.ino, os.O_RDONLY)
        await fs.unlink(ROOT, b"a")
        await fs.symlink(ROOT, b"a", b"target", 0, 0)  # same bytes, same ETag
        assert await _names(fs) == ["a"]
        await fs.release(fh)  # must not delete the symlink's object
        assert sorted(store.objects) == ["pve/a"]

    run(body)
