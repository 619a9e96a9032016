"""Symlinks, statfs, read-only mounts, store errors."""

from __future__ import annotations

import errno
import os
import stat as st

import pytest

from s3pvefs.config import MountOptions, TiB
from s3pvefs.errors import FsError, StoreError
from tests.core.helpers import ROOT, make_file, names, read_all


def test_symlink_and_readlink(run):
    saved = []

    async def body(fs, store):
        ln, s = await fs.symlink(ROOT, b"latest", b"dump/vzdump-100.vma.zst", 1000, 1000)
        assert s.kind == "symlink" and st.S_ISLNK(s.mode) and s.size == 23
        obj = store.objects["pve/latest"]
        assert obj.data == b"dump/vzdump-100.vma.zst"
        assert obj.metadata["mode"] == str(st.S_IFLNK | 0o777)
        assert await fs.readlink(ln.ino) == b"dump/vzdump-100.vma.zst"
        with pytest.raises(FsError) as e:
            await fs.symlink(ROOT, b"latest", b"x", 0, 0)
        assert e.value.errno == errno.EEXIST
        f = await make_file(fs, ROOT, b"f", b"x")
        with pytest.raises(FsError) as e:
            await fs.readlink(f)
        assert e.value.errno == errno.EINVAL
        saved.append(store)

    run(body)

    async def remount(fs, store):
        inode, s = await fs.lookup(ROOT, b"latest")
        assert s.kind == "symlink" and inode.kind == "symlink"
        assert await fs.readlink(inode.ino) == b"dump/vzdump-100.vma.zst"

    run(remount, store=saved[0])


def test_statfs_makes_no_request(run):
    async def body(fs, store):
        s = fs.statfs()
        assert s.blocks > 0 and s.free_blocks > 0 and s.block_size > 0
        assert s.blocks * s.block_size == TiB
        assert s.name_max == 255
        assert sum(store.calls.values()) == 0

    run(body, mount=MountOptions(capacity=TiB))


def test_read_only_mount(run):
    async def body(fs, store):
        store.put_outside("pve/f", b"data")
        store.put_outside("pve/d/inner", b"")
        f, _ = await fs.lookup(ROOT, b"f")
        d, _ = await fs.lookup(ROOT, b"d")
        store.reset_counts()
        attempts = [
            fs.mkdir(ROOT, b"new", 0o755, 0, 0),
            fs.create(ROOT, b"new", 0o644, os.O_WRONLY | os.O_CREAT, 0, 0),
            fs.unlink(ROOT, b"f"),
            fs.rmdir(ROOT, b"d"),
            fs.rename(ROOT, b"f", ROOT, b"g"),
            fs.symlink(ROOT, b"ln", b"f", 0, 0),
            fs.setattr(f.ino, mode=0o600),
            fs.setattr(f.ino, size=0),
            fs.open(f.ino, os.O_WRONLY),
            fs.open(f.ino, os.O_RDWR),
            fs.open(f.ino, os.O_RDONLY | os.O_TRUNC),
        ]
        for coro in attempts:
            with pytest.raises(FsError) as e:
                await coro
            assert e.value.errno == errno.EROFS
        assert sum(store.calls.values()) == 0
        assert await read_all(fs, f.ino) == b"data"
        assert set(await names(fs, ROOT)) == {"f", "d"}
        assert store.objects["pve/f"].data == b"data"
        assert {"put", "copy", "delete"}.isdisjoint(store.calls)

    run(body, mount=MountOptions(read_only=True))


@pytest.mark.parametrize("op", ["head", "list"])
def test_store_errors_on_lookup_are_eio(run, op):
    async def body(fs, store):
        store.put_outside("pve/f", b"x")
        store.fail[op] = StoreError("connection reset", transient=True)
        with pytest.raises(FsError) as e:
            await fs.lookup(ROOT, b"f")
        assert e.value.errno == errno.EIO
        del store.fail[op]
        _, s = await fs.lookup(ROOT, b"f")  # a failure is not cached as absence
        assert s.size == 1

    run(body)


def test_store_error_on_read_is_eio(run):
    async def body(fs, store):
        store.put_outside("pve/f", b"x" * 100)
        inode, _ = await fs.lookup(ROOT, b"f")
        fh = await fs.open(inode.ino, os.O_RDONLY)
        store.fail["get"] = StoreError("reset")
        with pytest.raises(FsError) as e:
            await fs.read(fh, 0, 10)
        assert e.value.errno == errno.EIO
        del store.fail["get"]
        assert await fs.read(fh, 0, 10) == b"x" * 10
        await fs.release(fh)

    run(body)


def test_store_error_on_rename_directory_is_eio(run):
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        for i in range(3):
            await make_file(fs, d.ino, b"f%d" % i, b"x")
        store.fail["copy"] = StoreError("403 AccessDenied")
        with pytest.raises(FsError) as e:
            await fs.rename(ROOT, b"d", ROOT, b"e")
        assert e.value.errno == errno.EIO
        # nothing was deleted before its copy existed
        assert {f"pve/d/f{i}" for i in range(3)} <= set(store.objects)

    run(body)


def test_empty_prefix_mount(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"f", b"x")
        await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        assert sorted(store.objects) == ["d/", "f"]
        assert set(await names(fs, ROOT)) == {"d", "f"}

    run(body, prefix="")


def test_open_file_count_and_forget(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"x")
        fh = await fs.open(ino, os.O_RDONLY)
        assert fs.open_file_count() == 1
        await fs.release(fh)
        assert fs.open_file_count() == 0
        inode = fs.table.get(ino)
        fs.forget([(ino, inode.lookups)])
        assert fs.table.get(ino) is None
        # the name still resolves afterwards, with a fresh inode
        again, _ = await fs.lookup(ROOT, b"f")
        assert again.ino != ino and await read_all(fs, again.ino) == b"x"

    run(body)
