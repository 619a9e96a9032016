"""pyfuse3.Operations: translation only. Arguments in, one core call, attributes out.
Errors: the core raises s3pvefs.errors exceptions; ``translate_errors`` is the one
place they become FUSEError."""

from __future__ import annotations

import errno
import functools
import os
import logging
import stat

import pyfuse3

from s3pvefs.config import Config
from s3pvefs.errors import FsError
from s3pvefs.fs.filesystem import Filesystem
from s3pvefs.fuse.attrs import entry_attributes, statvfs

log = logging.getLogger(__name__)

_QUIET = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY}  # routine answers, not problems


def translate_errors(fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except FsError as e:
            level = logging.DEBUG if e.errno in _QUIET else logging.WARNING
            log.log(level, "%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except pyfuse3.FUSEError:
            raise
        except Exception:
            log.exception("%s failed unexpectedly", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
    return wrapper


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, fs: Filesystem, config: Config):
        super().__init__()
        self.fs = fs
        self.cache_cfg = config.cache
        # Only the attributes: dropping pages from inside a read of them would deadlock.
        fs.kernel_attrs_stale = _invalidate_attrs

    def _attrs(self, ino, s):
        self.fs.told_kernel(ino, s)
        return entry_attributes(ino, s, self.cache_cfg, linked=self.fs.has_name(ino))

    @translate_errors
    async def lookup(self, parent_inode, name, ctx=None):
        inode, s = await self.fs.lookup(parent_inode, name)
        return self._attrs(inode.ino, s)

    @translate_errors
    async def getattr(self, inode, ctx=None):
        # The kernel asks once its copy expired, or when a permission check failed on
        # it: answer with the real headers, not a listing's defaults.
        return self._attrs(inode, await self.fs.fstat(inode))

    @translate_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        s = await self.fs.setattr(
            inode,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return self._attrs(inode, s)

    @translate_errors
    async def readlink(self, inode, ctx):
        return await self.fs.readlink(inode)

    @translate_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        inode, s = await self.fs.mkdir(parent_inode, name, mode, ctx.uid, ctx.gid)
        return self._attrs(inode.ino, s)

    @translate_errors
    async def symlink(self, parent_inode, name, target, ctx):
        inode, s = await self.fs.symlink(parent_inode, name, target, ctx.uid, ctx.gid)
        return self._attrs(inode.ino, s)

    @translate_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        inode, s = await self.fs.mknod(parent_inode, name, mode, rdev, ctx.uid, ctx.gid)
        return self._attrs(inode.ino, s)

    @translate_errors
    async def unlink(self, parent_inode, name, ctx):
        await self.fs.unlink(parent_inode, name)

    @translate_errors
    async def rmdir(self, parent_inode, name, ctx):
        await self.fs.rmdir(parent_inode, name)

    @translate_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self.fs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @translate_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        fh, inode, s = await self.fs.create(parent_inode, name, mode, flags, ctx.uid, ctx.gid)
        return _file_info(fh, flags), self._attrs(inode.ino, s)

    @translate_errors
    async def open(self, inode, flags, ctx):
        fh = await self.fs.open(inode, flags)
        return _file_info(fh, flags, keep_cache=self.fs.keep_cache(fh))

    @translate_errors
    async def read(self, fh, off, size):
        return await self.fs.read(fh, off, size)

    @translate_errors
    async def write(self, fh, off, buf):
        return await self.fs.write(fh, off, buf)

    @translate_errors
    async def flush(self, fh):
        await self.fs.flush(fh)

    @translate_errors
    async def fsync(self, fh, datasync):
        await self.fs.fsync(fh)

    @translate_errors
    async def release(self, fh):
        await self.fs.release(fh)

    @translate_errors
    async def opendir(self, inode, ctx):
        return self.fs.opendir_unread(inode)  # `df` opens the mountpoint: no LIST for that

    @translate_errors
    async def readdir(self, fh, start_id, token):
        await self.fs.read_dir(fh)
        # "." and ".." first (offsets 1, 2), as a local filesystem lists them (`ls -a`,
        # scripts that count entries). The kernel makes no dentry of them: no lookup.
        dots = self.fs.dot_entries(fh)
        for offset in range(start_id, len(dots)):
            name, ino = dots[offset]
            attrs = pyfuse3.EntryAttributes()
            attrs.st_ino, attrs.st_mode = ino, stat.S_IFDIR
            if not pyfuse3.readdir_reply(token, name, attrs, offset + 1):
                return
        for next_id, name, inode, s in self.fs.readdir(fh, max(0, start_id - len(dots))):
            if not pyfuse3.readdir_reply(token, name.encode("utf-8"), self._attrs(inode.ino, s),
                                         next_id + len(dots)):
                self.fs.unused(inode)
                return
            self.fs.remember(inode)

    @translate_errors
    async def releasedir(self, fh):
        self.fs.releasedir(fh)

    @translate_errors
    async def fsyncdir(self, fh, datasync):
        pass

    @translate_errors
    async def statfs(self, ctx):
        return statvfs(self.fs.statfs())

    async def forget(self, inode_list):
        self.fs.forget(inode_list)


def _invalidate_attrs(ino: int) -> None:
    try:
        pyfuse3.invalidate_inode(ino, attr_only=True)
    except OSError:  # the kernel has forgotten the inode: nothing to invalidate
        pass


def _file_info(fh: int, flags: int, keep_cache: bool = True) -> pyfuse3.FileInfo:
    """O_DIRECT (QEMU's cache=none, fio --direct=1): the kernel passes reads and
    writes through as they come instead of via its page cache. Without keep_cache the
    kernel drops the pages it has of the file (another version's) at this open."""
    return pyfuse3.FileInfo(fh=fh, direct_io=bool(flags & os.O_DIRECT), keep_cache=keep_cache)
