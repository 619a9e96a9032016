"""Reading the headers (mode, owner, times) of names a directory listing showed.

A LIST says what each name is and its size, not its x-amz-meta-* headers, and the
kernel must never check access against attributes nobody read (fuse/attrs.py). So
the headers of listed names are read by HEAD -- of the file key alone, or of the
directory marker alone: the listing already said which it is, so no probe of the
other kinds is needed. Callers ask one name at a time (`ls -l`, Proxmox's content
views stat every archive in turn); each ask also starts the names after it in the
listing's order (READ_AHEAD of them, CONCURRENCY at once), so a whole directory
costs one request per name, in parallel, and the next asks find theirs already
under way or done. A small file is read by one GET instead of its HEAD: its body
comes with its headers and is kept (read/smallbodies.py), so reading it after costs
nothing (Proxmox reads every `.notes` after the stat).
"""

from __future__ import annotations

import bisect
import logging
from typing import Callable

import trio

from s3pvefs.errors import StoreError
from s3pvefs.namespace.keys import KeyMapper, join_path
from s3pvefs.namespace.metacache import Listing, MetaCache, parent_of
from s3pvefs.namespace.stat import DIR, FILE, Defaults, Stat, decode, implicit_dir, is_old_style_dir, now_ns
from s3pvefs.read.smallbodies import SMALL_FILE, SmallBodies
from s3pvefs.store.base import ObjectStore

log = logging.getLogger(__name__)

READ_AHEAD = 256  # names after the asked one whose headers are started with it
CONCURRENCY = 96  # HEADs in flight for listings, whole mount, at most


def concurrency_for(max_connections: int) -> int:
    """Header reads in flight: three quarters of the mount's connections (the rest stay
    free for the data of files being read and written), at most CONCURRENCY. 30 ms from
    Ceph RGW, 1,500 HEADs took 2.0 s with 25 connections, 1.3 s with 48, 0.9 s with 96
    or more (docs/PERFORMANCE.md)."""
    return max(1, min(CONCURRENCY, max_connections * 3 // 4))


class _Pending:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Stat | None = None
        self.error: StoreError | None = None


class HeaderReader:
    def __init__(self, store: ObjectStore, keys: KeyMapper, cache: MetaCache, defaults: Defaults,
                 nursery: trio.Nursery, hidden: Callable[[str, str | None], bool],
                 bodies: SmallBodies | None = None, read_ahead: int = READ_AHEAD,
                 concurrency: int = CONCURRENCY):
        self._store, self._keys, self._cache, self._defaults = store, keys, cache, defaults
        self._nursery = nursery
        self._hidden = hidden  # (key, etag) -> an unlinked file still open: not a name any more
        self._bodies = bodies
        self._read_ahead = read_ahead
        self._limiter = trio.CapacityLimiter(concurrency)
        self._pending: dict[str, _Pending] = {}
        self._order: dict[str, tuple[int, list[str]]] = {}  # directory -> (entry count, sorted names)
        self.requests = 0  # HEADs made here (tests and benchmarks count them)

    async def read(self, path: str, listed: Stat) -> Stat | None:
        """The attributes of path, which a fresh listing showed as listed.kind, from its
        headers; None if the key no longer says so (the caller asks S3 in full)."""
        pending = self._pending.get(path)
        if pending is None:
            pending = self._start(path, listed)
        self._read_ahead_of(path)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def read_all(self, directory: str, names: list[str]) -> None:
        """Headers of these listed names, all of them, before returning (small
        directories at opendir, listing_heads)."""
        listing = self._cache.listings.get(directory)
        waits = []
        for name in names:
            path = join_path(directory, name)
            listed = listing.entries.get(name) if listing is not None else None
            if listed is None:
                continue
            waits.append(self._pending.get(path) or self._start(path, listed))
        for pending in waits:
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error

    def _read_ahead_of(self, path: str) -> None:
        directory, name = parent_of(path), path.rpartition("/")[2]
        listing = self._cache.listings.get(directory)
        if listing is None or self._read_ahead <= 0:
            return
        names = self._sorted(directory, listing)
        i = bisect.bisect_left(names, name)
        for other in names[i:i + self._read_ahead + 1]:
            other_path = join_path(directory, other)
            if other_path in self._pending or other_path in self._cache.stats:
                continue
            listed = listing.entries.get(other)
            if listed is not None and not listed.complete:
                self._start(other_path, listed)

    def _sorted(self, directory: str, listing: Listing) -> list[str]:
        count, names = self._order.get(directory, (-1, []))
        if count != len(listing.entries):
            names = sorted(listing.entries)
            self._order[directory] = (len(listing.entries), names)
            if len(self._order) > 64:  # a few directories are read at a time
                self._order.pop(next(iter(self._order)))
        return names

    def _start(self, path: str, listed: Stat) -> _Pending:
        pending = self._pending[path] = _Pending()
        self._nursery.start_soon(self._head, path, listed, pending)
        return pending

    async def _head(self, path: str, listed: Stat, pending: _Pending) -> None:
        try:
            async with self._limiter:
                self.requests += 1
                if listed.kind == DIR:
                    marker = await self._store.head(self._keys.dir_prefix(path))
                    # the listing saw the prefix: a directory with or without a marker
                    pending.result = decode(marker, DIR, self._defaults) if marker is not None \
                        else implicit_dir(self._defaults, now_ns())
                else:
                    key = self._keys.key(path)
                    if self._bodies is not None and 0 < listed.size <= SMALL_FILE:
                        got = await self._store.get_small(key, SMALL_FILE)
                        info = got[0] if got is not None else None
                        if got is not None and got[1] is not None:
                            self._bodies.put(key, got[0].etag, got[1])
                    else:
                        info = await self._store.head(key)
                    if info is not None and not self._hidden(key, info.etag):
                        pending.result = decode(info, DIR if is_old_style_dir(info) else FILE, self._defaults)
            if pending.result is not None:
                pending.result = self._cache.put_stat(path, pending.result)
        except StoreError as e:
            pending.error = e
        except Exception as e:  # noqa: BLE001 - a background task must not kill the mount
            log.exception("reading the headers of %s", path)
            pending.error = StoreError(f"head {path}: {e}")
        finally:
            pending.done.set()
            del self._pending[path]
