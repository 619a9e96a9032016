"""Files written sequentially, as Filesystem methods: the bytes stream to S3 from
memory as they are written (write/stream.py). A write that leaves the sequence
moves the file to its write-back cache (cached.py)."""

from __future__ import annotations

import errno

from s3pvefs.errors import FsError
from s3pvefs.namespace.inodes import Inode
from s3pvefs.namespace.stat import encode_metadata
from s3pvefs.write.stream import StreamedFile


class StreamedFiles:
    """Methods of Filesystem (fs/filesystem.py), whose state they use."""

    def _new_stream(self, inode: Inode) -> StreamedFile:
        return StreamedFile(self.store, lambda: self.key(inode), lambda: encode_metadata(inode.local.stat),
                            self.cfg.write, self.budget, self._nursery)

    def _stream_for_write(self, inode: Inode, offset: int) -> StreamedFile | None:
        """The stream a write at offset goes to: the file's, or a new one for a file
        that is empty or appended to right at its committed end; None: staging."""
        local = inode.local
        if local.stream is not None or local.staged is not None:
            return local.stream
        if not inode.attached:
            return None
        if local.stat.size == 0:
            local.stream = self._new_stream(inode)
        elif offset == local.stat.size == local.remote_size and self.cfg.write.uniform_parts is False:
            local.stream = self._new_stream(inode)  # an append: the object is its first bytes
            local.stream.base = local.stream.committed = local.remote_size
        return local.stream

    async def _unstream(self, inode: Inode) -> None:
        """Move a streamed file to the staging path (a write behind what was sent, an
        extending truncate, a read of sent bytes). With no upload running, the staging
        file gets the committed object's bytes (if any) and those in memory; parts of
        an unfinished upload cannot be read back, so then everything is committed
        first and read back when needed (_load)."""
        local = inode.local
        async with local.lock:
            stream = local.stream
            if stream is None:
                return
            if not stream.uploading:
                etag = None
                if stream.committed:  # an append: the object at the key is the base
                    info = await self.store.head(self.key(inode))
                    etag = info.etag if info is not None and info.size == stream.committed else None
                    if etag is None:
                        raise FsError("file changed in S3 while being appended to", err=errno.ESTALE)
                if stream is not local.stream or stream.uploading:
                    raise FsError("file changed while moving to the cache", err=errno.EAGAIN)
                sparse = self._new_sparse(inode, stream.committed if stream.committed else None, etag,
                                          stream.committed)
                try:
                    await self._sparse_write(inode, sparse, stream.base, bytes(stream.buf))
                    sparse.truncate(stream.end)
                except BaseException:
                    self._drop_sparse(sparse)
                    raise
                local.staged = sparse
                local.drop_stream()
                return
        await self._commit(inode)
        local.drop_stream()

    async def _read_streamed(self, inode: Inode, stream: StreamedFile, offset: int, size: int) -> bytes | None:
        """Bytes of a file being streamed: from memory, and from the object committed at
        the key (before stream.base); None if some are in an unfinished upload."""
        if offset >= stream.base:
            return stream.read(offset, size)
        if not inode.attached and (inode.frozen_key is None or inode.frozen_key not in self._hidden):
            raise FsError("file was replaced or removed while open", err=errno.ESTALE)  # as read() says
        if stream.uploading:
            return None
        end = offset + size
        head = await self.store.get_range(self.key(inode), offset, min(end, stream.base))
        if stream is not inode.local.stream or stream.uploading or len(head) != min(end, stream.base) - offset:
            return None  # changed while we read: take the slow path
        return head + (stream.read(stream.base, end - stream.base) if end > stream.base else b"")
