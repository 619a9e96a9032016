"""Per-inode local state and per-open handles."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from s3pvefs.namespace.inodes import Inode
from s3pvefs.namespace.stat import Stat
from s3pvefs.read.prefetcher import Prefetcher
from s3pvefs.write.sparse import SparseFile
from s3pvefs.write.stream import StreamedFile


@dataclass(eq=False)
class LocalFile:
    """What this mount knows about a file that S3 does not have yet.

    At most one of ``stream`` (a sequential write going to S3 as it is written)
    and ``staged`` (its sparse write-back cache over the object, write/sparse.py) is set; with
    neither, only the attributes differ from the object. ``remote_size`` is the
    size of the object at the key, None when there is none.
    """

    stat: Stat
    remote_size: int | None
    staged: SparseFile | None = None
    stream: StreamedFile | None = None
    dirty: bool = False
    generation: int = 0  # bumped by every change, so a commit knows if it caught them all
    lock: trio.Lock = field(default_factory=trio.Lock)
    # A commit due after an fsync that only synced locally (cache.sync_interval).
    commit_timer: trio.CancelScope | None = None
    commit_due: float | None = None  # trio.current_time() when it runs

    def touch(self, stat: Stat) -> None:
        self.stat = stat
        self.dirty = True
        self.generation += 1

    def cancel_timer(self) -> None:
        if self.commit_timer is not None:
            self.commit_timer.cancel()
        self.commit_timer = self.commit_due = None

    def close(self) -> None:
        self.cancel_timer()
        if self.staged is not None:  # normally removed by the filesystem (cache accounting)
            self.staged.remove()
            self.staged = None
        self.drop_stream()

    def drop_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


@dataclass(eq=False)
class FileHandle:
    inode: Inode
    writable: bool
    prefetcher: Prefetcher | None = None


@dataclass(eq=False)
class DirHandle:
    inode: Inode
    entries: list[tuple[str, Stat]]  # snapshot taken at opendir; offsets index into it
