"""Open handles: a file's (with its read-ahead) and a directory's (its snapshot)."""

from __future__ import annotations

from dataclasses import dataclass

from s3pvefs.namespace.inodes import Inode
from s3pvefs.namespace.stat import Stat
from s3pvefs.read.prefetcher import Prefetcher


@dataclass(eq=False)
class FileHandle:
    inode: Inode
    writable: bool
    prefetcher: Prefetcher | None = None
    created: bool = False  # the open that created the file (its flush before any write commits nothing)
    keep_cache: bool = True  # the kernel may serve this open from pages an earlier open read
    served: bool = False  # bytes of the prefetcher's version may have reached the reader


@dataclass(eq=False)
class DirHandle:
    inode: Inode
    # The snapshot offsets index into: taken at the first readdir, not at opendir (`df`
    # opens the mountpoint and closes it again; that must not wait for a LIST).
    entries: list[tuple[str, Stat]] | None = None
