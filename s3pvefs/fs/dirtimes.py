"""A directory's mtime and ctime follow its entries, as on a local filesystem: creating,
removing or renaming a name in it sets both to now.

Shown at once: the metadata cache overlays a pending time on whatever attributes of the
directory it holds or reads from S3 meanwhile (`MetaCache.pending_dir_times`), and the
kernel drops its own copy of the directory's attributes after each such change. Kept in
the bucket where that is cheap: a directory with a marker object (`dir/`) has it
rewritten at most once per DELAY seconds, however many names changed meanwhile (a
`tar -x` of a thousand files in one directory costs one HEAD and one PUT, not a
thousand). The marker keeps every header other tools wrote on it (`rewrite_marker`); a
chmod, chown or utime of the directory writes it at once with every attribute and
supersedes the pending rewrite (`tar -x` and `rsync -a` set a directory's mtime right
after filling it); a rewrite leaves alone a marker that another node wrote after the
change it carries (its ctime header is later). The root and directories that exist
only as a key prefix have no object to hold times: theirs last as long as the mount's
cached attributes.
"""

from __future__ import annotations

import logging

import trio

from s3pvefs.errors import StoreError
from s3pvefs.namespace.keys import DIR_CONTENT_TYPE, KeyMapper
from s3pvefs.namespace.metacache import MetaCache
from s3pvefs.namespace.stat import DIR, Stat, encode_metadata, format_time, parse_time
from s3pvefs.store.base import ObjectStore

log = logging.getLogger(__name__)

DELAY = 2.0  # seconds between rewrites of one directory's marker


async def rewrite_marker(store: ObjectStore, key: str, fields: dict[str, str],
                         changed_at: int | None = None) -> bool:
    """PUT the directory marker `key` with these metadata fields over every header it
    already holds (what other tools wrote there stays). False when there is no marker.

    changed_at (ns): the time of the change being written; a marker whose ctime header is
    later is left as it is, since another node changed the directory after it (a utime
    there must not be undone by this node's older change)."""
    info = await store.head(key)
    if info is None:
        return False
    meta = info.metadata or {}
    if changed_at is not None and (ctime := parse_time(meta.get("ctime", ""))) is not None and ctime > changed_at:
        log.debug("marker %s changed after %s (ctime %s): left as it is", key, changed_at, ctime)
        return True
    await store.put(key, b"", {**meta, **fields}, DIR_CONTENT_TYPE)
    return True


class DirectoryTimes:
    def __init__(self, store: ObjectStore, keys: KeyMapper, cache: MetaCache, delay: float = DELAY):
        self._store, self._keys, self._cache = store, keys, cache
        self._delay = delay
        # directory path -> when its marker is rewritten; the time it gets is the cache's
        # pending_dir_times[path] (shown meanwhile), so the two never disagree
        self._due: dict[str, float] = {}
        self._wake = trio.Event()
        # One marker write at a time: a rewrite reads the marker's headers and PUTs them
        # back, so a chmod or utime written between the two would be lost.
        self._marker_lock = trio.Lock()

    def changed(self, path: str, t_ns: int) -> Stat | None:
        """An entry of directory `path` was created, removed or renamed at t_ns: its
        times, now; its marker, within the delay. The new attributes when known."""
        if path:  # the root has no object
            self._due.setdefault(path, trio.current_time() + self._delay)
            self._cache.pending_dir_times[path] = t_ns
            self._wake.set()
        s = self._cache.stats.get(path)
        if s is not None and s.kind == DIR:
            s = s.with_(mtime_ns=t_ns, ctime_ns=t_ns)
            self._cache.put_stat(path, s)
            return s
        return None

    async def write_attributes(self, path: str, new: Stat, mtime_given: bool) -> Stat:
        """chmod, chown or utime of a directory: its marker is written now with every
        attribute, its pending times included unless an mtime is given, and its pending
        rewrite is dropped (it would undo an explicit mtime). The attributes written."""
        async with self._marker_lock:
            pending = self._cache.pending_dir_times.pop(path, None)  # a name changed since
            self._due.pop(path, None)
            if pending is not None and not mtime_given:
                new = new.with_(mtime_ns=max(new.mtime_ns, pending))
            # the marker keeps what other tools wrote on it; a prefix-only directory gets one
            key, meta = self._keys.dir_prefix(path), encode_metadata(new)
            if not await rewrite_marker(self._store, key, meta):
                await self._store.put(key, b"", meta, DIR_CONTENT_TYPE)
        return new

    def forget(self, path: str) -> None:
        """The directory is gone or moved (rmdir, rename): nothing to write for it or below."""
        for pending in (self._due, self._cache.pending_dir_times):
            for p in [p for p in pending if p == path or p.startswith(path + "/")]:
                del pending[p]

    async def flush(self) -> None:
        """Write every pending marker now (unmount)."""
        for path in list(self._due):
            if self._due.pop(path, None) is not None:
                await self._write(path)

    async def run(self) -> None:
        """Rewrite markers as they fall due (the daemon runs this for the mount's life;
        without it, they are written at flush)."""
        while True:
            if not self._due:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            path, due = min(self._due.items(), key=lambda item: item[1])
            await trio.sleep_until(due)
            if self._due.get(path) == due:
                del self._due[path]
                await self._write(path)

    async def _write(self, path: str) -> None:
        t_ns = None
        try:
            async with self._marker_lock:
                t_ns = self._cache.pending_dir_times.get(path)
                if t_ns is None:
                    return  # superseded (chmod, utime) or forgotten (rmdir, rename) meanwhile
                t = format_time(t_ns)
                await rewrite_marker(self._store, self._keys.dir_prefix(path), {"mtime": t, "ctime": t}, t_ns)
        except StoreError as e:  # times only: the entries themselves are stored
            log.warning("could not keep the times of directory %s: %s", path, e)
        finally:
            if t_ns is not None and path not in self._due and self._cache.pending_dir_times.get(path) == t_ns:
                del self._cache.pending_dir_times[path]  # held by the marker now (or lost: logged)
