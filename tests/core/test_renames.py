"""Renames of files and directories: server-side copies, replaced targets, files not committed yet."""

from __future__ import annotations

import errno
import os
import stat as st

import pytest

from s3pvefs.errors import NotFound, StoreError
from s3pvefs.fs.renames import RENAME_EXCHANGE, RENAME_NOREPLACE
from tests.core.helpers import ROOT, expect_errno, keys, make_file, names, read_all


def test_rename_file_same_dir(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"a.tmp", b"payload", mode=0o600, uid=7)
        meta = dict(store.objects["pve/a.tmp"].metadata)
        await fs.rename(ROOT, b"a.tmp", ROOT, b"a.vma")
        assert keys(store) == ["pve/a.vma"]
        assert store.objects["pve/a.vma"].data == b"payload"
        assert store.objects["pve/a.vma"].metadata == meta
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"a.tmp")
        inode, s = await fs.lookup(ROOT, b"a.vma")
        assert inode.ino == ino and s.size == 7 and s.mode == st.S_IFREG | 0o600 and s.uid == 7
        assert await read_all(fs, ino) == b"payload"
        assert set(await names(fs, ROOT)) == {"a.vma"}

    run(body)


def test_rename_file_cross_dir_replacing_target(run):
    async def body(fs, store):
        d1, _ = await fs.mkdir(ROOT, b"d1", 0o755, 0, 0)
        d2, _ = await fs.mkdir(ROOT, b"d2", 0o755, 0, 0)
        src = await make_file(fs, d1.ino, b"a", b"new contents")
        old = await make_file(fs, d2.ino, b"b", b"old")
        await fs.rename(d1.ino, b"a", d2.ino, b"b")
        assert keys(store) == ["pve/d1/", "pve/d2/", "pve/d2/b"]
        assert store.objects["pve/d2/b"].data == b"new contents"
        inode, s = await fs.lookup(d2.ino, b"b")
        assert inode.ino == src and inode.ino != old and s.size == 12
        assert set(await names(fs, d1.ino)) == set()
        assert {n: s.size for n, s in (await names(fs, d2.ino)).items()} == {"b": 12}

    run(body)


def test_rename_noreplace_and_exchange(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"a", b"1")
        await make_file(fs, ROOT, b"b", b"2")
        await expect_errno(errno.EEXIST, fs.rename(ROOT, b"a", ROOT, b"b", RENAME_NOREPLACE))
        await expect_errno(errno.ENOTSUP, fs.rename(ROOT, b"a", ROOT, b"b", RENAME_EXCHANGE))
        assert store.objects["pve/a"].data == b"1" and store.objects["pve/b"].data == b"2"
        await fs.rename(ROOT, b"a", ROOT, b"c", RENAME_NOREPLACE)
        assert keys(store) == ["pve/b", "pve/c"]
        await expect_errno(errno.ENOENT, fs.rename(ROOT, b"a", ROOT, b"d"))

    run(body)


def test_rename_onto_itself_is_a_no_op(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"a", b"1")
        store.reset_counts()
        await fs.rename(ROOT, b"a", ROOT, b"a")
        assert store.objects["pve/a"].data == b"1"
        assert store.calls["copy"] == store.calls["delete"] == 0

    run(body)


def test_rename_uncommitted_file(run):
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"x.tmp", 0o644, os.O_WRONLY | os.O_CREAT, 0, 0)
        await fs.write(fh, 0, b"abc")
        await fs.rename(ROOT, b"x.tmp", ROOT, b"x")
        await fs.flush(fh)
        await fs.release(fh)
        assert keys(store) == ["pve/x"]
        assert store.objects["pve/x"].data == b"abc"

    run(body)


def test_rename_open_written_file_then_flush(run):
    async def body(fs, store):
        ino = await make_file(fs, ROOT, b"a", b"v1")
        fh = await fs.open(ino, os.O_WRONLY)
        await fs.write(fh, 0, b"v2")
        await fs.rename(ROOT, b"a", ROOT, b"b")
        await fs.release(fh)
        assert keys(store) == ["pve/b"]
        assert store.objects["pve/b"].data == b"v2"

    run(body)


def test_rename_file_and_directory_clash(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"f", b"x")
        await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        await expect_errno(errno.EISDIR, fs.rename(ROOT, b"f", ROOT, b"d"))
        await expect_errno(errno.ENOTDIR, fs.rename(ROOT, b"d", ROOT, b"f"))
        assert keys(store) == ["pve/d/", "pve/f"]

    run(body)


def test_rename_directory_with_children(run):
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o700, 0, 0)
        sub, _ = await fs.mkdir(d.ino, b"sub", 0o755, 0, 0)
        x = await make_file(fs, d.ino, b"x", b"xx")
        y = await make_file(fs, sub.ino, b"y", b"yyy", mode=0o600)
        await fs.rename(ROOT, b"d", ROOT, b"e")
        assert keys(store) == ["pve/e/", "pve/e/sub/", "pve/e/sub/y", "pve/e/x"]
        assert store.objects["pve/e/sub/y"].data == b"yyy"
        assert store.objects["pve/e/sub/y"].metadata["mode"] == str(st.S_IFREG | 0o600)
        assert store.objects["pve/e/"].metadata["mode"] == str(st.S_IFDIR | 0o700)
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"d")
        e, _ = await fs.lookup(ROOT, b"e")
        assert e is d
        assert set(await names(fs, e.ino)) == {"sub", "x"}
        # inodes the kernel already holds follow the move
        assert await read_all(fs, x) == b"xx"
        assert await read_all(fs, y) == b"yyy"
        inode, s = await fs.lookup(sub.ino, b"y")
        assert inode.ino == y and s.size == 3

    run(body)


def test_rename_implicit_directory_keeps_it_visible(run):
    async def body(fs, store):
        store.put_outside("pve/imp/f", b"1")
        await fs.lookup(ROOT, b"imp")
        await fs.rename(ROOT, b"imp", ROOT, b"moved")
        assert "pve/moved/f" in store.objects and "pve/imp/f" not in store.objects
        assert "pve/moved/" in store.objects  # marker made for the implicit directory
        _, s = await fs.lookup(ROOT, b"moved")
        assert s.kind == "dir"

    run(body)


def test_rename_directory_over_directory(run):
    async def body(fs, store):
        a, _ = await fs.mkdir(ROOT, b"a", 0o755, 0, 0)
        await make_file(fs, a.ino, b"f", b"1")
        b, _ = await fs.mkdir(ROOT, b"b", 0o755, 0, 0)
        c, _ = await fs.mkdir(ROOT, b"c", 0o755, 0, 0)
        await make_file(fs, c.ino, b"g", b"2")
        await expect_errno(errno.ENOTEMPTY, fs.rename(ROOT, b"a", ROOT, b"c"))
        await fs.rename(ROOT, b"a", ROOT, b"b")  # empty target is replaced
        assert keys(store) == ["pve/b/", "pve/b/f", "pve/c/", "pve/c/g"]
        assert set(await names(fs, ROOT)) == {"b", "c"}

    run(body)


def test_rename_directory_into_itself(run):
    async def body(fs, store):
        a, _ = await fs.mkdir(ROOT, b"a", 0o755, 0, 0)
        sub, _ = await fs.mkdir(a.ino, b"sub", 0o755, 0, 0)
        await expect_errno(errno.EINVAL, fs.rename(ROOT, b"a", sub.ino, b"inner"))
        await expect_errno(errno.EINVAL, fs.rename(ROOT, b"a", a.ino, b"self"))
        assert keys(store) == ["pve/a/", "pve/a/sub/"]

    run(body)


def test_renames_where_the_server_cannot_copyobject(run):
    """Ceph RGW before 17 answers NotImplemented to CopyObject of any encrypted object:
    the same copy goes as UploadPartCopy parts (still server-side); an empty object (a
    directory marker) is written anew with its metadata and content type."""
    from s3pvefs.errors import StoreError
    from s3pvefs.namespace.keys import DIR_CONTENT_TYPE

    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o700, 0, 0)
        await make_file(fs, d.ino, b"a.tmp", b"payload", mode=0o600, uid=7)
        meta = dict(store.objects["pve/d/a.tmp"].metadata)
        store.fail["copy"] = StoreError("copy_object: NotImplemented (501)", code="NotImplemented")
        await fs.rename(d.ino, b"a.tmp", d.ino, b"a.vma")
        assert store.objects["pve/d/a.vma"].data == b"payload"
        assert store.objects["pve/d/a.vma"].metadata == meta and store.calls["upload_part_copy"] == 1
        await fs.rename(ROOT, b"d", ROOT, b"e")
        assert keys(store) == ["pve/e/", "pve/e/a.vma"]
        assert store.objects["pve/e/"].metadata["mode"] == str(st.S_IFDIR | 0o700)
        assert store.objects["pve/e/"].content_type == DIR_CONTENT_TYPE
        assert store.sent == len(b"payload")  # the file's first upload only: nothing re-sent

    run(body)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_rename_keeps_the_mtime_of_an_object_without_an_mtime_header(run, what):
    """A multipart upload of a streamed file completes with no time headers (its
    LastModified is its mtime), as do other tools' objects: a rename's copy gets an mtime
    header with that time, and keeps the object's Content-Type, instead of showing the
    time of the copy."""
    old = 1_600_000_000.25

    async def body(fs, store):
        src = "pve/d/big.vma" if what == "directory" else "pve/big.vma"
        store.put_outside(src, b"payload", {"mode": str(st.S_IFREG | 0o640)})
        store.objects[src].last_modified, store.objects[src].content_type = old, "application/x-iso9660-image"
        if what == "directory":
            d, _ = await fs.lookup(ROOT, b"d")
            await fs.rename(ROOT, b"d", ROOT, b"e")
            dst, parent = "pve/e/big.vma", (await fs.lookup(ROOT, b"e"))[0].ino
        else:
            await fs.rename(ROOT, b"big.vma", ROOT, b"renamed.vma")
            dst, parent = "pve/renamed.vma", ROOT
        copied = store.objects[dst]
        assert float(copied.metadata["mtime"]) == old and copied.metadata["mode"] == str(st.S_IFREG | 0o640)
        assert copied.content_type == "application/x-iso9660-image" and copied.data == b"payload"
        fs.cache.stats.clear()
        fs.cache.listings.clear()
        _, s = await fs.lookup(parent, dst.rpartition("/")[2].encode())
        assert s.mtime_ns == 1_600_000_000_250_000_000 and s.ctime_ns > s.mtime_ns

    run(body)


def test_a_file_renamed_over_while_open_keeps_its_bytes_for_its_readers(run):
    """As on a local disk (rsync replacing an ISO a VM reads): the handle reads the old
    bytes to the end, from a copy kept aside under the prefix, hidden from listings and
    lookups, deleted at the last close -- while the name gives the new file."""
    old, new = bytes(range(256)) * 4096, b"new bytes"

    async def body(fs, store):
        await make_file(fs, ROOT, b"a.iso", old)
        await make_file(fs, ROOT, b"b.tmp", new)
        ino = (await fs.lookup(ROOT, b"a.iso"))[0].ino
        first, second = await fs.open(ino, os.O_RDONLY), await fs.open(ino, os.O_RDONLY)
        assert await fs.read(first, 0, 1000) == old[:1000]  # reading before the rename
        await fs.rename(ROOT, b"b.tmp", ROOT, b"a.iso")
        aside = [k for k in store.objects if k.startswith("pve/.s3pvefs-open/")]
        assert len(aside) == 1 and store.objects[aside[0]].data == old
        assert await fs.read(first, 1000, len(old)) == old[1000:]
        assert await fs.read(second, 0, len(old)) == old  # a handle that had read nothing yet
        assert (await fs.fstat(ino)).size == len(old)
        assert sorted(await names(fs, ROOT)) == ["a.iso"]
        await expect_errno(errno.ENOENT, fs.lookup(ROOT, b".s3pvefs-open"))
        await expect_errno(errno.EINVAL, fs.mkdir(ROOT, b".s3pvefs-open", 0o755, 0, 0))
        assert await read_all(fs, (await fs.lookup(ROOT, b"a.iso"))[0].ino) == new
        await fs.release(first)
        assert aside[0] in store.objects  # the other handle still reads it
        await fs.release(second)
        assert keys(store) == ["pve/a.iso"]
        assert fs.uploads.entries() == []

    run(body)


def test_a_file_renamed_over_whose_copy_fails_gets_estale_as_before(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"a", b"old")
        await make_file(fs, ROOT, b"b", b"new")
        fh = await fs.open((await fs.lookup(ROOT, b"a"))[0].ino, os.O_RDONLY)
        calls = []
        real_copy = store.copy

        async def copy_once_then_fail(src, dst, metadata, content_type=None):
            calls.append(dst)
            if len(calls) == 1:  # the copy aside fails; the rename's own goes through
                raise StoreError("copy refused", code="InternalError")
            return await real_copy(src, dst, metadata, content_type)
        store.copy = copy_once_then_fail
        await fs.rename(ROOT, b"b", ROOT, b"a")
        assert calls[0].startswith("pve/.s3pvefs-open/")
        await expect_errno(errno.ESTALE, fs.read(fh, 0, 10))
        await fs.release(fh)
        assert keys(store) == ["pve/a"] and store.objects["pve/a"].data == b"new"
        assert fs.uploads.entries() == []

    run(body)


def test_the_next_mount_deletes_the_copies_a_killed_daemon_kept_aside(run):
    async def body(fs, store):
        key = fs.keys.aside_key("0123abcd")
        fs.uploads.set_aside(key)  # recorded as the copy is made; the daemon then died
        store.put_outside(key, b"old bytes")
        await fs.recover()
        assert key not in store.objects and fs.uploads.entries() == []

    run(body)


def test_a_reader_goes_on_from_a_copy_aside_with_another_etag(run):
    """S3 gives a CopyObject of a multipart object a new ETag: a handle reading with the
    old one (If-Match) is told the object changed, and goes on from the copy kept aside."""
    old = bytes(range(256)) * (160 << 10)  # 40 MiB: more than the read-ahead holds

    async def body(fs, store):
        await make_file(fs, ROOT, b"a", old)
        await make_file(fs, ROOT, b"b", b"new")
        fs.cache.invalidate("a")  # its ETag from a HEAD: the reads carry it (If-Match)
        fh = await fs.open((await fs.lookup(ROOT, b"a"))[0].ino, os.O_RDONLY)
        assert await fs.read(fh, 0, 100) == old[:100]
        real_copy = store.copy

        async def copy_with_a_new_etag(src, dst, metadata, content_type=None):
            await real_copy(src, dst, metadata, content_type)
            store.objects[dst].etag = "0123456789abcdef0123456789abcdef-2"
        store.copy = copy_with_a_new_etag
        await fs.rename(ROOT, b"b", ROOT, b"a")
        assert await fs.read(fh, 100, len(old)) == old[100:]
        await fs.release(fh)
        assert keys(store) == ["pve/a"]

    run(body)


def test_no_copy_is_kept_of_a_version_its_readers_did_not_read(run):
    """Another writer replaced the object after the handle began reading: keeping that
    version would give the reader new bytes after old ones; it gets ESTALE, as before."""
    async def body(fs, store):
        await make_file(fs, ROOT, b"a", b"old bytes")
        await make_file(fs, ROOT, b"b", b"new")
        fs.cache.invalidate("a")  # its ETag from a HEAD
        fh = await fs.open((await fs.lookup(ROOT, b"a"))[0].ino, os.O_RDONLY)
        assert await fs.read(fh, 0, 3) == b"old"
        store.put_outside("pve/a", b"another node's bytes")
        await fs.rename(ROOT, b"b", ROOT, b"a")
        await expect_errno(errno.ESTALE, fs.read(fh, 3, 100))
        await fs.release(fh)
        assert keys(store) == ["pve/a"] and fs.uploads.entries() == []

    run(body)


def test_a_file_still_being_written_keeps_its_bytes_when_renamed_over(run):
    """Its bytes all still in memory (no upload running): they move to its cache, and its
    handle goes on writing and reading the old file; nothing reaches the new one."""
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"a", 0o644, os.O_RDWR | os.O_CREAT, 0, 0)
        await fs.write(fh, 0, b"first ")
        await make_file(fs, ROOT, b"b", b"new")
        await fs.rename(ROOT, b"b", ROOT, b"a")
        assert await fs.write(fh, 6, b"second") == 6
        assert await fs.read(fh, 0, 100) == b"first second"
        await fs.flush(fh)
        await fs.release(fh)
        assert keys(store) == ["pve/a"] and store.objects["pve/a"].data == b"new"
        assert fs.uploads.entries() == []

    run(body)
