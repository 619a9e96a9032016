"""A file's sparse write-back cache: the ranges of it that were read or written,
in a local sparse file, over the object it started from (the base).

What a byte of the file is:
- in ``valid``: the local file has it (read from S3, or written here);
- else below ``base_end``: the base object's byte at the same offset;
- else: zero (a hole: an extending truncate, a write past the end).
``dirty`` (part of ``valid``) is what was written since the last commit.

So opening a 100 GiB disk for writing costs nothing, a 4 KiB write stores 4 KiB
locally, and a commit sends only windows holding dirty bytes and copies the rest
server-side (writeback.py).

Crash safety (recovery.py): ``valid`` is always whole filesystem blocks (the block
size of the cache directory), except the file's last one, so after a crash the
allocated blocks of the local file (SEEK_DATA) are exactly the valid ranges; the
journal next to it (<id>.json, rewritten at every change that is not a write: a
truncate, a rename, a commit) names the key, the base and base_end. A partial-block
write first fills the rest of its block from the base. Clean blocks may be dropped
(hole punched) to stay within the disk budget; dirty ones never.

Files are 0600 in a 0700 directory. The kernel's page cache holds the writes; an
fsync makes them and the journal durable here (sync), so a power cut loses at most
what was written since the last fsync, as on a local disk; a commit (close, or
cache.sync_interval after an fsync) puts them in S3.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import json
import logging
import os
import time
import uuid
from typing import Awaitable, Callable

from s3pvefs.errors import FsError
from s3pvefs.write.extents import Extents

log = logging.getLogger(__name__)

Fetch = Callable[[int, int], Awaitable[bytes]]  # base object bytes [start, end)

JOURNAL_VERSION = 1
_END = 1 << 63
_ids = itertools.count()


def ensure_private_dir(directory: str) -> None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.stat(directory).st_mode & 0o077:  # made by someone else, or before
            os.chmod(directory, 0o700)
    except OSError as e:
        raise FsError(f"cannot use cache directory {directory}: {e.strerror}", err=e.errno) from None


class SparseFile:
    def __init__(self, directory: str, *, key: str | None, path: str, base_size: int,
                 base_etag: str | None, size: int, metadata: dict[str, str], fill_size: int,
                 name: str | None = None):
        ensure_private_dir(directory)
        self.name = name or f"{os.getpid()}-{next(_ids)}-{uuid.uuid4().hex[:8]}"
        self.data_path = os.path.join(directory, self.name + ".data")
        self.journal_path = os.path.join(directory, self.name + ".json")
        try:
            self.fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            st = os.fstat(self.fd)
        except OSError as e:
            raise FsError(f"cannot create cache file in {directory}: {e.strerror}", err=e.errno) from None
        self.block = max(4096, st.st_blksize)
        self.fill_size = max(self.block, fill_size // self.block * self.block)
        self.key, self.path = key, path
        self.base_size, self.base_etag = base_size, base_etag
        self.base_end = base_size
        self.metadata = metadata
        self.valid = Extents()
        self.dirty = Extents()
        self.size = 0
        self.last_used = time.monotonic()
        self.journal_durable = False  # the journal on disk was fsync'ed since its last rewrite
        self.on_change: Callable[[int], None] = lambda delta: None  # valid bytes grew/shrank
        try:
            self.truncate(size)
        except BaseException:
            self.remove()
            raise

    @classmethod
    def reopen(cls, directory: str, name: str, record: dict) -> SparseFile:
        """A cache file a stopped daemon left, from its journal: what it holds (its
        allocated blocks, clean or dirty alike) is all taken as written."""
        s = cls.__new__(cls)
        s.name = name
        s.data_path = os.path.join(directory, name + ".data")
        s.journal_path = os.path.join(directory, name + ".json")
        s.fd = os.open(s.data_path, os.O_RDWR | os.O_CLOEXEC)
        s.block = s.fill_size = record.get("block", 4096)
        s.key, s.path, s.metadata = record["key"], record["path"], record["metadata"]
        s.base_size, s.base_etag, s.base_end = record["base_size"], record["base_etag"], record["base_end"]
        s.size = os.fstat(s.fd).st_size
        s.valid = allocated_ranges(s.fd, s.size)
        s.dirty = s.valid.copy()
        s.last_used = 0.0
        s.journal_durable = False
        s.on_change = lambda delta: None
        return s

    # ------------------------------------------------------------------ accounting
    @property
    def local_bytes(self) -> int:
        return self.valid.total

    @property
    def dirty_bytes(self) -> int:
        return self.dirty.total

    def _valid_add(self, start: int, end: int) -> None:
        before = self.valid.total
        self.valid.add(start, end)
        self.on_change(self.valid.total - before)

    def _valid_remove(self, start: int, end: int) -> None:
        before = self.valid.total
        self.valid.remove(start, end)
        self.on_change(self.valid.total - before)

    # ------------------------------------------------------------------ journal
    def journal(self, *, durable: bool = False) -> None:
        """Write what recovery needs to read the local file back (atomically);
        durable: fsync'ed, the directory entry too."""
        record = {"version": JOURNAL_VERSION, "key": self.key, "path": self.path,
                  "base_size": self.base_size, "base_etag": self.base_etag, "base_end": self.base_end,
                  "size": self.size, "metadata": self.metadata, "block": self.block}
        tmp = self.journal_path + ".tmp"
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
                json.dump(record, f)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.journal_path)
            if durable:
                directory = os.open(os.path.dirname(self.journal_path), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
            self.journal_durable = durable
        except OSError as e:
            raise FsError(f"cannot write cache journal {self.journal_path}: {e.strerror}", err=e.errno) from None

    def sync(self, metadata: dict[str, str]) -> None:
        """Make the cached bytes and the journal (with the file's metadata as of now)
        durable on the local disk: an fsync that does not commit, after which recovery
        can rebuild the file even after a power cut. The journal is rewritten only if
        it changed since it was last made durable (a VM flushes often; it rarely
        changes). Blocking: run it in a worker thread."""
        try:
            os.fsync(self.fd)
            if metadata != self.metadata or not self.journal_durable:
                self.metadata = metadata
                self.journal(durable=True)
        except OSError as e:
            raise FsError(f"cannot sync cache file of {self.path}: {e.strerror}", err=e.errno) from None

    def forget_key(self) -> None:
        """The file was unlinked: its local data must not be recovered."""
        self.key = None
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            pass

    def rekey(self, key: str, path: str) -> None:
        self.key, self.path = key, path
        self.journal()

    # ------------------------------------------------------------------ local I/O
    def _pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """All of data at offset, or FsError (ENOSPC reaches the writer) whose
        ``written`` says how much of it went in before the failure."""
        view, done = memoryview(data), 0
        try:
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        except OSError as e:
            err = FsError(f"cache write failed: {e.strerror}", err=e.errno)
            err.written = done
            raise err from None

    def _pread(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def _down(self, n: int) -> int:
        return n - n % self.block

    def _up(self, n: int) -> int:
        return -(-n // self.block) * self.block

    async def _fill(self, start: int, end: int, fetch: Fetch) -> None:
        """Make [start, end) valid: fetch from the base what is below base_end and not
        here (one ranged GET over the block-aligned span of the gaps); what a write
        stored meanwhile is kept."""
        gaps = self.valid.gaps(start, min(end, self.base_end))
        if not gaps:
            return
        gs, ge = self._down(gaps[0][0]), min(self._up(gaps[-1][1]), self.base_end)
        data = await fetch(gs, ge)
        if len(data) != ge - gs:
            raise FsError(f"short read of the base of {self.path}", err=errno.EIO)
        if self.fd < 0:
            raise FsError(f"{self.path} was closed", err=errno.EBADF)
        ge = min(ge, self.base_end)  # a truncate may have cut it during the fetch
        for s, e in self.valid.gaps(gs, ge):  # a write may have landed during the fetch
            self._pwrite(s, memoryview(data)[s - gs:e - gs])
        self._valid_add(gs, self._valid_end(ge))

    def _valid_end(self, end: int) -> int:
        """Blocks are valid whole, except a last one cut by the file's size."""
        return end if end >= self.size else self._up(end)

    def untouched(self, start: int, end: int) -> bool:
        """Nothing of [start, end) is local and all of it is the base's: the caller
        may read it from S3 directly (with read-ahead) instead of through here."""
        return end <= self.base_end and not self.valid.touches(start, end)

    async def read(self, offset: int, size: int, fetch: Fetch) -> bytes:
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        self.last_used = time.monotonic()
        if not self.valid.covers(offset, min(end, self.base_end)):
            start = offset - offset % self.fill_size
            stop = min(-(-end // self.fill_size) * self.fill_size, self.base_end)
            try:
                await self._fill(start, stop, fetch)
            except FsError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return await self._read_uncached(offset, end, fetch)  # disk full: read through
        return self._pread(offset, end - offset)

    async def _read_uncached(self, offset: int, end: int, fetch: Fetch) -> bytes:
        out = bytearray(self._pread(offset, end - offset).ljust(end - offset, b"\0"))
        for gs, ge in self.valid.gaps(offset, min(end, self.base_end)):
            out[gs - offset:ge - offset] = await fetch(gs, ge)
        return bytes(out)

    async def write(self, offset: int, data: bytes, fetch: Fetch) -> int:
        end = offset + len(data)
        self.last_used = time.monotonic()
        # The block edges this write cuts into must hold the base's bytes first. They
        # come fill_size at a time, as for reads: `dd conv=notrunc bs=512` over a file
        # costs one GET per fill_size, not one per 4 KiB block it touches.
        # Checked again after the fills, with no wait before the write: the disk budget
        # may have dropped a clean edge meanwhile (then only the edge blocks are fetched).
        head, tail = self._down(offset), self._up(end)
        edges = ((head, min(offset, self.base_end)), (end, min(tail, self.base_end)))
        window_size = self.fill_size
        while missing := [(s, e) for s, e in edges if s < e and not self.valid.covers(s, e)]:
            for edge_start, edge_end in missing:
                window = edge_start - edge_start % window_size
                await self._fill(window, min(max(window + window_size, edge_end), self.base_end), fetch)
            window_size = self.block
        try:
            self._pwrite(offset, data)
        except FsError as e:
            self._written(offset, offset + e.written)  # what went in is the file's now
            raise
        self._written(offset, end)
        return len(data)

    def _written(self, start: int, end: int) -> None:
        if end > start:
            self.size = max(self.size, end)
            self.dirty.add(start, end)
            self._valid_add(self._down(start), self._valid_end(end))

    def read_into(self, buf: memoryview, offset: int) -> None:
        """Local bytes at offset into buf (for uploads, in a worker thread)."""
        done = 0
        while done < len(buf):
            n = os.preadv(self.fd, [buf[done:]], offset + done)
            if n == 0:
                break  # past the local file's end: zeros, as buf already holds
            done += n

    def truncate(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError as e:
            raise FsError(f"cache truncate failed: {e.strerror}", err=e.errno) from None
        if size < self.size or size < self.base_end:  # what lay past size is gone
            self.base_end = min(self.base_end, size)
            self.dirty.remove(size, _END)
            self._valid_remove(size, _END)
        self.size = size
        self.journal()

    # ------------------------------------------------------------------ budget
    def clean_extents(self) -> Extents:
        return self.valid.difference(self.dirty)

    def evict_clean(self) -> int:
        """Punch holes where whole blocks are clean; the bytes freed."""
        freed = 0
        for s, e in self.clean_extents():
            s, e = self._up(s), self._down(e)
            if e <= s:
                continue
            try:
                _punch_hole(self.fd, s, e - s)
            except OSError:
                return freed  # the filesystem cannot punch holes: keep the data
            self._valid_remove(s, e)
            freed += e - s
        return freed

    # ------------------------------------------------------------------ commit
    def begin_commit(self) -> Extents:
        """Dirty ranges as of now; writes from here on are dirty again."""
        taken, self.dirty = self.dirty, Extents()
        return taken

    def commit_failed(self, taken: Extents) -> None:
        for s, e in taken:
            self.dirty.add(s, e)

    def committed(self, size: int, etag: str | None) -> None:
        """The object at the key now holds the file as it was at begin_commit."""
        self.base_size = self.base_end = size
        self.base_etag = etag
        try:
            self.journal()
        except FsError as e:  # the commit itself succeeded: the close must not fail for this.
            # The old journal stays: after a crash its ETag no longer matches, so the
            # cache is kept aside and named, never uploaded over the wrong base.
            log.warning("%s (after committing %s)", e, self.path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.on_change(-self.valid.total)

    def remove(self) -> None:
        self.close()
        for p in (self.data_path, self.journal_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


_libc = None


def _punch_hole(fd: int, offset: int, length: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def allocated_ranges(fd: int, size: int) -> Extents:
    """The ranges of a local file that hold data (SEEK_DATA/SEEK_HOLE)."""
    out, pos = Extents(), 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        out.add(start, end)
        pos = end
    return out
