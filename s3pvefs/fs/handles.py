"""Per-inode local state and per-open handles."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from s3pvefs.namespace.inodes import Inode
from s3pvefs.namespace.stat import Stat
from s3pvefs.read.prefetcher import Prefetcher
from s3pvefs.write.staging import StagedFile


@dataclass(eq=False)
class LocalFile:
    """What this mount knows about a file that S3 does not have yet.

    ``staged`` holds the file's whole current contents once ``loaded``; with no
    staged data only the attributes differ from the object. ``remote_size`` is the
    size of the object at the key, None when there is none.
    """

    stat: Stat
    remote_size: int | None
    staged: StagedFile | None = None
    dirty: bool = False
    generation: int = 0  # bumped by every change, so a commit knows if it caught them all
    lock: trio.Lock = field(default_factory=trio.Lock)

    def touch(self, stat: Stat) -> None:
        self.stat = stat
        self.dirty = True
        self.generation += 1

    def close(self) -> None:
        if self.staged is not None:
            self.staged.close()
            self.staged = None


@dataclass(eq=False)
class FileHandle:
    inode: Inode
    writable: bool
    prefetcher: Prefetcher | None = None


@dataclass(eq=False)
class DirHandle:
    inode: Inode
    entries: list[tuple[str, Stat]]  # snapshot taken at opendir; offsets index into it
