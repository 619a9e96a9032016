"""Files changed in place: the sparse write-back cache through the Filesystem.

A commit sends windows holding written bytes and copies the rest server-side; the
cache stays within its disk budget (clean data dropped, dirty data written back);
what a killed daemon left in the cache is committed, or kept aside and named, at
the next mount (write/recovery.py)."""

from __future__ import annotations

import logging
import os
import random

import pytest
import trio

from s3pvefs.config import CacheConfig, Config, MiB, StoreConfig, WriteConfig
from s3pvefs.errors import StoreError
from s3pvefs.fs.filesystem import Filesystem
from s3pvefs.store.memory import MemoryStore
from tests.core.helpers import ROOT, read_all

SIZE = 256 * MiB


def big_object(store: MemoryStore, key: str = "pve/disk.raw", size: int = SIZE) -> bytearray:
    data = bytearray(os.urandom(size))
    store.put_outside(key, bytes(data))
    return data


async def open_rw(fs, name: bytes):
    inode, _ = await fs.lookup(ROOT, name)
    return inode, await fs.open(inode.ino, os.O_RDWR)


def test_rewriting_1_mib_of_a_big_object_sends_about_one_part(run):
    store = MemoryStore()
    data = big_object(store)

    async def body(fs, store):
        inode, fh = await open_rw(fs, b"disk.raw")
        store.reset_counts()
        patch = os.urandom(MiB)
        at = 100 * MiB + 12345  # not aligned to anything
        for off in range(0, MiB, 128 << 10):  # as the kernel delivers it
            await fs.write(fh, at + off, patch[off:off + (128 << 10)])
        data[at:at + MiB] = patch
        # the written range, and the fill_size (1 MiB) window around each cut edge
        assert fs.space.used <= 3 * MiB, "more than the written range and its edges' windows held locally"
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/disk.raw"].data == bytes(data)
        print(f"\n1 MiB rewritten in a 256 MiB object: sent {store.sent / MiB:.1f} MiB, "
              f"copied {store.copied / MiB:.1f} MiB, read {sum(e - s for _, s, e in store.ranges) / MiB:.1f} MiB, "
              f"requests {dict(store.calls)}")
        assert store.sent <= 16 * MiB  # one or two 8 MiB windows, never the object
        assert store.copied >= SIZE - 16 * MiB
        assert store.calls["upload_part"] <= 2
        assert sum(e - s for _, s, e in store.ranges) <= 16 * MiB
        assert os.listdir(fs.writeback_dir) == []  # closed: the cache files are gone

    run(body, store=store)


def test_random_writes_and_reads_match_a_model(run):
    store = MemoryStore()
    data = big_object(store, size=40 * MiB)
    rng = random.Random(5)

    async def body(fs, store):
        inode, fh = await open_rw(fs, b"disk.raw")
        for _ in range(300):
            off, n = rng.randrange(0, 44 * MiB), rng.choice([512, 4096, 65536, 131072, 3000])
            if rng.random() < 0.6:
                chunk = rng.randbytes(n)
                await fs.write(fh, off, chunk)
                if off > len(data):
                    data.extend(bytes(off - len(data)))
                data[off:off + n] = chunk
            else:
                assert await fs.read(fh, off, n) == bytes(data[off:off + n])
            if rng.random() < 0.02:
                await fs.fsync(fh)  # a commit in the middle: the cache stays consistent
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/disk.raw"].data == bytes(data)
        assert await read_all(fs, inode.ino) == bytes(data)

    run(body, store=store, cache=CacheConfig(sync_interval=0),
        write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=5 * MiB))


def test_an_extended_sparse_file_holds_no_disk_and_commits_zeros(run):
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"new.raw", 0o600, os.O_RDWR | os.O_CREAT, 0, 0)
        await fs.setattr(inode.ino, size=96 * MiB)  # qemu-img create -f raw
        await fs.write(fh, 50 * MiB, b"boot")
        assert fs.space.used <= 8192
        assert os.stat(fs.files[inode.ino].cache.data_path).st_blocks * 512 <= 64 << 10
        await fs.flush(fh)
        await fs.release(fh)
        obj = store.objects["pve/new.raw"].data
        assert len(obj) == 96 * MiB and obj[50 * MiB:50 * MiB + 4] == b"boot"
        assert obj.count(0) == 96 * MiB - 4
        # the holes were copied from the object of zeros, not sent: the window with
        # "boot" and the 8 MiB seed of zeros
        assert store.sent <= 16 * MiB, store.sent

    run(body, write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=8 * MiB))


def test_growing_a_file_copies_its_zeros_server_side(run):
    """truncate -s of a small file (no handle): one window sent, the rest UploadPartCopy
    of the mount's object of zeros, which is written once and reused."""
    async def body(fs, store):
        await store.put("pve/small", b"hello\n", {"mode": "33188"})
        inode, _ = await fs.lookup(ROOT, b"small")
        store.reset_counts()
        sent = store.sent
        await fs.setattr(inode.ino, size=200 * MiB)
        obj = store.objects["pve/small"].data
        assert len(obj) == 200 * MiB and obj[:6] == b"hello\n" and obj.count(0) == 200 * MiB - 6
        first = dict(store.calls)
        assert store.sent - sent <= 16 * MiB and first["put"] == 1, (store.sent, first)  # the seed, once
        await fs.setattr(inode.ino, size=400 * MiB)  # grows again: the zeros are there
        obj = store.objects["pve/small"].data
        assert len(obj) == 400 * MiB and obj[:6] == b"hello\n" and obj.count(0) == 400 * MiB - 6
        assert store.calls["put"] == 1, dict(store.calls)
        names = [name for _, name, _, _ in fs.readdir(await fs.opendir(ROOT), 0)]
        assert names == ["small"], names  # .s3pvefs-zeros is never a name
        assert "pve/.s3pvefs-zeros" in store.objects

    run(body, write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=8 * MiB))


def test_the_disk_budget_drops_clean_data_then_writes_back_dirty_data(run):
    store = MemoryStore()
    data = big_object(store, size=64 * MiB)

    async def body(fs, store):
        inode, fh = await open_rw(fs, b"disk.raw")
        await fs.write(fh, 0, b"x")  # the file now has a cache: reads of it fill it
        data[0:1] = b"x"
        peak = 0
        for off in range(0, 64 * MiB, 4 * MiB):  # clean data comes and goes
            assert await fs.read(fh, off + 100, 4096) == bytes(data[off + 100:off + 4196])
            peak = max(peak, fs.space.used)
        assert fs.space.evicted > 0 and peak <= 9 * MiB
        for off in range(0, 48 * MiB, 128 << 10):  # 48 MiB written: 6x the budget
            chunk = os.urandom(128 << 10)
            await fs.write(fh, off + 7, chunk)
            data[off + 7:off + 7 + len(chunk)] = chunk
            peak = max(peak, fs.space.used)
        print(f"\nbudget 8 MiB: peak {peak / MiB:.1f} MiB, write-backs {fs.space.write_backs}, "
              f"evicted {fs.space.evicted / MiB:.1f} MiB")
        assert fs.space.write_backs >= 4
        assert peak <= 8 * MiB + (128 << 10) + 8192
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/disk.raw"].data == bytes(data)

    run(body, store=store, cache=CacheConfig(disk_budget=8 * MiB, fill_size=1 * MiB),
        write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=5 * MiB))


# ---------------------------------------------------------------- crash recovery
def mount_twice(tmp_path, store, first, second, **write):
    """Run `first(fs)` in a Filesystem and stop it without closing anything (the
    daemon killed), then `second(fs)` in a new one on the same cache directory."""
    cfg = Config(store=StoreConfig(bucket="bucket", prefix="pve"),
                 cache=CacheConfig(cache_dir=str(tmp_path / "cache")),
                 write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=5 * MiB, **write))

    async def main():
        for step in (first, second):
            async with trio.open_nursery() as nursery:
                await step(Filesystem(store, cfg, nursery))
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_cached_writes_of_a_killed_daemon_are_committed_at_the_next_mount(tmp_path, caplog):
    store = MemoryStore()
    data = big_object(store, size=32 * MiB)
    created = bytearray(20 * MiB)

    async def killed(fs):
        inode, fh = await open_rw(fs, b"disk.raw")
        for off in (3, 17 * MiB, 31 * MiB + 5):
            await fs.write(fh, off, b"written-before-the-kill")
            data[off:off + 23] = b"written-before-the-kill"
        await fs.setattr(inode.ino, size=33 * MiB)
        data.extend(bytes(MiB))
        fh2, new, _ = await fs.create(ROOT, b"new.raw", 0o600, os.O_RDWR | os.O_CREAT, 0, 0)
        await fs.setattr(new.ino, size=20 * MiB)
        await fs.write(fh2, 9 * MiB, b"fresh")
        created[9 * MiB:9 * MiB + 5] = b"fresh"
        fh3, gone, _ = await fs.create(ROOT, b"gone.raw", 0o600, os.O_RDWR | os.O_CREAT, 0, 0)
        await fs.setattr(gone.ino, size=MiB)
        await fs.write(fh3, 0, b"unlinked")
        await fs.unlink(ROOT, b"gone.raw")
        assert store.objects["pve/disk.raw"].data != bytes(data)

    async def next_mount(fs):
        results = await fs.recover()
        assert sorted((r.path, r.outcome) for r in results) == [("disk.raw", "uploaded"), ("new.raw", "uploaded")]
        assert set(os.listdir(fs.writeback_dir)) <= {".lock"}

    with caplog.at_level(logging.WARNING):
        mount_twice(tmp_path, store, killed, next_mount)
    assert store.objects["pve/disk.raw"].data == bytes(data)
    assert store.objects["pve/new.raw"].data == bytes(created)
    assert "pve/gone.raw" not in store.objects
    assert "recovered disk.raw" in caplog.text


def test_a_renamed_file_is_recovered_at_its_new_name(tmp_path):
    store = MemoryStore()
    data = big_object(store, size=12 * MiB)

    async def killed(fs):
        inode, fh = await open_rw(fs, b"disk.raw")
        await fs.write(fh, 5, b"xyz")
        data[5:8] = b"xyz"
        await fs.rename(ROOT, b"disk.raw", ROOT, b"renamed.raw")

    async def next_mount(fs):
        assert [(r.path, r.outcome) for r in await fs.recover()] == [("renamed.raw", "uploaded")]

    mount_twice(tmp_path, store, killed, next_mount)
    assert store.objects["pve/renamed.raw"].data == bytes(data)
    assert "pve/disk.raw" not in store.objects


def test_data_whose_object_was_changed_meanwhile_is_kept_aside_and_named(tmp_path, caplog):
    store = MemoryStore()
    big_object(store, size=12 * MiB)

    async def killed(fs):
        inode, fh = await open_rw(fs, b"disk.raw")
        await fs.write(fh, 4096, b"mine" * 1024)
        store.put_outside("pve/disk.raw", b"another node wrote this")

    async def next_mount(fs):
        [r] = await fs.recover()
        assert r.outcome == "kept" and r.path == "disk.raw"
        with open(r.kept_as, "rb") as f:
            assert f.read()[4096:8192] == b"mine" * 1024
        assert os.stat(r.kept_as).st_mode & 0o777 == 0o600

    with caplog.at_level(logging.ERROR):
        mount_twice(tmp_path, store, killed, next_mount)
    assert store.objects["pve/disk.raw"].data == b"another node wrote this"  # not overwritten
    assert "data of disk.raw written before the daemon stopped was NOT committed" in caplog.text
    assert "kept as" in caplog.text


def test_unlink_racing_the_last_release_still_deletes_the_object(run):
    """close() returns before the kernel's release arrives, so an unlink right after a
    close can find the file still open, ask S3 for its ETag, and see the release
    happen meanwhile: the object must then be deleted, not hidden for ever."""
    store = MemoryStore()
    store.put_outside("pve/a.raw", b"x" * 5000)

    async def body(fs, store):
        inode, fh = await open_rw(fs, b"a.raw")
        await fs.write(fh, 10, b"y")  # cached, committed by the flush: its ETag is not known
        await fs.flush(fh)
        store.stall.add("head")
        async with trio.open_nursery() as n:
            n.start_soon(fs.unlink, ROOT, b"a.raw")
            await trio.sleep(0.05)
            await fs.release(fh)  # the last handle goes while unlink waits for S3
            store.stall.discard("head")
        assert "pve/a.raw" not in store.objects

    run(body, store=store)


# ---------------------------------------------------------------- fsync
def test_fsync_syncs_locally_and_commits_after_sync_interval(run):
    """A VM flushes often; each commit writes a whole new object. So an fsync makes
    the cache durable on local disk (recovery covers a crash) and S3 gets it
    sync_interval later, or at close, whichever comes first: one commit each."""
    store = MemoryStore()
    data = big_object(store, size=24 * MiB)

    async def body(fs, store):
        inode, fh = await open_rw(fs, b"disk.raw")
        store.reset_counts()
        for i in range(5):  # five flushes in a row: none reaches S3 yet
            await fs.write(fh, i * MiB, b"flushed")
            data[i * MiB:i * MiB + 7] = b"flushed"
            await fs.fsync(fh)
        assert store.calls["complete_multipart"] == 0 and store.calls["put"] == 0
        sparse = fs.files[inode.ino].cache
        assert os.path.exists(sparse.journal_path)  # what recovery needs is on disk
        assert 0 < fs.files[inode.ino].commit_due - trio.current_time() <= 0.3
        with trio.fail_after(10):  # sync_interval passed: one commit (slower on a loaded machine)
            while fs.files[inode.ino].dirty or store.calls["complete_multipart"] == 0:
                await trio.sleep(0.05)
        assert store.calls["complete_multipart"] == 1
        assert store.objects["pve/disk.raw"].data == bytes(data)
        assert not fs.files[inode.ino].dirty and fs.files[inode.ino].commit_timer is None
        await fs.write(fh, 20 * MiB, b"then closed")
        data[20 * MiB:20 * MiB + 11] = b"then closed"
        await fs.fsync(fh)
        await fs.flush(fh)  # close before the interval: the close commits ...
        await fs.release(fh)
        assert store.calls["complete_multipart"] == 2
        await trio.sleep(0.5)  # ... and the put-off commit does not happen again
        assert store.calls["complete_multipart"] == 2
        assert store.objects["pve/disk.raw"].data == bytes(data)

    run(body, store=store, cache=CacheConfig(sync_interval=0.3),
        write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=5 * MiB))


def test_sync_interval_zero_commits_at_every_fsync(run):
    store = MemoryStore()
    data = big_object(store, size=24 * MiB)

    async def body(fs, store):
        inode, fh = await open_rw(fs, b"disk.raw")
        store.reset_counts()
        for i in range(3):
            await fs.write(fh, i * MiB, b"flushed")
            data[i * MiB:i * MiB + 7] = b"flushed"
            await fs.fsync(fh)
            assert store.calls["complete_multipart"] == i + 1
            assert store.objects["pve/disk.raw"].data == bytes(data)
        await fs.release(fh)

    run(body, store=store, cache=CacheConfig(sync_interval=0),
        write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=5 * MiB))


def test_a_failed_put_off_commit_is_logged_and_retried_at_close(run, caplog):
    store = MemoryStore()
    data = big_object(store, size=24 * MiB)

    async def body(fs, store):
        inode, fh = await open_rw(fs, b"disk.raw")
        await fs.write(fh, 12345, b"must not be lost")
        data[12345:12345 + 16] = b"must not be lost"
        await fs.fsync(fh)
        store.fail["create_multipart"] = StoreError("S3 is down")
        await trio.sleep(0.5)
        assert "commit of disk.raw (fsynced 0 s before) failed, kept for the next try" in caplog.text
        assert fs.files[inode.ino].dirty
        del store.fail["create_multipart"]
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/disk.raw"].data == bytes(data)

    with caplog.at_level(logging.ERROR):
        run(body, store=store, cache=CacheConfig(sync_interval=0.3),
            write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=5 * MiB))


def test_data_a_last_close_could_not_commit_is_committed_at_the_next_mount(tmp_path, caplog):
    """fsync called it durable, so a close that cannot reach S3 must not drop it."""
    store = MemoryStore()
    data = big_object(store, size=12 * MiB)

    async def failing_close(fs):
        inode, fh = await open_rw(fs, b"disk.raw")
        await fs.write(fh, 7 * MiB, b"fsynced, then S3 went away")
        data[7 * MiB:7 * MiB + 26] = b"fsynced, then S3 went away"
        await fs.fsync(fh)
        store.fail["create_multipart"] = StoreError("S3 is down")
        try:
            await fs.flush(fh)
        except StoreError:
            pass
        else:
            raise AssertionError("the close should have failed")
        await fs.release(fh)
        assert [n for n in os.listdir(fs.writeback_dir) if n.endswith(".data")]  # kept
        assert fs.space.used > 0  # still this mount's: tried again in the background (or the next mount)
        assert [p for p, _, _ in fs.pending_files()] == ["disk.raw"]
        del store.fail["create_multipart"]

    async def next_mount(fs):
        assert [(r.path, r.outcome) for r in await fs.recover()] == [("disk.raw", "uploaded")]

    with caplog.at_level(logging.ERROR):
        mount_twice(tmp_path, store, failing_close, next_mount)
    assert "its data stays in the cache" in caplog.text
    assert store.objects["pve/disk.raw"].data == bytes(data)


def test_growing_a_file_far_without_a_handle_commits_in_the_background(run, monkeypatch):
    """`truncate -s 2T`: the caller gets its answer after GROWTH_WAIT at most (nothing
    could interrupt a long commit); the file is listed as pending until stored, and its
    size shows at once."""
    from s3pvefs.fs import filesystem
    monkeypatch.setattr(filesystem, "BACKGROUND_GROWTH", 32 * MiB)
    monkeypatch.setattr(filesystem, "GROWTH_WAIT", 0.3)

    async def body(fs, store):
        await store.put("pve/small", b"hello\n", {"mode": "33188"})
        inode, _ = await fs.lookup(ROOT, b"small")
        store.stall.add("complete_multipart")  # the commit cannot finish yet
        s = await fs.setattr(inode.ino, size=100 * MiB)
        assert s.size == 100 * MiB and (await fs.getattr(inode.ino)).size == 100 * MiB
        assert len(store.objects["pve/small"].data) == 6  # not committed yet: the caller did not wait
        await trio.sleep(0.2)
        assert [p for p, _, _ in fs.pending_files()] == ["small"]
        store.stall.discard("complete_multipart")
        for _ in range(500):
            if not fs.pending_files():
                break
            await trio.sleep(0.01)
        obj = store.objects["pve/small"].data
        assert len(obj) == 100 * MiB and obj[:6] == b"hello\n" and obj.count(0) == 100 * MiB - 6
        small = await fs.setattr(inode.ino, size=50 * MiB)  # a cut, or a small growth: committed before it returns
        assert small.size == 50 * MiB and len(store.objects["pve/small"].data) == 50 * MiB

    run(body, write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=8 * MiB))


async def until(fs, done):
    """Until done(fs.pending_files()), 5 s at most."""
    for _ in range(500):
        if done(fs.pending_files()):
            return
        await trio.sleep(0.01)
    raise AssertionError(fs.pending_files())


def test_status_shows_how_far_a_background_commit_got(run, monkeypatch):
    """A growth committed in the background is listed with the bytes of its parts
    started and stored, as a streamed file is, not as 0 B until it ends."""
    from s3pvefs.fs import filesystem
    monkeypatch.setattr(filesystem, "BACKGROUND_GROWTH", 32 * MiB)
    monkeypatch.setattr(filesystem, "GROWTH_WAIT", 0.3)

    async def body(fs, store):
        await store.put("pve/small", b"hello\n", {"mode": "33188"})
        inode, _ = await fs.lookup(ROOT, b"small")
        store.stall.add("upload_part")  # the first window (its 6 bytes) waits; the zeros are copied
        await fs.setattr(inode.ino, size=100 * MiB)
        await until(fs, lambda files: files and files[0][2]["stored"] > 0)
        [(path, _, p)] = fs.pending_files()
        assert (path, p["kind"], p["written"]) == ("small", "cached", 100 * MiB)
        assert p["parts_in_flight"] == 1 and p["sent"] == 100 * MiB and p["stored"] == 92 * MiB, p
        store.stall.discard("upload_part")
        store.stall.add("complete_multipart")
        await until(fs, lambda files: files[0][2]["parts_in_flight"] == 0)
        [(_, _, p)] = fs.pending_files()
        assert p["sent"] == p["stored"] == 100 * MiB, p
        store.stall.discard("complete_multipart")
        await until(fs, lambda files: not files)
        assert len(store.objects["pve/small"].data) == 100 * MiB

    run(body, write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=8 * MiB))


@pytest.mark.parametrize("held", ["upload_part", "complete_multipart"])
@pytest.mark.parametrize("then", ["unlink", "rename_over", "rename_away"])
def test_removing_a_file_whose_growth_is_committed_in_the_background(run, monkeypatch, held, then):
    """`truncate -s 2T disk.raw; rm disk.raw` (or `mv new.raw disk.raw`) while the growth is
    still being copied: the commit stops (its upload aborted), so it neither brings the
    removed file back nor writes over the file moved there, and nothing waits for it.
    `mv disk.raw moved.raw` does not wait either: the growth is committed at the new name."""
    from s3pvefs.fs import filesystem
    monkeypatch.setattr(filesystem, "BACKGROUND_GROWTH", 32 * MiB)
    monkeypatch.setattr(filesystem, "GROWTH_WAIT", 0.3)

    async def body(fs, store):
        await store.put("pve/disk.raw", b"hello\n", {"mode": "33188"})
        await store.put("pve/new.raw", b"the new disk", {"mode": "33188"})
        inode, _ = await fs.lookup(ROOT, b"disk.raw")
        await fs.lookup(ROOT, b"new.raw")
        store.stall.add(held)
        await fs.setattr(inode.ino, size=100 * MiB)
        await trio.sleep(0.2)
        assert [p for p, _, _ in fs.pending_files()] == ["disk.raw"]
        with trio.fail_after(2):  # does not wait for the held request
            if then == "unlink":
                await fs.unlink(ROOT, b"disk.raw")
            elif then == "rename_over":
                await fs.rename(ROOT, b"new.raw", ROOT, b"disk.raw", 0)
            else:
                await fs.rename(ROOT, b"disk.raw", ROOT, b"moved.raw", 0)
        store.stall.discard(held)
        await until(fs, lambda files: not files)
        assert not store.uploads
        if then == "unlink":
            assert "pve/disk.raw" not in store.objects
        elif then == "rename_over":
            assert store.objects["pve/disk.raw"].data == b"the new disk"
        else:
            assert "pve/disk.raw" not in store.objects
            obj = store.objects["pve/moved.raw"].data
            assert len(obj) == 100 * MiB and obj[:6] == b"hello\n" and obj.count(0) == 100 * MiB - 6

    run(body, write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=8 * MiB))


def test_closing_a_file_grown_far_commits_in_the_background(run, monkeypatch):
    """coreutils `truncate -s 2T f` opens f and ftruncates: its close returns after
    GROWTH_WAIT at most too."""
    from s3pvefs.fs import filesystem
    monkeypatch.setattr(filesystem, "BACKGROUND_GROWTH", 32 * MiB)
    monkeypatch.setattr(filesystem, "GROWTH_WAIT", 0.3)

    async def body(fs, store):
        await store.put("pve/small", b"hello\n", {"mode": "33188"})
        inode, fh = await open_rw(fs, b"small")
        await fs.setattr(inode.ino, size=100 * MiB)
        store.stall.add("complete_multipart")
        await fs.flush(fh)  # close(2): returns although the commit cannot finish yet
        await fs.release(fh)
        assert len(store.objects["pve/small"].data) == 6
        await trio.sleep(0.2)
        assert [p for p, _, _ in fs.pending_files()] == ["small"]
        store.stall.discard("complete_multipart")
        for _ in range(500):
            if not fs.pending_files():
                break
            await trio.sleep(0.01)
        obj = store.objects["pve/small"].data
        assert len(obj) == 100 * MiB and obj[:6] == b"hello\n" and obj.count(0) == 100 * MiB - 6

    run(body, write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=8 * MiB))


def test_a_growth_the_server_copies_quickly_is_stored_when_the_caller_returns(run, monkeypatch):
    """The wait is a bound, not a delay: on a server that copies fast, `truncate -s` and the
    close of `qemu-img create` return once the object has its new size, as before."""
    from s3pvefs.fs import filesystem
    monkeypatch.setattr(filesystem, "BACKGROUND_GROWTH", 32 * MiB)

    async def body(fs, store):
        await store.put("pve/small", b"hello\n", {"mode": "33188"})
        inode, _ = await fs.lookup(ROOT, b"small")
        t0 = trio.current_time()
        await fs.setattr(inode.ino, size=100 * MiB)
        assert len(store.objects["pve/small"].data) == 100 * MiB and not fs.pending_files()
        inode, fh = await open_rw(fs, b"small")
        await fs.setattr(inode.ino, size=200 * MiB)
        await fs.flush(fh)
        await fs.release(fh)
        assert len(store.objects["pve/small"].data) == 200 * MiB and not fs.pending_files()
        assert trio.current_time() - t0 < filesystem.GROWTH_WAIT

    run(body, write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=8 * MiB))
