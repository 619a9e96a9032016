"""Local staging files: a sparse file per inode holding data written but not yet
committed. Reads and writes are pread/pwrite of at most one FUSE request (128 KiB)
on local disk, done inline: the page cache absorbs them in microseconds, less than
a thread hand-off would cost. Bulk reads for uploads go through a worker thread.
Files are created 0600 in a 0700 directory and unlinked at once, so nothing is
left behind and nothing is readable by other users."""

from __future__ import annotations

import os
import tempfile

import trio

from s3pvefs.errors import FsError


class StagedFile:
    def __init__(self, directory: str):
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            if os.stat(directory).st_mode & 0o077:  # made by someone else, or before
                os.chmod(directory, 0o700)
            fd, path = tempfile.mkstemp(prefix="staging-", dir=directory)
            os.unlink(path)
        except OSError as e:
            raise FsError(f"cannot create staging file in {directory}: {e.strerror}", err=e.errno) from None
        self.fd = fd
        self.size = 0

    def write(self, offset: int, data: bytes) -> int:
        try:
            n = os.pwrite(self.fd, data, offset)
        except OSError as e:  # ENOSPC reaches the writer; nothing already staged is touched
            raise FsError(f"staging write failed: {e.strerror}", err=e.errno) from None
        self.size = max(self.size, offset + n)
        return n

    def read(self, offset: int, size: int) -> bytes:
        if offset >= self.size:
            return b""
        return os.pread(self.fd, min(size, self.size - offset), offset)

    async def read_bulk(self, offset: int, size: int) -> bytes:
        return await trio.to_thread.run_sync(self.read, offset, size)

    def truncate(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError as e:
            raise FsError(f"staging truncate failed: {e.strerror}", err=e.errno) from None
        self.size = size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
