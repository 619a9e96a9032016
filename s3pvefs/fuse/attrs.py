"""Stat -> pyfuse3 EntryAttributes / StatvfsData.

The kernel checks access itself (default_permissions) against the attributes it was
last given. Attributes the mount has not read from the object's headers (or written
itself) -- a LIST entry, which carries no metadata -- are therefore never handed over
as they are: they go with no permission bits and no validity, so the kernel asks
GETATTR (which reads the headers) before it decides anything, and a denial on them
makes it ask again. SECURITY.md states the rule; this is the one place it is kept.
"""

from __future__ import annotations

import stat as st

import pyfuse3

from s3pvefs.config import CacheConfig
from s3pvefs.fs.filesystem import FsStat
from s3pvefs.namespace.stat import Stat

BLKSIZE = 1 << 20  # what cp & co. size their buffers by: one FUSE write (max_write) per call


def entry_attributes(ino: int, s: Stat, cfg: CacheConfig, linked: bool = True) -> pyfuse3.EntryAttributes:
    """linked: False once the name is gone (unlinked, removed, or replaced by a rename)
    while the kernel still holds the inode: nlink 0, as on a local filesystem."""
    a = pyfuse3.EntryAttributes()
    a.st_ino = ino
    a.generation = 0
    a.entry_timeout = cfg.kernel_entry_timeout
    if s.complete:
        a.attr_timeout = cfg.kernel_attr_timeout
        a.st_mode = s.mode
    else:  # unread headers: deny everything, valid for no time
        a.attr_timeout = 0
        a.st_mode = st.S_IFMT(s.mode)
    a.st_nlink = (2 if s.kind == "dir" else 1) if linked else 0
    a.st_uid = s.uid
    a.st_gid = s.gid
    a.st_rdev = s.rdev
    a.st_size = s.size
    a.st_blksize = BLKSIZE
    a.st_blocks = (s.size + 511) // 512
    a.st_atime_ns = s.atime_ns
    a.st_mtime_ns = s.mtime_ns
    a.st_ctime_ns = s.ctime_ns
    return a


def statvfs(fs: FsStat) -> pyfuse3.StatvfsData:
    d = pyfuse3.StatvfsData()
    d.f_bsize = fs.block_size
    d.f_frsize = fs.block_size
    d.f_blocks = fs.blocks
    d.f_bfree = fs.free_blocks
    d.f_bavail = fs.free_blocks
    d.f_files = 1 << 32
    d.f_ffree = 1 << 32
    d.f_favail = 1 << 32
    d.f_namemax = fs.name_max
    return d
