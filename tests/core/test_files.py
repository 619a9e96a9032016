"""Files: create/write/commit, flush errors, open flags, truncate, attributes, unlink."""

from __future__ import annotations

import errno
import os
import time
import stat as st

import pytest
import trio

from s3pvefs.errors import FsError, NotFound
from s3pvefs.errors import StoreError
from tests.core.helpers import ROOT, keys, make_file, names, read_all

WR_CREAT = os.O_WRONLY | os.O_CREAT


async def lookup_ino(fs, parent, name):
    inode, _ = await fs.lookup(parent, name)
    return inode.ino


def test_create_write_flush_commits_with_metadata(run):
    async def body(fs, store):
        fh, inode, s = await fs.create(ROOT, b"a.dat", 0o640, WR_CREAT, 1000, 1001)
        assert st.S_ISREG(s.mode) and s.size == 0
        assert await fs.write(fh, 0, b"hello world") == 11
        await fs.flush(fh)
        obj = store.objects["pve/a.dat"]
        assert obj.data == b"hello world"
        assert obj.metadata["mode"] == str(st.S_IFREG | 0o640)
        assert obj.metadata["uid"] == "1000" and obj.metadata["gid"] == "1001"
        assert {"mtime", "ctime", "atime"} <= set(obj.metadata)
        assert store.calls["put"] == 1
        await fs.release(fh)
        assert store.calls["put"] == 1  # release after a clean flush uploads nothing more
        assert (await fs.getattr(inode.ino)).size == 11
        assert await read_all(fs, inode.ino) == b"hello world"

    run(body)


def test_close_commits(run):
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"f", 0o644, WR_CREAT, 0, 0)
        await fs.write(fh, 0, b"data")
        assert "pve/f" not in store.objects
        assert store.calls["put"] == 0
        # the mount itself sees the pending data at once
        assert (await fs.getattr(inode.ino)).size == 4
        assert "f" in await names(fs, ROOT)
        await fs.flush(fh)
        assert store.objects["pve/f"].data == b"data"
        await fs.release(fh)

    run(body)


def test_release_without_flush_still_commits(run):
    async def body(fs, store):
        fh, _, _ = await fs.create(ROOT, b"f", 0o644, WR_CREAT, 0, 0)
        await fs.write(fh, 0, b"mmap-ish")
        await fs.release(fh)
        assert store.objects["pve/f"].data == b"mmap-ish"

    run(body)


def test_flush_failure_is_eio_and_data_stays_dirty(run):
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"f", 0o644, WR_CREAT, 0, 0)
        await fs.write(fh, 0, b"precious")
        store.fail["put"] = StoreError("503 Slow Down", transient=True)
        with pytest.raises(FsError) as e:
            await fs.flush(fh)
        assert e.value.errno == errno.EIO
        assert "pve/f" not in store.objects
        assert fs.files.get(inode.ino) is not None and fs.files[inode.ino].dirty
        del store.fail["put"]
        await fs.flush(fh)
        assert store.objects["pve/f"].data == b"precious"
        assert not fs.files[inode.ino].dirty
        await fs.release(fh)
        assert store.calls["put"] == 2

    run(body)


def test_o_excl_on_existing_name(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"f", b"x")
        with pytest.raises(FsError) as e:
            await fs.create(ROOT, b"f", 0o644, WR_CREAT | os.O_EXCL, 0, 0)
        assert e.value.errno == errno.EEXIST
        assert store.objects["pve/f"].data == b"x"
        # an outside object counts as existing too
        store.put_outside("pve/g", b"outside")
        with pytest.raises(FsError) as e:
            await fs.create(ROOT, b"g", 0o644, WR_CREAT | os.O_EXCL, 0, 0)
        assert e.value.errno == errno.EEXIST

    run(body)


def test_create_of_existing_without_excl_opens_it(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"keep me")
        fh, inode, s = await fs.create(ROOT, b"f", 0o600, WR_CREAT, 0, 0)
        assert inode.ino == ino and s.size == 7
        await fs.release(fh)
        assert store.objects["pve/f"].data == b"keep me"
        fh, inode, s = await fs.create(ROOT, b"f", 0o600, WR_CREAT | os.O_TRUNC, 0, 0)
        assert s.size == 0
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/f"].data == b""

    run(body)


def test_o_creat_rdonly_makes_empty_object(run):
    async def body(fs, store):
        fh, _, _ = await fs.create(ROOT, b"empty", 0o644, os.O_RDONLY | os.O_CREAT, 0, 0)
        assert "pve/empty" not in store.objects
        await fs.flush(fh)  # the close: the release may come after the caller looked
        obj = store.objects["pve/empty"]
        await fs.release(fh)
        assert obj.data == b"" and obj.metadata["mode"] == str(st.S_IFREG | 0o644)

    run(body)


def test_o_trunc(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"old contents")
        store.reset_counts()
        fh = await fs.open(ino, os.O_WRONLY | os.O_TRUNC)
        assert (await fs.getattr(ino)).size == 0
        await fs.write(fh, 0, b"new")
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/f"].data == b"new"
        assert store.calls["get"] == 0  # truncated data is never downloaded

    run(body)


def test_o_trunc_without_write(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"old contents")
        fh = await fs.open(ino, os.O_RDWR | os.O_TRUNC)
        assert await fs.read(fh, 0, 100) == b""
        await fs.release(fh)
        assert store.objects["pve/f"].data == b""

    run(body)


@pytest.mark.parametrize("content", [b"", b"old contents"])
@pytest.mark.parametrize("access", [os.O_WRONLY, os.O_RDONLY])
def test_o_trunc_with_any_access_empties_and_sets_the_times(run, content, access):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", content)
        await fs.setattr(ino, mtime_ns=1_600_000_000 * 10**9)
        t0 = time.time_ns()
        fh = await fs.open(ino, access | os.O_TRUNC)
        s = await fs.getattr(ino)
        assert s.size == 0 and s.mtime_ns >= t0 and s.ctime_ns >= t0
        await fs.flush(fh)
        await fs.release(fh)
        obj = store.objects["pve/f"]
        assert obj.data == b"" and int(float(obj.metadata["mtime"])) >= t0 // 10**9

    run(body)


def test_writes_at_random_offsets(run):
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"sparse", 0o644, os.O_RDWR | os.O_CREAT, 0, 0)
        expected = bytearray()
        for offset, data in [(1000, b"X" * 50), (0, b"head"), (200_000, b"tail"), (1020, b"mid"),
                             (3, b"over")]:
            await fs.write(fh, offset, data)
            if len(expected) < offset + len(data):
                expected.extend(b"\0" * (offset + len(data) - len(expected)))
            expected[offset:offset + len(data)] = data
        assert await fs.read(fh, 0, 1 << 20) == bytes(expected)
        assert await fs.read(fh, 999, 10) == bytes(expected[999:1009])
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/sparse"].data == bytes(expected)
        assert await read_all(fs, inode.ino) == bytes(expected)

    run(body)


def test_overwrite_middle_of_existing_object(run):
    data = bytes(range(256)) * 4096  # 1 MiB
    store_box = []

    async def body(fs, store):
        store.put_outside("pve/disk.raw", data)
        ino = await lookup_ino(fs, ROOT, b"disk.raw")
        fh = await fs.open(ino, os.O_RDWR)
        assert await fs.read(fh, 500_000, 10) == data[500_000:500_010]
        await fs.write(fh, 500_000, b"PATCH")
        expected = data[:500_000] + b"PATCH" + data[500_005:]
        assert await fs.read(fh, 499_998, 9) == expected[499_998:500_007]
        assert store.objects["pve/disk.raw"].data == data  # not committed yet
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/disk.raw"].data == expected
        store_box.append(store)

    run(body)

    async def again(fs, store):  # a fresh mount reads the committed bytes
        ino = await lookup_ino(fs, ROOT, b"disk.raw")
        got = await read_all(fs, ino)
        assert got[499_990:500_010] == (data[:500_000] + b"PATCH" + data[500_005:])[499_990:500_010]
        assert len(got) == len(data)

    run(again, store=store_box[0])


def test_append_to_existing_object(run):
    async def body(fs, store):
        store.put_outside("pve/log", b"line1\n")
        ino = await lookup_ino(fs, ROOT, b"log")
        fh = await fs.open(ino, os.O_WRONLY | os.O_APPEND)
        await fs.write(fh, 6, b"line2\n")
        await fs.release(fh)
        assert store.objects["pve/log"].data == b"line1\nline2\n"

    run(body)


def test_truncate_shrink_and_extend_without_handle(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"0123456789", mode=0o600)
        store.reset_counts()
        s = await fs.setattr(ino, size=4)
        assert s.size == 4
        assert store.objects["pve/f"].data == b"0123"  # committed at once
        assert store.calls["put"] == 1
        s = await fs.setattr(ino, size=8)
        assert s.size == 8
        assert store.objects["pve/f"].data == b"0123\0\0\0\0"
        assert (await fs.getattr(ino)).size == 8
        assert store.objects["pve/f"].metadata["mode"] == str(st.S_IFREG | 0o600)
        assert await read_all(fs, ino) == b"0123\0\0\0\0"
        await fs.setattr(ino, size=0)
        assert store.objects["pve/f"].data == b""

    run(body)


def test_truncate_with_open_handle_commits_on_close(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"0123456789")
        fh = await fs.open(ino, os.O_WRONLY)
        await fs.setattr(ino, size=3)
        assert store.objects["pve/f"].data == b"0123456789"
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/f"].data == b"012"

    run(body)


def test_chmod_chown_utimens_persist_by_copy_in_place(run):
    saved = []

    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"payload", mode=0o644)
        etag_before = store.objects["pve/f"].etag
        store.reset_counts()
        s = await fs.setattr(ino, mode=0o600)
        assert s.mode == st.S_IFREG | 0o600
        s = await fs.setattr(ino, uid=1000, gid=1001)
        assert (s.uid, s.gid) == (1000, 1001)
        s = await fs.setattr(ino, atime_ns=1_600_000_000_000_000_001, mtime_ns=1_500_000_000_500_000_000)
        assert s.mtime_ns == 1_500_000_000_500_000_000
        assert store.calls["copy"] == 3
        assert store.calls["put"] == 0 and store.calls["get"] == 0  # no data moved
        obj = store.objects["pve/f"]
        assert obj.data == b"payload" and obj.etag == etag_before
        assert obj.metadata["mode"] == str(st.S_IFREG | 0o600)
        assert obj.metadata["uid"] == "1000" and obj.metadata["gid"] == "1001"
        assert obj.metadata["mtime"] == "1500000000.500000000"
        assert obj.metadata["atime"] == "1600000000.000000001"
        saved.append(store)

    run(body)

    async def remount(fs, store):
        _, s = await fs.lookup(ROOT, b"f")
        s = await fs.getattr((await fs.lookup(ROOT, b"f"))[0].ino)
        assert s.mode == st.S_IFREG | 0o600 and (s.uid, s.gid) == (1000, 1001)
        assert s.mtime_ns == 1_500_000_000_500_000_000 and s.size == 7

    run(remount, store=saved[0])


def test_chmod_directory(run):
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        s = await fs.setattr(d.ino, mode=0o700)
        assert s.mode == st.S_IFDIR | 0o700
        assert store.objects["pve/d/"].metadata["mode"] == str(st.S_IFDIR | 0o700)
        with pytest.raises(FsError) as e:
            await fs.setattr(d.ino, size=0)
        assert e.value.errno == errno.EISDIR

    run(body)


def test_unlink_open_file_stays_readable_until_release(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"still here")
        fh = await fs.open(ino, os.O_RDONLY)
        await fs.unlink(ROOT, b"f")
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"f")
        assert "f" not in await names(fs, ROOT)
        assert (await fs.getattr(ino)).size == 10  # fstat on the open descriptor
        assert await fs.read(fh, 0, 100) == b"still here"
        assert await fs.read(fh, 6, 100) == b"here"
        assert "pve/f" in store.objects  # hidden, not yet deleted
        await fs.release(fh)
        assert "pve/f" not in store.objects
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"f")

    run(body)


def test_unlink_open_file_read_after_first_read(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"still here")
        fh = await fs.open(ino, os.O_RDONLY)
        assert await fs.read(fh, 0, 5) == b"still"
        await fs.unlink(ROOT, b"f")
        assert await fs.read(fh, 5, 100) == b" here"
        await fs.release(fh)
        assert "pve/f" not in store.objects

    run(body)


def test_unlink_open_file_then_recreate_same_name(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"old")
        fh = await fs.open(ino, os.O_RDONLY)
        await fs.unlink(ROOT, b"f")
        new_ino = await make_file(fs, ROOT, b"f", b"new!")
        assert new_ino != ino
        # POSIX says old data: the old object was copied aside before the new file took the key
        assert await fs.read(fh, 0, 100) == b"old"
        aside = [k for k in store.objects if k.startswith("pve/.s3pvefs-open/")]
        assert len(aside) == 1 and store.objects[aside[0]].data == b"old"
        await fs.release(fh)
        # the last close of the old file deletes its copy, never the new one
        assert keys(store) == ["pve/f"] and store.objects["pve/f"].data == b"new!"
        assert await read_all(fs, new_ino) == b"new!"
        assert fs.uploads.entries() == []

    run(body)


@pytest.mark.parametrize("reuse", ["create", "symlink", "rename"])
def test_last_close_of_an_unlinked_file_never_deletes_what_took_its_name(run, reuse):
    """close(2) returns before the kernel's RELEASE is handled, so a script may reuse the
    name while the last close of the unlinked file is still checking (HEAD) and deleting
    its hidden object: the new file written there meanwhile must stay (found through a
    mount: the new file's object vanished and its next write got ESTALE)."""
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"b", b"old" * 1000)
        fh = await fs.open(ino, os.O_RDONLY)
        await fs.unlink(ROOT, b"b")
        await make_file(fs, ROOT, b"other", b"moved in")

        async def reuse_the_name():
            if reuse == "create":
                await make_file(fs, ROOT, b"b", b"new!")
            elif reuse == "symlink":
                await fs.symlink(ROOT, b"b", b"target", 0, 0)
            else:
                await fs.rename(ROOT, b"other", ROOT, b"b", 0)

        store.stall.add("delete")  # the last close has its HEAD answer; its DELETE waits
        async with trio.open_nursery() as n:
            n.start_soon(fs.release, fh)
            await trio.sleep(0.05)
            n.start_soon(reuse_the_name)
            await trio.sleep(0.05)
            store.stall.discard("delete")
        want = {"create": b"new!", "symlink": b"target", "rename": b"moved in"}[reuse]
        assert store.objects["pve/b"].data == want

    run(body)


def test_unlink_uncommitted_file_uploads_nothing(run):
    async def body(fs, store):
        fh, _, _ = await fs.create(ROOT, b"tmp", 0o644, os.O_RDWR | os.O_CREAT, 0, 0)
        await fs.write(fh, 0, b"scratch")
        await fs.unlink(ROOT, b"tmp")
        assert await fs.read(fh, 0, 100) == b"scratch"
        await fs.flush(fh)
        await fs.release(fh)
        assert "pve/tmp" not in store.objects
        assert store.calls["put"] == 0

    run(body)


def test_unlink(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"f", b"x")
        await fs.unlink(ROOT, b"f")
        assert "pve/f" not in store.objects
        with pytest.raises(FsError) as e:
            await fs.unlink(ROOT, b"f")
        assert e.value.errno == errno.ENOENT
        await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        with pytest.raises(FsError) as e:
            await fs.unlink(ROOT, b"d")
        assert e.value.errno == errno.EISDIR

    run(body)


def test_bad_names(run):
    async def body(fs, store):
        with pytest.raises(FsError) as e:
            await fs.create(ROOT, b"x" * 256, 0o644, WR_CREAT, 0, 0)
        assert e.value.errno == errno.ENAMETOOLONG
        with pytest.raises(FsError) as e:
            await fs.create(ROOT, b"\xff", 0o644, WR_CREAT, 0, 0)
        assert e.value.errno == errno.EINVAL
        # key longer than 1024 bytes through deep directories, refused before any request
        parent = ROOT
        for i in range(5):
            parent = (await fs.mkdir(parent, bytes([97 + i]) * 200, 0o755, 0, 0))[0].ino
        store.reset_counts()
        with pytest.raises(FsError) as e:
            await fs.lookup(parent, b"y" * 100)
        assert e.value.errno == errno.ENAMETOOLONG
        assert sum(store.calls.values()) == 0

    run(body)


def test_write_on_read_only_handle(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"f", b"x")
        fh = await fs.open(ino, os.O_RDONLY)
        with pytest.raises(FsError) as e:
            await fs.write(fh, 0, b"y")
        assert e.value.errno == errno.EBADF
        await fs.release(fh)
        with pytest.raises(FsError) as e:
            await fs.read(fh, 0, 1)
        assert e.value.errno == errno.EBADF

    run(body)


def test_open_directory_is_eisdir(run):
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        with pytest.raises(FsError) as e:
            await fs.open(d.ino, os.O_RDONLY)
        assert e.value.errno == errno.EISDIR

    run(body)


@pytest.mark.parametrize("read_first", [False, True])
def test_reading_a_file_replaced_by_rename_never_returns_the_new_bytes(run, read_first):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"target", b"OLD-DATA")
        await make_file(fs, ROOT, b"src", b"new-data")
        fh = await fs.open(ino, os.O_RDONLY)
        if read_first:
            assert await fs.read(fh, 0, 3) == b"OLD"
        await fs.rename(ROOT, b"src", ROOT, b"target")
        try:
            got = await fs.read(fh, 0, 100)
        except FsError as e:
            assert e.errno in (errno.ESTALE, errno.ENOENT, errno.EIO)
        else:
            assert got == b"OLD-DATA"
        await fs.release(fh)
        assert store.objects["pve/target"].data == b"new-data"
        assert "pve/src" not in store.objects

    run(body)
