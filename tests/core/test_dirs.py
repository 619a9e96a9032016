"""Directories: mkdir/rmdir, readdir, what a directory is."""

from __future__ import annotations

import errno
import os
import stat as st
import time

import pytest

from s3pvefs.errors import NotFound
from s3pvefs.namespace.keys import DIR_CONTENT_TYPE
from s3pvefs.namespace.stat import format_time
from tests.core.helpers import ROOT, expect_errno, keys, make_file, names


def test_mkdir_makes_marker(run):
    async def body(fs, store):
        d, s = await fs.mkdir(ROOT, b"dump", 0o750, 1000, 1001)
        assert s.kind == "dir" and s.mode == st.S_IFDIR | 0o750
        marker = store.objects["pve/dump/"]
        assert marker.data == b""
        assert marker.content_type == "application/x-directory"
        assert marker.metadata["mode"] == str(st.S_IFDIR | 0o750)
        assert marker.metadata["uid"] == "1000"
        assert keys(store) == ["pve/dump/"]
        inode, s2 = await fs.lookup(ROOT, b"dump")
        assert inode is d and s2.kind == "dir"
        await expect_errno(errno.EEXIST, fs.mkdir(ROOT, b"dump", 0o755, 0, 0))
        sub, _ = await fs.mkdir(d.ino, b"sub", 0o755, 0, 0)
        assert "pve/dump/sub/" in store.objects
        assert fs.path(sub) == "dump/sub"

    run(body)


def test_mkdir_over_file_is_eexist(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"f", b"x")
        await expect_errno(errno.EEXIST, fs.mkdir(ROOT, b"f", 0o755, 0, 0))
        assert "pve/f/" not in store.objects

    run(body)


def test_rmdir(run):
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        await make_file(fs, d.ino, b"f", b"x")
        await expect_errno(errno.ENOTEMPTY, fs.rmdir(ROOT, b"d"))
        assert "pve/d/" in store.objects
        await fs.unlink(d.ino, b"f")
        await fs.rmdir(ROOT, b"d")
        assert keys(store) == []
        with pytest.raises(NotFound):
            await fs.lookup(ROOT, b"d")
        assert "d" not in await names(fs, ROOT)
        await expect_errno(errno.ENOENT, fs.rmdir(ROOT, b"d"))
        await make_file(fs, ROOT, b"file", b"")
        await expect_errno(errno.ENOTDIR, fs.rmdir(ROOT, b"file"))

    run(body)


def test_rmdir_with_subdirectory_or_pending_child(run):
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        await fs.mkdir(d.ino, b"sub", 0o755, 0, 0)
        await expect_errno(errno.ENOTEMPTY, fs.rmdir(ROOT, b"d"))
        await fs.rmdir(d.ino, b"sub")
        fh, _, _ = await fs.create(d.ino, b"pending", 0o644, os.O_WRONLY | os.O_CREAT, 0, 0)
        await expect_errno(errno.ENOTEMPTY, fs.rmdir(ROOT, b"d"))  # not in S3 yet, but it exists
        await fs.release(fh)
        await expect_errno(errno.ENOTEMPTY, fs.rmdir(ROOT, b"d"))

    run(body)


def test_rmdir_of_implicit_directory(run):
    async def body(fs, store):
        store.put_outside("pve/a/b/c", b"x")
        a, s = await fs.lookup(ROOT, b"a")
        assert s.kind == "dir"
        await expect_errno(errno.ENOTEMPTY, fs.rmdir(ROOT, b"a"))
        b, _ = await fs.lookup(a.ino, b"b")
        await fs.unlink(b.ino, b"c")
        await fs.rmdir(a.ino, b"b")
        await fs.rmdir(ROOT, b"a")
        assert keys(store) == []

    run(body)


def test_readdir_offsets_and_kinds(run):
    async def body(fs, store):
        for i in range(5):
            await make_file(fs, ROOT, b"f%d" % i, b"x" * i)
        await fs.mkdir(ROOT, b"dir", 0o755, 0, 0)
        await fs.symlink(ROOT, b"ln", b"f1", 0, 0)
        dh = await fs.opendir(ROOT)
        first = list(fs.readdir(dh, 0))
        assert [n for _, n, _, _ in first] == ["dir", "f0", "f1", "f2", "f3", "f4", "ln"]
        assert [off for off, _, _, _ in first] == list(range(1, 8))
        kinds = {n: s.kind for _, n, _, s in first}
        assert kinds["dir"] == "dir" and kinds["f3"] == "file" and kinds["ln"] == "symlink"
        assert {n: s.size for _, n, _, s in first if n.startswith("f")} == {f"f{i}": i for i in range(5)}
        rest = list(fs.readdir(dh, 4))
        assert [n for _, n, _, _ in rest] == ["f3", "f4", "ln"]
        assert list(fs.readdir(dh, 7)) == []
        fs.releasedir(dh)
        await expect_errno(errno.ENOTDIR, fs.opendir((await fs.lookup(ROOT, b"f0"))[0].ino))

    run(body)


def test_readdir_snapshot_is_stable(run):
    async def body(fs, store):
        await make_file(fs, ROOT, b"a", b"")
        dh = await fs.opendir(ROOT)
        await make_file(fs, ROOT, b"b", b"")
        assert [n for _, n, _, _ in fs.readdir(dh, 0)] == ["a"]
        fs.releasedir(dh)
        assert set(await names(fs, ROOT)) == {"a", "b"}  # the mount sees its own create

    run(body)


def test_directory_shadows_file_of_same_name(run):
    async def body(fs, store):
        store.put_outside("pve/a", b"i am a file")
        store.put_outside("pve/a/child", b"c")
        inode, s = await fs.lookup(ROOT, b"a")
        assert s.kind == "dir" and inode.kind == "dir"
        listed = await names(fs, ROOT)
        assert list(listed) == ["a"] and listed["a"].kind == "dir"
        assert set(await names(fs, inode.ino)) == {"child"}

    run(body)


def test_directory_shadows_file_in_listing_first(run):
    async def body(fs, store):
        store.put_outside("pve/a", b"i am a file")
        store.put_outside("pve/a/", b"")  # marker only
        listed = await names(fs, ROOT)
        assert list(listed) == ["a"] and listed["a"].kind == "dir"
        _, s = await fs.lookup(ROOT, b"a")  # answered from the listing
        assert s.kind == "dir"

    run(body)


def test_legacy_folder_marker_is_a_directory(run):
    async def body(fs, store):
        store.put_outside("pve/old_$folder$", b"")
        listed = await names(fs, ROOT)
        assert set(listed) == {"old"} and listed["old"].kind == "dir"

    run(body)


def test_unlistable_names_are_skipped(run):
    async def body(fs, store):
        store.put_outside("pve/ok", b"1")
        store.put_outside("pve/" + "n" * 300, b"1")  # longer than NAME_MAX
        store.put_outside("pve/./x", b"1")
        assert set(await names(fs, ROOT)) == {"ok"}

    run(body)


def test_rmdir_while_the_last_close_of_an_unlinked_file_deletes_it(run):
    """The release of an unlinked open file deletes its object (and stops hiding it)
    while rmdir's LIST is under way: the LIST's answer, taken before the delete, must
    not make the directory look full (issue 15.6, seen under load)."""
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        ino = await make_file(fs, d.ino, b"f", b"x" * 1000)
        fh = await fs.open(ino, os.O_RDONLY)
        await fs.read(fh, 0, 10)
        await fs.unlink(d.ino, b"f")
        assert "pve/d/f" in store.objects  # hidden, still there for the open handle
        real = store.list_page

        async def list_page(prefix, *args, **kwargs):
            page = await real(prefix, *args, **kwargs)
            if prefix == "pve/d/":
                await fs.release(fh)  # the last close arrives while the LIST answer is on its way
            return page
        store.list_page = list_page
        await fs.rmdir(ROOT, b"d")
        assert keys(store) == []

    run(body)


PAST = 1_600_000_000 * 10**9


def test_a_directory_read_again_shows_the_times_its_marker_does_not_hold_yet(run):
    from tests.core.conftest import FakeClock
    clock = FakeClock()

    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        await fs.setattr(d.ino, mtime_ns=PAST)
        await make_file(fs, d.ino, b"f", b"x")
        changed = (await fs.getattr(d.ino)).mtime_ns
        assert changed > PAST
        assert store.objects["pve/d/"].metadata["mtime"] == str(PAST // 10**9)  # not yet written
        clock.advance(3600)  # the cached attributes expire: read from the marker again
        fs.cache.stats.clear()
        s = await fs.getattr(d.ino)
        assert s.mtime_ns == changed and s.ctime_ns >= changed
        await fs.dir_times.flush()
        assert fs.cache.pending_dir_times == {}

    run(body, clock=clock)


def test_an_explicit_directory_mtime_is_not_undone_by_its_pending_times(run):
    """tar -x and rsync -a set a directory's mtime right after filling it."""
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        await make_file(fs, d.ino, b"f", b"x")
        await fs.setattr(d.ino, mtime_ns=PAST)
        await fs.dir_times.flush()  # what the pending rewrite would have written
        assert store.objects["pve/d/"].metadata["mtime"] == str(PAST // 10**9)
        fs.cache.stats.clear()
        assert (await fs.getattr(d.ino)).mtime_ns == PAST
        await make_file(fs, d.ino, b"g", b"x")  # a later change sets it again
        await fs.dir_times.flush()
        assert int(float(store.objects["pve/d/"].metadata["mtime"])) > PAST // 10**9

    run(body)


def test_a_pending_directory_time_does_not_undo_what_another_node_wrote_after_it(run):
    """Node A creates a name in d; node B sets d's mtime before A's marker rewrite is due
    (each node orders only its own writes). A's older change must leave B's marker as it is."""
    async def body(fs, store):
        d, _ = await fs.mkdir(ROOT, b"d", 0o755, 0, 0)
        await make_file(fs, d.ino, b"f", b"x")  # A's rewrite of pve/d/ is now pending
        later = time.time_ns() + 10**9
        theirs = {**store.objects["pve/d/"].metadata, "mtime": str(PAST // 10**9), "ctime": format_time(later)}
        await store.put("pve/d/", b"", theirs, DIR_CONTENT_TYPE)  # node B's utime
        await fs.dir_times.flush()
        assert store.objects["pve/d/"].metadata["mtime"] == str(PAST // 10**9)
        await make_file(fs, d.ino, b"g", b"x")  # a change after B's: written
        fs.cache.pending_dir_times["d"] = later + 1  # as if made after B's time
        await fs.dir_times.flush()
        assert store.objects["pve/d/"].metadata["mtime"] == format_time(later + 1)

    run(body)
