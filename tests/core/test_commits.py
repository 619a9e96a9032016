"""Commits that never lose or misreport (write/commitstore.py, write/resume.py,
write/uploadlog.py): lost answers, outages, failed Completes, this node's uploads
after a crash, removed files whose data was kept."""

from __future__ import annotations

import os
import random

import pytest
import trio
import trio.testing

from s3pvefs.config import CacheConfig, Config, MiB, StoreConfig, WriteConfig
from s3pvefs.errors import FsError, StoreError
from s3pvefs.fs.filesystem import Filesystem
from s3pvefs.store.memory import MemoryStore
from tests.core.helpers import ROOT

KiB = 1 << 10
SMALL = WriteConfig(min_part_size=4 * KiB, max_part_size=16 * KiB, parts_per_step=2, reorder_window=1 * KiB,
                    upload_concurrency=2, memory_budget=64 * KiB, multipart_threshold=8 * KiB)
PATIENT = WriteConfig(**{**SMALL.__dict__, "outage_patience": 5.0})
DATA = random.Random(5).randbytes(50 * KiB + 3)
WR = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def small_store() -> MemoryStore:
    store = MemoryStore()
    store.min_part_size = SMALL.min_part_size
    return store


async def write_file(fs, name: bytes, data: bytes, step: int = 3 * KiB):
    fh, inode, _ = await fs.create(ROOT, name, 0o640, WR, 0, 0)
    for off in range(0, len(data), step):
        await fs.write(fh, off, data[off:off + step])
    return fh, inode


def files_in(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if not n.startswith(".")] if os.path.isdir(directory) else []


async def wait_committed(fs, inode, seconds: float = 5) -> None:
    with trio.fail_after(seconds):
        while inode.ino in fs.files:
            await trio.sleep(0.02)


@pytest.mark.parametrize("op", ["complete_multipart", "put"])
def test_a_commit_whose_answer_was_lost_counts_as_committed(run, op):
    """The request took effect, its answer never came (the retry then gets NoSuchUpload,
    or nothing): the bucket holds exactly what was sent, so the close succeeds."""
    data = DATA if op == "complete_multipart" else DATA[:3 * KiB]  # one PUT

    async def body(fs, store):
        fh, inode = await write_file(fs, b"f.vma", data)
        store.lose_answer.add(op)
        await fs.flush(fh)  # no error
        await fs.release(fh)
        assert store.objects["pve/f.vma"].data == data and store.uploads == {}
        assert fs.commits.lost_answers == 1 and inode.ino not in fs.files
        assert files_in(fs.uploads.directory) == []

    run(body, store=small_store(), write=SMALL)


def test_a_cached_commit_whose_complete_answer_was_lost(run):
    async def body(fs, store):
        store.put_outside("pve/disk.raw", bytes(12 * MiB))
        inode, _ = await fs.lookup(ROOT, b"disk.raw")
        fh = await fs.open(inode.ino, os.O_RDWR)
        await fs.write(fh, 9 * MiB, b"changed in place")
        store.lose_answer.add("complete_multipart")
        await fs.flush(fh)
        await fs.release(fh)
        expected = bytearray(12 * MiB)
        expected[9 * MiB:9 * MiB + 16] = b"changed in place"
        assert store.objects["pve/disk.raw"].data == bytes(expected) and store.uploads == {}
        assert fs.commits.lost_answers == 1

    run(body, write=WriteConfig(multipart_threshold=8 * MiB, min_part_size=5 * MiB))


def test_a_lost_create_answer_leaves_no_orphan_upload(run):
    """CreateMultipartUpload took effect, its answer was lost, it was sent again: the
    first upload is aborted, the file committed through the second."""
    async def body(fs, store):
        store.lose_answer.add("create_multipart")
        fh, _ = await write_file(fs, b"f.vma", DATA)
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/f.vma"].data == DATA
        assert store.uploads == {} and store.calls["create_multipart"] == 2
        assert fs.commits.orphans_aborted == 1

    run(body, store=small_store(), write=PATIENT)


def test_writers_wait_through_an_outage_shorter_than_the_patience(run):
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"backup.vma.dat", 0o640, WR, 0, 0)
        await fs.write(fh, 0, DATA[:20 * KiB])
        store.fail["upload_part"] = StoreError("no answer", code="Timeout", transient=True)
        waited = {}

        async def outage():
            await trio.sleep(1.0)
            waited["since"] = fs.commits.waiting_since()  # what `s3pvefs status` shows
            del store.fail["upload_part"]

        async with trio.open_nursery() as n:
            n.start_soon(outage)
            for off in range(20 * KiB, len(DATA), 3 * KiB):
                await fs.write(fh, off, DATA[off:off + 3 * KiB])
            await fs.flush(fh)
        await fs.release(fh)
        assert waited["since"] is not None and fs.commits.waiting_since() is None
        assert store.objects["pve/backup.vma.dat"].data == DATA
        assert store.calls["abort_multipart"] == 0

    run(body, store=small_store(), write=PATIENT)


def test_an_outage_longer_than_the_patience_gives_eio_and_keeps_the_data(run, monkeypatch):
    monkeypatch.setattr("s3pvefs.fs.filesystem.RETRY_FIRST", 0.05)
    patient = WriteConfig(**{**SMALL.__dict__, "outage_patience": 0.5})

    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"f", 0o640, WR, 0, 0)
        store.fail["upload_part"] = StoreError("no answer", code="Timeout", transient=True)
        with pytest.raises(FsError):
            for off in range(0, len(DATA), 3 * KiB):
                await fs.write(fh, off, DATA[off:off + 3 * KiB])
            await fs.flush(fh)
        await fs.release(fh)
        assert "pve/f" not in store.objects and len(store.uploads) == 1  # kept, not aborted
        del store.fail["upload_part"]
        await wait_committed(fs, inode)
        assert store.objects["pve/f"].data[:3 * KiB] == DATA[:3 * KiB] and store.uploads == {}

    run(body, store=small_store(), write=patient)


def _config(tmp_path, write: WriteConfig) -> Config:
    return Config(store=StoreConfig(bucket="bucket", prefix="pve"),
                  cache=CacheConfig(cache_dir=str(tmp_path / "cache")), write=write)


def lives(tmp_path, store, write, *steps):
    """Each step runs in a Filesystem of its own on the same cache directory, stopped
    without closing anything (the daemon killed) before the next starts."""
    async def main():
        for step in steps:
            async with trio.open_nursery() as nursery:
                await step(Filesystem(store, _config(tmp_path, write), nursery))
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_this_nodes_unfinished_uploads_are_aborted_at_once_at_the_next_mount(tmp_path):
    store = small_store()
    other = {}

    async def killed_while_writing(fs):
        other["id"] = await store.create_multipart("pve/another-node.vma", {})  # not ours: left alone
        fh, _ = await write_file(fs, b"f.vma", DATA[:30 * KiB])
        await trio.testing.wait_all_tasks_blocked()
        assert len(store.uploads) == 2

    async def next_mount(fs):
        outcomes = [(r.path, r.outcome) for r in await fs.recover()]
        assert outcomes == [("pve/f.vma", "aborted")]
        assert list(store.uploads) == [other["id"]]
        assert "pve/f.vma" not in store.objects

    lives(tmp_path, store, SMALL, killed_while_writing, next_mount)


def test_a_kept_streamed_file_is_committed_at_the_next_mount(tmp_path):
    store = small_store()

    async def failed_then_killed(fs):
        fh, inode = await write_file(fs, b"f.vma", DATA)
        store.fail["complete_multipart"] = StoreError("500 InternalError")
        with pytest.raises(FsError):
            await fs.flush(fh)
        await fs.release(fh)
        assert "pve/f.vma" not in store.objects and len(store.uploads) == 1
        del store.fail["complete_multipart"]

    async def next_mount(fs):
        outcomes = [(r.path, r.outcome) for r in await fs.recover()]
        assert outcomes == [("f.vma", "uploaded")]
        assert store.objects["pve/f.vma"].data == DATA and store.uploads == {}
        assert files_in(fs.uploads.directory) == []

    lives(tmp_path, store, SMALL, failed_then_killed, next_mount)


@pytest.mark.parametrize("kind", ["streamed", "cached"])
def test_removing_a_file_whose_data_was_kept_drops_that_data(tmp_path, kind):
    """Proxmox's vdisk_free of an image whose last close could not commit: the kept
    data goes with the name (no cache file, no upload left), and the next mount has
    nothing to say about it."""
    store = small_store()
    if kind == "cached":
        store.put_outside("pve/f", bytes(40 * KiB))

    async def failed_close_then_unlink(fs):
        if kind == "cached":
            inode, _ = await fs.lookup(ROOT, b"f")
            fh = await fs.open(inode.ino, os.O_RDWR)
            await fs.write(fh, 10 * KiB, b"x" * 100)
            store.fail["put"] = StoreError("S3 is down")
            store.fail["create_multipart"] = StoreError("S3 is down")
        else:
            fh, inode = await write_file(fs, b"f", DATA)
            store.fail["complete_multipart"] = StoreError("S3 is down")
        with pytest.raises(FsError):
            await fs.flush(fh)
        await fs.release(fh)
        assert inode.ino in fs.files  # kept
        store.fail.clear()
        await fs.unlink(ROOT, b"f")
        await trio.testing.wait_all_tasks_blocked()
        assert inode.ino not in fs.files and fs.space.used == 0
        assert store.uploads == {} and "pve/f" not in store.objects
        leftovers = files_in(fs.writeback_dir) + files_in(fs.uploads.directory)
        assert leftovers == []

    async def next_mount(fs):
        assert await fs.recover() == []

    lives(tmp_path, store, SMALL, failed_close_then_unlink, next_mount)


def test_a_new_file_flushed_before_anything_is_written_commits_nothing(run):
    """`sh -c 'cmd > f'`: the shell opens (creates) f, dup2s it and closes the first
    descriptor (a flush) before cmd writes anything: no empty object may appear then
    (a failing cmd would leave it behind); the last close commits."""
    async def body(fs, store):
        fh, inode, _ = await fs.create(ROOT, b"f.dat", 0o644, WR, 0, 0)
        await fs.flush(fh)
        assert "pve/f.dat" not in store.objects and store.calls["put"] == 0
        await fs.write(fh, 0, b"hello\n")
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/f.dat"].data == b"hello\n" and store.calls["put"] == 1
        fh, inode, _ = await fs.create(ROOT, b"empty", 0o644, WR, 0, 0)  # touch: the last close commits
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/empty"].data == b""

    run(body)
