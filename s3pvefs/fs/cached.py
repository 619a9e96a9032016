"""Files changed in place, as Filesystem methods: each gets a sparse write-back
cache (write/sparse.py) over the object it started from.

Here: creating and dropping a file's cache within the disk budget (write/cachespace.py),
writes and base fetches, the commit (write/writeback.py: changed windows sent, the
rest copied server-side), fsync (durable locally, the commit put off by
cache.sync_interval), what a last close that cannot commit leaves for the next mount,
recovery of a killed daemon's leftovers (write/recovery.py), and the rename of a
cached file.
"""

from __future__ import annotations

import logging

import trio

from s3pvefs.errors import FsError
from s3pvefs.fs.handles import LocalFile
from s3pvefs.namespace.inodes import Inode
from s3pvefs.namespace.stat import encode_metadata
from s3pvefs.write.recovery import Recovered, lock_cache, recover
from s3pvefs.write.sparse import SparseFile
from s3pvefs.write.uploader import copy_object
from s3pvefs.write.writeback import upload_sparse

log = logging.getLogger(__name__)


class CachedFiles:
    """Methods of Filesystem (fs/filesystem.py), whose state they use."""

    def _new_sparse(self, inode: Inode, base_size: int | None, base_etag: str | None, size: int) -> SparseFile:
        """A write-back cache for inode over the object at its key (base_size None: none)."""
        sparse = SparseFile(self._staging_dir, key=self.key(inode), path=self.path(inode),
                            base_size=base_size or 0, base_etag=base_etag if base_size is not None else None,
                            size=size, metadata=encode_metadata(inode.local.stat),
                            fill_size=self.cfg.cache.fill_size)
        self.space.track(sparse)
        self._sparse_owner[sparse] = inode
        return sparse

    def _drop_sparse(self, sparse: SparseFile) -> None:
        self.space.untrack(sparse)
        self._sparse_owner.pop(sparse, None)
        sparse.remove()

    def _base_fetcher(self, inode: Inode, sparse: SparseFile, *, to_cache: bool = True):
        """Bytes of the base object; to_cache: they will be held locally (room first)."""
        async def fetch(start: int, end: int) -> bytes:
            if to_cache:
                await self.space.make_room(sparse, end - start)
            return await self.store.get_range(self.key(inode), start, end, sparse.base_etag)
        return fetch

    async def _sparse_write(self, inode: Inode, sparse: SparseFile, offset: int, data: bytes) -> int:
        await self.space.make_room(sparse, len(data))
        return await sparse.write(offset, data, self._base_fetcher(inode, sparse))

    async def _write_back(self, sparse: SparseFile) -> None:
        """Commit a cached file early (the disk budget is full of its unsent data)."""
        inode = self._sparse_owner.get(sparse)
        if inode is not None and inode.local is not None and inode.local.staged is sparse:
            await self._commit(inode)

    async def _commit_sparse(self, inode: Inode, key: str, meta: dict[str, str]) -> None:
        local = inode.local
        sparse = local.staged
        size = sparse.size
        taken = sparse.begin_commit()
        try:
            if not taken and size == sparse.base_size == sparse.base_end == local.remote_size:
                await copy_object(self.store, key, key, size, meta, self.cfg.write)  # attributes only
                etag = None
            else:
                fetch = self._base_fetcher(inode, sparse, to_cache=False)  # into parts, not the cache
                etag = await upload_sparse(self.store, key, sparse, taken, meta, self.cfg.write, fetch,
                                           self.budget)
        except BaseException:
            sparse.commit_failed(taken)
            raise
        if etag is None:
            info = await self.store.head(key)
            etag = info.etag if info is not None else None
        sparse.metadata = meta
        sparse.committed(size, etag)

    async def recover(self) -> list[Recovered]:
        """Take this mount's cache directory and deal with what a killed daemon left in
        it (recovery.py). Before the mount is served: nobody sees the old bytes."""
        if self._cache_lock is None:
            self._cache_lock = lock_cache(self._staging_dir)
        return await recover(self.store, self._staging_dir, self._recovered_dir, self.cfg.write)

    async def _sync_locally(self, local: LocalFile) -> None:
        """fsync without a commit: the cache file and its journal (with the metadata
        recovery would write) durable on local disk. The caller holds local.lock, so
        no commit rewrites the journal meanwhile."""
        await trio.to_thread.run_sync(local.staged.sync, encode_metadata(local.stat))

    def _put_off_commit(self, inode: Inode, interval: float) -> None:
        """After an fsync that only synced locally: a commit interval from now, unless
        one is due already (close, or a commit catching every change, cancels it)."""
        local = inode.local
        if local.commit_timer is None:
            local.commit_due = trio.current_time() + interval
            local.commit_timer = trio.CancelScope(deadline=local.commit_due)
            self._nursery.start_soon(self._commit_when_due, inode, local, local.commit_timer)

    async def _commit_when_due(self, inode: Inode, local: LocalFile, timer: trio.CancelScope) -> None:
        """The commit an fsync put off; cancelled when the file is closed (that commits)."""
        with timer:
            await trio.sleep_forever()  # until the timer's deadline
        if timer.cancelled_caught and local.commit_timer is timer and inode.local is local:
            local.commit_timer = local.commit_due = None
            try:
                await self._commit(inode)
            except FsError as e:  # the data stays cached and dirty: close or the next fsync retries
                log.error("commit of %s (fsynced %.0f s before) failed, kept for the next try: %s",
                          self.path(inode), self.cfg.cache.sync_interval, e)

    async def _give_up_commit(self, inode: Inode, e: FsError) -> None:
        """The last close could not commit. A cached file's data (which an fsync may
        have called durable) is left in the cache directory with its journal: the next
        mount commits it, or keeps it aside if the object changed meanwhile. Data of a
        streamed file, in memory only, is lost, and close() has said so."""
        path, local = self.path(inode), inode.local
        local.cancel_timer()  # a commit put off by an fsync must not run on what is left
        sparse = local.staged
        if sparse is None:
            log.error("commit of %s at release failed, data dropped: %s", path, e)
            return
        async with local.lock:
            try:
                await self._sync_locally(local)
            except FsError as why:
                log.error("commit of %s at release failed (%s) and its cache could not be kept: %s; "
                          "data dropped", path, e, why)
                return  # _drop_local removes it
            local.staged = None
            self.space.untrack(sparse)
            self._sparse_owner.pop(sparse, None)
            sparse.close()  # files stay for the next mount's recovery
        log.error("commit of %s at release failed: %s; its data stays in the cache as %s and is "
                  "committed at the next mount", path, e, sparse.data_path)

    async def _rename_cached(self, src_key: str, dst_key: str, dst_path: str, remote_size: int | None,
                             sparse: SparseFile, replacing: bool) -> None:
        """Rename a file with a write-back cache: its base object moves server-side
        and the cache (and its journal) follow it to the new key."""
        if remote_size is not None:
            await copy_object(self.store, src_key, dst_key, remote_size, None, self.cfg.write)
            self._unhide(dst_key)
            info = await self.store.head(dst_key)
            await self.store.delete(src_key)
            sparse.base_etag = info.etag if info is not None else None
        elif replacing:
            await self.store.delete(dst_key)  # replaced by a file not committed yet
        sparse.rekey(dst_key, dst_path)
