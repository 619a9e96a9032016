"""Reads of committed objects: read-ahead for sequential readers, exact ranges for random ones, the read budget."""

from __future__ import annotations

import os
import random

import pytest
import trio
import trio.testing

from s3pvefs.config import MiB, ReadConfig, WriteConfig
from s3pvefs.errors import FsError, Stale
from tests.core.helpers import ROOT, HugeBytes

SMALL = WriteConfig(multipart_threshold=6 * MiB, min_part_size=5 * MiB, upload_concurrency=2)
DATA = random.Random(7).randbytes(13 * MiB + 123)


def test_sequential_read_with_readahead_and_random_read(run):
    async def body(fs, store):
        store.put_outside("pve/big", DATA)
        inode, _ = await fs.lookup(ROOT, b"big")
        store.reset_counts()
        fh = await fs.open(inode.ino, os.O_RDONLY)
        got = bytearray()
        while True:
            chunk = await fs.read(fh, len(got), 128 * 1024)
            if not chunk:
                break
            got += chunk
        assert bytes(got) == DATA
        chunks = -(-len(DATA) // MiB)
        assert store.calls["get"] == chunks  # every chunk fetched once
        await fs.release(fh)
        fh = await fs.open(inode.ino, os.O_RDONLY)
        store.reset_counts()
        assert await fs.read(fh, 7 * MiB + 5, 4096) == DATA[7 * MiB + 5:7 * MiB + 5 + 4096]
        assert store.calls["get"] == 1
        await fs.release(fh)

    run(body, read=ReadConfig(chunk_size=MiB, max_readahead_chunks=4))


def test_read_ahead_of_all_handles_stays_within_the_read_budget(run):
    async def body(fs, store):
        for i in range(3):
            store.put_outside(f"pve/r{i}", DATA)
        handles = []
        for i in range(3):
            inode, _ = await fs.lookup(ROOT, f"r{i}".encode())
            handles.append(await fs.open(inode.ino, os.O_RDONLY))
        got = [bytearray() for _ in handles]
        while any(len(g) < len(DATA) for g in got):  # three readers, interleaved
            for fh, g in zip(handles, got):
                g += await fs.read(fh, len(g), 256 * 1024)
        assert all(bytes(g) == DATA for g in got)
        assert 0 < fs.read_budget.peak <= 3 * MiB
        for fh in handles:
            await fs.release(fh)
        assert fs.read_budget.used == 0

    run(body, read=ReadConfig(chunk_size=MiB, max_readahead_chunks=4, readahead_budget=3 * MiB))


def test_4k_read_in_the_middle_of_a_50_gib_object_fetches_4k(run):
    huge = HugeBytes(50 << 30)

    async def body(fs, store):
        store.put_outside("pve/dump/vzdump-qemu-100.vma.zst", huge)
        d, _ = await fs.lookup(ROOT, b"dump")
        inode, s = await fs.lookup(d.ino, b"vzdump-qemu-100.vma.zst")
        assert s.size == 50 << 30
        fh = await fs.open(inode.ino, os.O_RDONLY)
        store.ranges.clear()
        middle = 25 << 30
        assert await fs.read(fh, middle + 12345, 4096) == huge[middle + 12345:middle + 12345 + 4096]
        assert [(start, end - start) for _, start, end in store.ranges] == [(middle + 12345, 4096)]
        # a second read right after it starts a sequential run: read-ahead begins,
        # within the largest window (8 chunks of 8 MiB)
        store.ranges.clear()
        await fs.read(fh, middle + 12345 + 4096, 4096)
        assert 4096 < sum(end - start for _, start, end in store.ranges) <= 8 * 8 * MiB
        await fs.release(fh)

    run(body)


def test_reads_carry_the_etag_and_switch_whole_to_a_replacement(run):
    """Another writer replaces the object under an open handle: a reader that got nothing
    yet reads the new version whole (the kernel is told the size grew); one that got
    part of the old one gets ESTALE, never new bytes after old ones."""
    old, new = b"O" * (3 * MiB), b"N" * (5 * MiB)

    async def body(fs, store):
        told = []
        fs.kernel_attrs_stale = told.append
        store.put_outside("pve/f", old)
        inode, s = await fs.lookup(ROOT, b"f")
        fs.told_kernel(inode.ino, s)
        fh = await fs.open(inode.ino, os.O_RDONLY)
        store.put_outside("pve/f", new)  # our attributes still say the old version
        got = await fs.read(fh, 0, 8 * MiB)
        assert got == new
        assert told == [inode.ino]  # longer than the kernel knows: it must ask again
        await fs.release(fh)

        fh = await fs.open(inode.ino, os.O_RDONLY)
        assert await fs.read(fh, 0, MiB) == new[:MiB]
        store.put_outside("pve/f", old)
        with pytest.raises(Stale):
            offset = MiB
            while piece := await fs.read(fh, offset, MiB):  # chunks fetched ahead are the new version
                assert piece == new[offset:offset + len(piece)]
                offset += len(piece)
        await fs.release(fh)
        fh = await fs.open(inode.ino, os.O_RDONLY)
        assert not fs.keep_cache(fh)  # the kernel's pages may be of two versions: dropped
        assert await fs.read(fh, 0, 8 * MiB) == old
        await fs.release(fh)
        fh = await fs.open(inode.ino, os.O_RDONLY)
        assert fs.keep_cache(fh)  # unchanged since: the kernel's pages are this version
        await fs.release(fh)

    run(body, read=ReadConfig(chunk_size=MiB, max_readahead_chunks=1))


class _FillingStore:
    """A store whose GETs fill the caller's buffer, as the CRT plane's do (the prefetcher
    then reuses chunk buffers), each after the delay given for its chunk. Records when
    each GET started (chunk index, trio time); the first GET of a chunk in `refuse` fails."""

    fills_buffers = True

    def __init__(self, data: bytes, chunk: int, delays: dict[int, float], refuse: frozenset[int] = frozenset()):
        self.data, self.chunk, self.delays, self.refuse = data, chunk, delays, refuse
        self.started: list[tuple[int, float]] = []

    def asked(self, index: int) -> int:
        return sum(1 for i, _ in self.started if i == index)

    async def get_range(self, key, start, end, etag=None, into=None):
        index = start // self.chunk
        self.started.append((index, trio.current_time()))
        if index in self.refuse and self.asked(index) == 1:
            raise FsError("refused")
        await trio.sleep(self.delays.get(index, 0))
        into[:end - start] = self.data[start:end]
        return memoryview(into)[:end - start]


@pytest.mark.parametrize("slow_chunk", [0.0, 0.5])
def test_a_read_keeps_its_chunk_when_a_concurrent_read_moves_past_it(slow_chunk):
    # The kernel has several reads of a file in flight: a read of chunk 2 arriving while
    # a read of chunk 1 waits used to drop chunk 1 under it: cancelled (EIO) when its GET
    # was still running, or its buffer refilled with other bytes (a wrong read, seen as
    # a wrong sha256 under faults on a real mount) when the GET had just ended.
    from s3pvefs.read.prefetcher import Prefetcher
    chunk = MiB
    data = random.Random(3).randbytes(6 * chunk)
    store = _FillingStore(data, chunk, {1: slow_chunk})

    async def main():
        async with trio.open_nursery() as nursery:
            p = Prefetcher(store, lambda: "pve/f", len(data), ReadConfig(chunk_size=chunk, max_readahead_chunks=4),
                           nursery)
            assert bytes(await p.read(0, chunk)) == data[:chunk]
            got = {}

            async def read(name, offset, size):
                got[name] = bytes(await p.read(offset, size))

            async with trio.open_nursery() as readers:
                readers.start_soon(read, "a", chunk + 4096, 128 * 1024)
                await trio.sleep(0)
                readers.start_soon(read, "b", 2 * chunk, 128 * 1024)
            # the buffers the drops gave back are refilled by later chunks meanwhile
            for offset in range(2 * chunk + 128 * 1024, len(data), 128 * 1024):
                assert bytes(await p.read(offset, 128 * 1024)) == data[offset:offset + 128 * 1024]
            p.close()
            nursery.cancel_scope.cancel()
        assert got["a"] == data[chunk + 4096:chunk + 4096 + 128 * 1024]
        assert got["b"] == data[2 * chunk:2 * chunk + 128 * 1024]

    trio.run(main)


def test_gets_that_arrived_early_make_room_for_more_while_the_reader_waits_for_a_slow_one():
    # 30 ms away GETs end out of order: counting chunks ahead, a slow chunk left only the
    # GETs behind it that had not ended in flight. Those that ended no longer count:
    # new ones start while the reader waits, up to half a window of chunks held beyond.
    from s3pvefs.read.prefetcher import Prefetcher
    chunk, window = MiB, 4
    data = random.Random(5).randbytes(12 * chunk)
    store = _FillingStore(data, chunk, {1: 10.0})

    async def main():
        async with trio.open_nursery() as nursery:
            p = Prefetcher(store, lambda: "pve/f", len(data),
                           ReadConfig(chunk_size=chunk, max_readahead_chunks=window, eager_readahead="yes"),
                           nursery)
            for offset in range(0, len(data), 256 * 1024):
                assert bytes(await p.read(offset, 256 * 1024)) == data[offset:offset + 256 * 1024]
            p.close()
        # While chunk 1's GET took 10 s, the window (4 after entering chunk 1, 2 before)
        # was refilled as the GETs behind it ended: chunks up to 1 + 4 + 2 were fetched
        # before it ended, none beyond (memory per handle: 1.5 windows + 1 chunks).
        assert sorted(i for i, t in store.started if t < 10.0) == list(range(0, 8))
        assert sorted(i for i, _ in store.started) == list(range(12))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("eager, first_read, fetched",
                         [("yes", MiB, 9), ("yes", 256 * 1024, 3), ("yes", 4096, 3), ("no", MiB, 3)])
def test_a_first_read_as_big_as_the_kernels_read_ahead_starts_the_whole_window(eager, first_read, fetched):
    # Eager (far servers), a handle's first read at offset 0 as big as the kernel's
    # read-ahead is a sequential reader (dd, cp, a restore): all 8 chunks ahead start at
    # once, since far away each of the first GETs waits for a new connection's window to
    # open. A small first read (file, head), or any first read when not eager, starts 2
    # ahead, the window doubling from there.
    from s3pvefs.read.prefetcher import Prefetcher
    chunk = 4 * MiB
    data = random.Random(9).randbytes(20 * chunk)
    store = _FillingStore(data, chunk, {i: 10.0 for i in range(1, 20)})  # in flight while we look

    async def main():
        async with trio.open_nursery() as nursery:
            p = Prefetcher(store, lambda: "pve/f", len(data), ReadConfig(chunk_size=chunk, eager_readahead=eager),
                           nursery)
            assert bytes(await p.read(0, first_read)) == data[:first_read]
            assert sorted(i for i, _ in store.started) == list(range(fetched))
            p.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_eager_read_ahead_does_not_fetch_again_a_chunk_whose_get_failed_until_it_is_read():
    # The window is topped up as GETs end; the reader's own chunk, dropped when its GET
    # failed, is fetched again by the reader's next read, not by the GETs ending behind it
    # (a server refusing it for good would be asked again at every one).
    from s3pvefs.read.prefetcher import Prefetcher
    chunk = MiB
    data = random.Random(4).randbytes(16 * chunk)
    store = _FillingStore(data, chunk, {i: 1.0 for i in range(2, 16)}, refuse=frozenset({1}))

    async def main():
        async with trio.open_nursery() as nursery:
            p = Prefetcher(store, lambda: "pve/f", len(data),
                           ReadConfig(chunk_size=chunk, max_readahead_chunks=4, eager_readahead="yes"), nursery)
            assert bytes(await p.read(0, MiB)) == data[:MiB]
            with pytest.raises(FsError):
                await p.read(MiB, MiB)
            await trio.sleep(5)  # the GETs behind it end meanwhile
            assert store.asked(1) == 1
            assert bytes(await p.read(MiB, MiB)) == data[MiB:2 * MiB]
            assert store.asked(1) == 2
            p.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
