"""Inode table: inode numbers, the (parent, name) -> inode map, and lookup counts.
No I/O. An inode's identity (number, kind) is fixed; its name may change by rename,
and it is detached from its name by unlink while open handles still use it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterator

from s3pvefs.namespace.stat import DIR, Stat

ROOT_INO = 1


@dataclass(eq=False)
class Inode:
    ino: int
    parent: int
    name: str
    kind: str
    lookups: int = 0
    open_handles: int = 0
    attached: bool = True  # False once unlinked/replaced: no name any more
    pinned: bool = False  # the mount holds data or attributes of it not yet committed: keep it
    # The version (ETag) whose bytes the kernel's page cache may hold for it: None if
    # nothing was served, MIXED if they may come from several (fs/filesystem.py, open).
    kernel_pages: str | None = None
    kernel_size: int = -1  # the size the kernel was last told (-1: none yet)
    # Its attributes when another file replaced it while it was open and its bytes could
    # not be kept (fs/filesystem.py, _unlink_open): fstat still answers (nlink 0), as on
    # a local disk, though reads and writes get ESTALE.
    replaced_stat: Stat | None = None


MIXED = "*"


@dataclass
class InodeTable:
    _by_ino: dict[int, Inode] = field(default_factory=dict)
    _children: dict[int, dict[str, int]] = field(default_factory=dict)
    _next: Iterator[int] = field(default_factory=lambda: itertools.count(ROOT_INO + 1))

    def __post_init__(self):
        self._by_ino[ROOT_INO] = Inode(ROOT_INO, ROOT_INO, "", DIR, lookups=1)

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Inode | None:
        return self._by_ino.get(ino)

    def child(self, parent: int, name: str) -> Inode | None:
        ino = self._children.get(parent, {}).get(name)
        return None if ino is None else self._by_ino[ino]

    def children(self, parent: int) -> list[Inode]:
        return [self._by_ino[i] for i in self._children.get(parent, {}).values()]

    def lookup_path(self, path: str) -> Inode | None:
        """The inode known for an attached path ('a/b/c'), if any."""
        inode = self._by_ino[ROOT_INO]
        for name in path.split("/") if path else []:
            inode = self.child(inode.ino, name)
            if inode is None:
                return None
        return inode

    def path(self, inode: Inode) -> str:
        """'a/b/c' for an attached inode; the root is ''."""
        parts = []
        while inode.ino != ROOT_INO:
            parts.append(inode.name)
            inode = self._by_ino[inode.parent]
        return "/".join(reversed(parts))

    def attach(self, parent: int, name: str, kind: str) -> Inode:
        """The inode for (parent, name): the existing one if it has this kind, else a
        new one (a name that changes type gets a new inode)."""
        existing = self.child(parent, name)
        if existing is not None:
            if existing.kind == kind:
                return existing
            self.detach(existing)
        inode = Inode(next(self._next), parent, name, kind)
        self._by_ino[inode.ino] = inode
        self._children.setdefault(parent, {})[name] = inode.ino
        return inode

    def detach(self, inode: Inode) -> None:
        """Remove the name; the inode lives on while the kernel or a handle holds it."""
        if inode.attached:
            self._unlink_name(inode)
            inode.attached = False
            self._maybe_drop(inode)

    def _unlink_name(self, inode: Inode) -> None:
        names = self._children.get(inode.parent, {})
        if names.get(inode.name) == inode.ino:
            del names[inode.name]
            if not names:
                self._children.pop(inode.parent, None)

    def move(self, inode: Inode, parent: int, name: str) -> None:
        target = self.child(parent, name)
        if target is not None and target is not inode:
            self.detach(target)
        self._unlink_name(inode)
        inode.parent, inode.name = parent, name
        self._children.setdefault(parent, {})[name] = inode.ino

    def is_ancestor(self, maybe_ancestor: Inode, inode: Inode) -> bool:
        while True:
            if inode is maybe_ancestor:
                return True
            if inode.ino == ROOT_INO:
                return False
            inode = self._by_ino[inode.parent]

    def forget(self, ino: int, count: int) -> None:
        inode = self._by_ino.get(ino)
        if inode is None or ino == ROOT_INO:
            return
        inode.lookups = max(0, inode.lookups - count)
        self._maybe_drop(inode)

    def release_handle(self, inode: Inode) -> None:
        inode.open_handles -= 1
        self._maybe_drop(inode)

    def _maybe_drop(self, inode: Inode) -> None:
        """Forget inodes nobody references. Attached inodes with children or pinned
        ones stay, so a path to pending data always resolves; a parent left without
        references by its last child goes too."""
        while True:
            if inode.lookups or inode.open_handles or inode.ino == ROOT_INO or inode.pinned:
                return
            if inode.attached and self._children.get(inode.ino):
                return
            was_attached = inode.attached
            if was_attached:
                self._unlink_name(inode)
                inode.attached = False
            self._by_ino.pop(inode.ino, None)
            parent = self._by_ino.get(inode.parent)
            if not was_attached or parent is None:
                return
            inode = parent

    def drop_if_unused(self, inode: Inode) -> None:
        self._maybe_drop(inode)
