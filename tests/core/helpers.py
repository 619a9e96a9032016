"""Small drivers for the core tests."""

from __future__ import annotations

import os

import pytest

from s3pvefs.errors import FsError
from s3pvefs.namespace.inodes import ROOT_INO

ROOT = ROOT_INO
KEY = "pve/"  # the prefix every test mount uses


async def make_file(fs, parent: int, name: bytes, data: bytes, mode: int = 0o644, uid: int = 0,
                    gid: int = 0) -> int:
    """create + write + flush + release; returns the inode number."""
    fh, inode, _ = await fs.create(parent, name, mode, os.O_WRONLY | os.O_CREAT, uid, gid)
    if data:
        assert await fs.write(fh, 0, data) == len(data)
    await fs.flush(fh)
    await fs.release(fh)
    return inode.ino


async def read_all(fs, ino: int, size: int = 1 << 30) -> bytes:
    fh = await fs.open(ino, os.O_RDONLY)
    try:
        return await fs.read(fh, 0, size)
    finally:
        await fs.release(fh)


async def names(fs, ino: int) -> dict[str, object]:
    dh = await fs.opendir(ino)
    try:
        return {name: s for _, name, _, s in fs.readdir(dh, 0)}
    finally:
        fs.releasedir(dh)


class HugeBytes:
    """The bytes of an object too big to hold (MemoryStore.put_outside takes any sized,
    sliceable stand-in), made on demand: byte i is (i * 7 + i // 4096) % 251."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(self.size)
        return bytes((i * 7 + i // 4096) % 251 for i in range(start, stop))


async def expect_errno(code, coro):
    """The core call fails with this errno."""
    with pytest.raises(FsError) as e:
        await coro
    assert e.value.errno == code, e.value
    return e.value


def keys(store):
    return sorted(store.objects)
