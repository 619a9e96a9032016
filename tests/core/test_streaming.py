"""Sequential writes streamed into multipart uploads from memory (write/stream.py),
against the in-memory store with small parts (the store checks S3's part rules
with its own, smaller, minimum)."""

from __future__ import annotations

import errno
import os
import random

import pytest
import trio
import trio.testing

from s3pvefs.config import WriteConfig
from s3pvefs.errors import FsError, StoreError
from s3pvefs.store.memory import MemoryStore
from tests.core.helpers import ROOT, read_all

KiB = 1 << 10
# parts of 4, 4, 8, 8, 16 KiB..., 1 KiB kept back for late writes
SMALL = WriteConfig(min_part_size=4 * KiB, max_part_size=16 * KiB, parts_per_step=2, reorder_window=1 * KiB,
                    upload_concurrency=2, memory_budget=64 * KiB)
DATA = random.Random(3).randbytes(100 * KiB + 17)
WR = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def small_store() -> MemoryStore:
    store = MemoryStore()
    store.min_part_size = SMALL.min_part_size
    return store


async def stream(fs, name: bytes, data: bytes, step: int = 3 * KiB, fh=None):
    if fh is None:
        fh, inode, _ = await fs.create(ROOT, name, 0o640, WR, 0, 0)
    else:
        inode = fs._handle(fh).inode
    for off in range(0, len(data), step):
        assert await fs.write(fh, off, data[off:off + step]) == len(data[off:off + step])
        assert fs.files[inode.ino].cache is None, "a sequential write went to local disk"
    return fh, inode


async def settle():
    await trio.testing.wait_all_tasks_blocked()


def expected_parts(size: int, cfg: WriteConfig = SMALL) -> list[int]:
    from s3pvefs.write.parts import stream_part_size
    parts, left, i = [], size, 1
    while left >= stream_part_size(i, cfg.min_part_size, cfg.max_part_size, step=cfg.parts_per_step) \
            + cfg.reorder_window:
        p = stream_part_size(i, cfg.min_part_size, cfg.max_part_size, step=cfg.parts_per_step)
        parts.append(p)
        left -= p
        i += 1
    return parts + [left]


def test_sequential_write_streams_parts_of_growing_size_while_writing(run):
    async def body(fs, store):
        fh, inode = await stream(fs, b"big.vma.dat", DATA)
        await settle()
        (upload,) = store.uploads.values()  # parts went out before close
        assert sum(map(len, upload.parts.values())) >= 60 * KiB
        assert "pve/big.vma.dat" not in store.objects  # nothing at the key before close
        await fs.flush(fh)
        await fs.release(fh)
        obj = store.objects["pve/big.vma.dat"]
        assert obj.data == DATA
        assert obj.metadata["mode"] == str(0o100640) and "mtime" not in obj.metadata  # mtime = LastModified
        assert store.calls["upload_part"] == len(expected_parts(len(DATA)))
        assert expected_parts(len(DATA))[:6] == [4 * KiB, 4 * KiB, 8 * KiB, 8 * KiB, 16 * KiB, 16 * KiB]
        assert store.calls["put"] == 0 and store.uploads == {}
        assert fs.budget.used == 0
        assert await read_all(fs, inode.ino) == DATA

    run(body, store=small_store(), write=SMALL)


def test_small_file_is_one_put(run):
    async def body(fs, store):
        fh, _ = await stream(fs, b"notes", DATA[:4 * KiB + 1023])  # below a part + the window
        await fs.release(fh)
        assert store.calls["put"] == 1 and store.calls["create_multipart"] == 0
        assert store.objects["pve/notes"].data == DATA[:4 * KiB + 1023]
        assert "mtime" in store.objects["pve/notes"].metadata

    run(body, store=small_store(), write=SMALL)


def test_four_writers_stay_within_the_budget(run):
    budget = 24 * KiB

    class SlowStore(MemoryStore):
        async def upload_part(self, *args):
            await trio.sleep(0.001)
            return await super().upload_part(*args)

    store = SlowStore()
    store.min_part_size = SMALL.min_part_size

    async def body(fs, store):
        datas = [random.Random(i).randbytes(60 * KiB) for i in range(4)]
        async with trio.open_nursery() as n:
            for i, d in enumerate(datas):
                async def one(i=i, d=d):
                    fh, _ = await stream(fs, f"w{i}".encode(), d, step=2 * KiB)
                    await fs.release(fh)
                n.start_soon(one)
        assert fs.budget.peak <= budget, fs.budget.peak
        assert fs.budget.used == 0
        for i, d in enumerate(datas):
            assert store.objects[f"pve/w{i}"].data == d
        assert store.uploads == {}

    run(body, store=store, write=WriteConfig(**{**SMALL.__dict__, "memory_budget": budget}))


def test_idle_partial_parts_are_sent_early_instead_of_deadlocking(run):
    """Writers that each hold part of the budget and then wait for more would wait
    for ever: the largest buffer goes out early as a shorter part."""
    cfg = WriteConfig(**{**SMALL.__dict__, "min_part_size": 4 * KiB, "max_part_size": 4 * KiB,
                         "memory_budget": 12 * KiB})

    async def body(fs, store):
        handles = []
        for i in range(3):  # three files, each 4.5 KiB buffered: the budget is full
            fh, _, _ = await fs.create(ROOT, f"f{i}".encode(), 0o644, WR, 0, 0)
            await fs.write(fh, 0, DATA[:4 * KiB + 512])
            handles.append(fh)
        with trio.fail_after(5):
            for i, fh in enumerate(handles):
                await fs.write(fh, 4 * KiB + 512, DATA[4 * KiB + 512:8 * KiB])
        for i, fh in enumerate(handles):
            await fs.release(fh)
            assert store.objects[f"pve/f{i}"].data == DATA[:8 * KiB]
        assert fs.budget.peak <= 12 * KiB

    run(body, store=small_store(), write=cfg)


def test_failed_part_is_returned_by_write_or_close_and_the_data_is_kept(run, monkeypatch):
    """A part S3 does not take (after outage_patience): later writes and the close get
    EIO, nothing partial appears at the key, and nothing written is lost: the parts
    S3 stored stay in their upload, the rest goes from memory to a spill file, and the
    file is committed in the background when S3 takes parts again."""
    monkeypatch.setattr("s3pvefs.fs.filesystem.RETRY_FIRST", 0.05)

    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"x.dat", 0o644, WR, 0, 0)
        store.fail["upload_part"] = StoreError("500 InternalError")
        written = 0
        with pytest.raises(FsError) as e:
            for off in range(0, len(DATA), 2 * KiB):
                await fs.write(fh, off, DATA[off:off + 2 * KiB])
                written = off + 2 * KiB
                await settle()
            await fs.flush(fh)
        assert e.value.errno == errno.EIO
        with pytest.raises(FsError) as e:  # close says it too
            await fs.flush(fh)
        assert e.value.errno == errno.EIO
        await fs.release(fh)
        await settle()
        assert "pve/x.dat" not in store.objects
        assert len(store.uploads) == 1 and store.calls["abort_multipart"] == 0  # kept, not aborted
        assert fs.budget.used == 0  # out of memory: on local disk
        [(path, _, progress)] = fs.pending_files()
        assert path == "x.dat" and progress["kind"] == "kept" and progress["local"] > 0
        del store.fail["upload_part"]
        with trio.fail_after(5):
            while inode.ino in fs.files:
                await trio.sleep(0.02)
        assert store.objects["pve/x.dat"].data == DATA[:written] and store.uploads == {}
        assert os.listdir(fs.uploads.directory) == []

    run(body, store=small_store(), write=SMALL)


def test_failed_complete_keeps_the_upload_and_completes_it_later(run, monkeypatch):
    """Every part stored, the Complete refused: nothing at the key, the upload is kept
    (not aborted) and completed in the background."""
    monkeypatch.setattr("s3pvefs.fs.filesystem.RETRY_FIRST", 0.05)

    async def body(fs, store):
        fh, inode = await stream(fs, b"x.dat", DATA)
        store.fail["complete_multipart"] = StoreError("500 InternalError")
        with pytest.raises(FsError) as e:
            await fs.flush(fh)
        assert e.value.errno == errno.EIO
        await fs.release(fh)
        await settle()
        assert "pve/x.dat" not in store.objects and len(store.uploads) == 1
        del store.fail["complete_multipart"]
        with trio.fail_after(5):
            while inode.ino in fs.files:
                await trio.sleep(0.02)
        assert store.objects["pve/x.dat"].data == DATA and store.uploads == {}

    run(body, store=small_store(), write=SMALL)


def test_failed_single_put_keeps_the_data_for_a_retry(run):
    async def body(fs, store):
        fh, _ = await stream(fs, b"small", DATA[:3 * KiB])
        store.fail["put"] = StoreError("503 Slow Down", transient=True)
        with pytest.raises(FsError):
            await fs.flush(fh)
        del store.fail["put"]
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/small"].data == DATA[:3 * KiB]

    run(body, store=small_store(), write=SMALL)


def test_fsync_waits_for_the_parts_sent(run):
    async def body(fs, store):
        fh, inode = await stream(fs, b"x", DATA[:40 * KiB])
        await fs.fsync(fh)
        (upload,) = store.uploads.values()
        assert sum(map(len, upload.parts.values())) == fs.files[inode.ino].stream.base > 0
        assert "pve/x" not in store.objects  # the object itself appears at close
        await fs.release(fh)
        assert store.objects["pve/x"].data == DATA[:40 * KiB]

    run(body, store=small_store(), write=SMALL)


def test_late_writes_within_the_window_and_holes_stay_in_memory(run):
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"x", 0o644, WR, 0, 0)
        await fs.write(fh, 0, DATA[:4608])
        await fs.write(fh, 5120, DATA[5120:5632])  # a thread ahead of another: a part goes out
        assert fs.files[inode.ino].stream.base == 4 * KiB
        await fs.write(fh, 4608, DATA[4608:5120])  # late, but within the window
        await fs.write(fh, 30 * KiB, b"end")  # a hole: zeros, streamed
        assert fs.files[inode.ino].cache is None and fs.files[inode.ino].stream.base > 4 * KiB
        await fs.release(fh)
        want = DATA[:5632] + bytes(30 * KiB - 5632) + b"end"
        assert store.objects["pve/x"].data == want

    run(body, store=small_store(), write=SMALL)


def test_write_behind_what_was_sent_moves_to_staging_without_loss(run):
    async def body(fs, store):
        fh, inode = await stream(fs, b"x", DATA[:50 * KiB])
        assert fs.files[inode.ino].stream.base > 0
        await fs.write(fh, 100, b"HELLO")  # qemu-img writing a header at the end
        assert fs.files[inode.ino].stream is None and fs.files[inode.ino].cache is not None
        await fs.write(fh, 50 * KiB, b"tail")
        assert await fs.read(fh, 98, 9) == DATA[98:100] + b"HELLO" + DATA[105:107]
        await fs.release(fh)
        want = DATA[:100] + b"HELLO" + DATA[105:50 * KiB] + b"tail"
        assert store.objects["pve/x"].data == want
        assert store.uploads == {}

    run(body, store=small_store(), write=SMALL)


def test_read_back_while_writing(run):
    async def body(fs, store):
        fh, inode = await stream(fs, b"x", DATA[:50 * KiB])
        assert await fs.read(fh, 50 * KiB - 100, 100) == DATA[50 * KiB - 100:50 * KiB]  # in memory
        assert fs.files[inode.ino].stream is not None
        assert await fs.read(fh, 0, 1000) == DATA[:1000]  # sent: committed, then read back
        await fs.write(fh, 50 * KiB, DATA[50 * KiB:])
        await fs.release(fh)
        assert store.objects["pve/x"].data == DATA

    run(body, store=small_store(), write=SMALL)


def test_rename_while_open_for_writing(run):
    async def body(fs, store):
        fh, inode = await stream(fs, b"a.dat", DATA[:50 * KiB])
        await fs.rename(ROOT, b"a.dat", ROOT, b"b.vma")
        assert "pve/a.dat" not in store.objects and store.uploads == {}
        for off in range(50 * KiB, len(DATA), 3 * KiB):
            await fs.write(fh, off, DATA[off:off + 3 * KiB])
        await fs.release(fh)
        await settle()
        assert store.objects["pve/b.vma"].data == DATA
        assert "pve/a.dat" not in store.objects and store.uploads == {}
        assert store.calls["get"] == 0  # nothing read back: the committed prefix was copied
        assert store.calls["upload_part_copy"] + store.calls["copy"] >= 2

    run(body, store=small_store(), write=SMALL)


def test_unlink_while_streaming_keeps_the_handle_readable(run):
    async def body(fs, store):
        fh, inode = await stream(fs, b"a", DATA[:50 * KiB])
        await fs.unlink(ROOT, b"a")
        assert await fs.read(fh, 0, 50 * KiB) == DATA[:50 * KiB]
        await fs.release(fh)
        await settle()
        assert "pve/a" not in store.objects and store.uploads == {}

    run(body, store=small_store(), write=SMALL)


def test_full_upload_continues_in_a_follow_up_upload(run, monkeypatch):
    monkeypatch.setattr("s3pvefs.write.stream.MAX_PARTS", 5)

    async def body(fs, store):
        fh, _ = await stream(fs, b"huge", DATA)
        await fs.release(fh)
        await settle()
        assert store.objects["pve/huge"].data == DATA
        assert store.calls["complete_multipart"] >= 2 and store.calls["upload_part_copy"] >= 1
        assert store.uploads == {}

    run(body, store=small_store(), write=SMALL)


def test_append_to_an_object_copies_it_server_side(run):
    async def body(fs, store):
        store.put_outside("pve/log", DATA[:40 * KiB])
        inode, _ = await fs.lookup(ROOT, b"log")
        store.reset_counts()
        fh = await fs.open(inode.ino, os.O_WRONLY | os.O_APPEND)
        await fs.write(fh, 40 * KiB, DATA[40 * KiB:])
        await fs.release(fh)
        assert store.objects["pve/log"].data == DATA
        assert store.calls["get"] == 0 and store.calls["upload_part_copy"] == 1

    run(body, store=small_store(), write=SMALL)


def test_chmod_and_utimes_while_streaming_reach_the_object(run):
    async def body(fs, store):
        fh, inode = await stream(fs, b"x", DATA)
        await fs.setattr(inode.ino, mode=0o600, mtime_ns=1_600_000_000 * 10**9)
        await fs.release(fh)
        meta = store.objects["pve/x"].metadata
        assert meta["mode"] == str(0o100600) and meta["mtime"] == "1600000000"
        assert store.objects["pve/x"].data == DATA

    run(body, store=small_store(), write=SMALL)


def test_truncate_while_streaming(run):
    async def body(fs, store):
        fh, inode = await stream(fs, b"x", DATA[:50 * KiB])
        base = fs.files[inode.ino].stream.base
        await fs.setattr(inode.ino, size=base + 10)  # within memory: cut
        assert fs.files[inode.ino].stream is not None
        await fs.setattr(inode.ino, size=0)  # everything: the upload is dropped
        await settle()
        assert store.uploads == {}
        await fs.write(fh, 0, b"new")
        await fs.release(fh)
        assert store.objects["pve/x"].data == b"new"
        assert fs.budget.used == 0

    run(body, store=small_store(), write=SMALL)


def test_uniform_parts_are_all_one_size(run):
    cfg = WriteConfig(**{**SMALL.__dict__, "uniform_parts": True})

    async def body(fs, store):
        fh, _ = await stream(fs, b"x", DATA)
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/x"].data == DATA
        assert store.calls["upload_part"] == -(-len(DATA) // (4 * KiB))

    run(body, store=small_store(), write=cfg)
