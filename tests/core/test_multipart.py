"""Large staged files: multipart uploads above multipart_threshold, and their failures.

A file is staged (not streamed) when it is extended by truncate first, as
``qemu-img create`` does; test_streaming.py covers sequential writes."""

from __future__ import annotations

import errno
import os
import random

import pytest
import trio

from s3pvefs.config import MiB, WriteConfig
from s3pvefs.errors import FsError, StoreError
from tests.core.helpers import ROOT, read_all

SMALL = WriteConfig(multipart_threshold=6 * MiB, min_part_size=5 * MiB, upload_concurrency=2)
DATA = random.Random(7).randbytes(13 * MiB + 123)


async def write_big(fs, name, data, step=1 * MiB):
    fh, inode, _ = await fs.create(ROOT, name, 0o640, os.O_WRONLY | os.O_CREAT, 0, 0)
    await fs.setattr(inode.ino, size=len(data))  # an extending truncate: the staging path
    assert fs.files[inode.ino].cache is not None and fs.files[inode.ino].stream is None
    for off in range(0, len(data), step):
        await fs.write(fh, off, data[off:off + step])
    return fh, inode


def test_multipart_upload(run):
    async def body(fs, store):
        fh, inode = await write_big(fs, b"big.vma", DATA)
        await fs.flush(fh)
        await fs.release(fh)
        assert store.calls["put"] == 0
        assert store.calls["create_multipart"] == 1
        assert store.calls["upload_part"] == 3  # 5 + 5 + 3 MiB
        assert store.calls["complete_multipart"] == 1
        assert store.calls["abort_multipart"] == 0
        obj = store.objects["pve/big.vma"]
        assert obj.data == DATA
        assert obj.metadata["mode"] == str(0o100640)
        assert store.uploads == {}
        assert (await fs.getattr(inode.ino)).size == len(DATA)
        assert await read_all(fs, inode.ino) == DATA

    run(body, write=SMALL)


def test_at_threshold_is_a_single_put(run):
    async def body(fs, store):
        data = DATA[:6 * MiB]
        fh, _ = await write_big(fs, b"six", data)
        await fs.release(fh)
        assert store.calls["put"] == 1 and store.calls["create_multipart"] == 0
        assert store.objects["pve/six"].data == data

    run(body, write=SMALL)


def test_failing_part_leaves_no_partial_object_and_keeps_the_data(run, monkeypatch):
    """A commit that fails leaves no partial object and no upload; the data is kept
    (the cache, durable) and committed in the background once S3 takes it."""
    monkeypatch.setattr("s3pvefs.fs.filesystem.RETRY_FIRST", 0.05)

    async def body(fs, store):
        fh, inode = await write_big(fs, b"big.vma", DATA)
        store.fail["upload_part"] = StoreError("500 InternalError")
        with pytest.raises(FsError) as e:
            await fs.flush(fh)
        assert e.value.errno == errno.EIO
        assert "pve/big.vma" not in store.objects
        assert store.uploads == {}
        assert store.calls["abort_multipart"] == 1
        assert fs.files[inode.ino].dirty
        await fs.release(fh)  # commits again at release, fails again: kept, logged
        assert "pve/big.vma" not in store.objects
        assert store.uploads == {}
        assert fs.open_file_count() == 0 and inode.open_handles == 0
        [(path, handles, progress)] = fs.pending_files()  # status lists it
        assert path == "big.vma" and handles == 0 and progress["failed_since"]
        assert (await fs.getattr(inode.ino)).size == len(DATA)  # this mount still sees what it wrote
        del store.fail["upload_part"]
        with trio.fail_after(5):
            while inode.ino in fs.files:
                await trio.sleep(0.02)
        assert store.objects["pve/big.vma"].data == DATA and store.uploads == {}
        assert fs.pending_files() == []

    run(body, write=SMALL)


def test_failing_part_then_retry_succeeds(run):
    async def body(fs, store):
        fh, _ = await write_big(fs, b"big.vma", DATA)
        store.fail["upload_part"] = StoreError("timeout", transient=True)
        with pytest.raises(FsError):
            await fs.flush(fh)
        del store.fail["upload_part"]
        await fs.flush(fh)
        await fs.release(fh)
        assert store.objects["pve/big.vma"].data == DATA
        assert store.uploads == {}

    run(body, write=SMALL)


def test_failing_complete_aborts(run):
    async def body(fs, store):
        fh, _ = await write_big(fs, b"big.vma", DATA)
        store.fail["complete_multipart"] = StoreError("500")
        with pytest.raises(FsError) as e:
            await fs.flush(fh)
        assert e.value.errno == errno.EIO
        assert store.uploads == {} and "pve/big.vma" not in store.objects
        del store.fail["complete_multipart"]
        await fs.release(fh)
        assert store.objects["pve/big.vma"].data == DATA

    run(body, write=SMALL)


def test_copy_in_place_of_big_file_attributes(run):
    async def body(fs, store):
        store.put_outside("pve/big", DATA)
        inode, _ = await fs.lookup(ROOT, b"big")
        store.reset_counts()
        await fs.setattr(inode.ino, mode=0o600)
        assert store.calls["get"] == 0 and store.calls["put"] == 0 and store.calls["copy"] == 1
        assert store.objects["pve/big"].data == DATA

    run(body, write=SMALL)
