"""rename as a Filesystem method: a file is copied server-side to its new key and
the old one deleted (a cached file's cache follows it); a directory moves every
object under its prefix. Not atomic; nothing is deleted before its copy exists."""

from __future__ import annotations

import errno

import trio

from s3pvefs.errors import Exists, FsError, IsADir, NotADir, NotEmpty, NotFound, NotSupported, single_error
from s3pvefs.namespace.keys import DIR_CONTENT_TYPE, join_path
from s3pvefs.namespace.stat import DIR, encode_metadata, implicit_dir, now_ns
from s3pvefs.write.uploader import copy_object

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


class Renames:
    """Methods of Filesystem (fs/filesystem.py), whose state they use."""

    async def rename(self, old_parent: int, old_raw: bytes, new_parent: int, new_raw: bytes,
                     flags: int = 0) -> None:
        self._writable()
        if flags & RENAME_EXCHANGE:
            raise NotSupported("RENAME_EXCHANGE is not supported on S3")
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
            await self._move_tree(src_path, dst_path)
            self.cache.invalidate_tree(src_path)
            self.cache.invalidate_tree(dst_path)
        else:
            if dst is not None and dst.kind == DIR:
                raise IsADir(dst_name)
            replaced = self.table.child(dst_parent.ino, dst_name) if dst is not None else None
            if replaced is not None and replaced.local is not None and replaced.local.stream is not None:
                # Its upload is at the key the source lands on: it can never be committed.
                replaced.local.stream.fail(FsError("file was replaced while open", err=errno.ESTALE))
            src_key, dst_key = self.keys.key(src_path), self.keys.key(dst_path)
            local = src_inode.local
            stream = local.stream if local is not None else None
            if stream is not None and stream.uploading:
                await self._commit(src_inode)  # parts belong to an upload at the old key
            remote_size = local.remote_size if local is not None else src.size
            sparse = local.staged if local is not None else None
            if sparse is not None:
                async with local.lock:  # no commit to the old key meanwhile
                    await self._rename_cached(src_key, dst_key, dst_path, remote_size, sparse, dst is not None)
            elif remote_size is not None:
                meta = encode_metadata(local.stat) if local is not None else None
                await copy_object(self.store, src_key, dst_key, remote_size, meta, self.cfg.write)
                self._unhide(dst_key)
                await self.store.delete(src_key)
                if local is not None and meta is not None and (stream is None or stream.clean()):
                    local.dirty = False  # the copy carried the pending attributes
            elif dst is not None:
                await self.store.delete(dst_key)  # replaced by a file not committed yet
            self.cache.invalidate(src_path)
            self.cache.invalidate(dst_path)
            self.cache.put_negative(src_path)
            # A copy may have another ETag (a multipart copy always does): not known here.
            if local is not None:
                local.stat = local.stat.with_(etag=None)
            self.cache.put_stat(dst_path, (src if local is None else local.stat).with_(etag=None))
        self.table.move(src_inode, dst_parent.ino, dst_name)

    async def _move_tree(self, src_path: str, dst_path: str) -> None:
        """Copy every object under a directory to its new prefix, then delete the
        originals. Not atomic: a failure midway leaves both trees partly present,
        and nothing is deleted before its copy exists."""
        src_prefix, dst_prefix = self.keys.dir_prefix(src_path), self.keys.dir_prefix(dst_path)
        objects, token = [], None
        while True:
            page = await self.store.list_page(src_prefix, None, token)
            objects += [o for o in page.objects if self._hidden.get(o.key) != o.etag]
            token = page.next_token
            if not token:
                break
        if not any(o.key == src_prefix for o in objects):  # keep an empty/implicit dir visible
            await self.store.put(dst_prefix, b"", encode_metadata(implicit_dir(self.defaults, now_ns())),
                                 DIR_CONTENT_TYPE)
        limiter = trio.CapacityLimiter(self.cfg.write.upload_concurrency * 2)

        async def move_one(o):
            async with limiter:
                await copy_object(self.store, o.key, dst_prefix + o.key[len(src_prefix):], o.size, None,
                                  self.cfg.write)
                self._unhide(dst_prefix + o.key[len(src_prefix):])
        with single_error():
            async with trio.open_nursery() as n:
                for o in objects:
                    n.start_soon(move_one, o)

        async def delete_one(o):
            async with limiter:
                await self.store.delete(o.key)
        with single_error():
            async with trio.open_nursery() as n:
                for o in objects:
                    n.start_soon(delete_one, o)
