"""statfs: the configured capacity, less the bytes counted in the background."""

from __future__ import annotations

from s3pvefs.config import MountOptions
from s3pvefs.errors import StoreError
from tests.core.helpers import ROOT, make_file

GiB = 1 << 30


def test_statfs_reports_the_last_count_and_never_asks_s3(run):
    async def body(fs, store):
        s = fs.statfs()
        assert (s.blocks, s.free_blocks) == (GiB // 4096, GiB // 4096)  # nothing counted yet
        store.put_outside("pve/dump/a.vma.zst", b"x" * 10_000)
        store.put_outside("pve/template/iso/b.iso", b"y" * 5000)
        store.put_outside("elsewhere/c", b"z" * 99_999)  # outside the prefix
        await make_file(fs, ROOT, b"d", b"w" * 1000)
        await fs.usage.count_once()
        assert (fs.usage.used, fs.usage.objects) == (16_000, 3)
        store.reset_counts()
        s = fs.statfs()
        assert sum(store.calls.values()) == 0
        assert s.blocks == GiB // 4096 and s.blocks - s.free_blocks == 4  # 16,000 bytes: 4 blocks
        store.fail["list"] = StoreError("LIST: down", code="Network", transient=True)
        try:
            await fs.usage.count_once()
        except StoreError:
            pass
        assert fs.usage.used == 16_000  # the last figure stays

    run(body, mount=MountOptions(capacity=GiB))


def test_a_bucket_fuller_than_the_capacity_shows_full_not_dead(run):
    async def body(fs, store):
        store.put_outside("pve/big", b"x" * 3 * 4096)
        await fs.usage.count_once()
        s = fs.statfs()
        assert s.blocks == 3 and s.free_blocks == 0  # blocks never 0: Proxmox would call it dead

    run(body, mount=MountOptions(capacity=8192))


def test_this_mounts_changes_count_at_once_without_a_recount(run):
    async def body(fs, store):
        store.put_outside("pve/dump/old.vma.zst", b"x" * 10_000)
        await fs.usage.count_once()
        assert fs.usage.used == 10_000
        ino = await make_file(fs, ROOT, b"a", b"w" * 3000)  # a new file
        assert fs.usage.used == 13_000
        await fs.setattr(ino, size=1000)  # truncated: committed at once
        assert fs.usage.used == 11_000
        await fs.rename(ROOT, b"a", ROOT, b"b")  # moved: the same bytes
        assert fs.usage.used == 11_000
        await make_file(fs, ROOT, b"c", b"w" * 500)
        await fs.rename(ROOT, b"c", ROOT, b"b")  # over b: b's 1,000 bytes go
        assert fs.usage.used == 10_500
        dump, _ = await fs.lookup(ROOT, b"dump")
        await fs.unlink(dump.ino, b"old.vma.zst")
        assert fs.usage.used == 500
        assert fs.usage.objects == 1  # no recount: the figure is the first count's

    run(body, mount=MountOptions(capacity=GiB))


def test_changes_during_a_count_are_neither_lost_nor_counted_twice(run):
    async def body(fs, store):
        for i in range(2500):  # three pages
            store.put_outside(f"pve/f{i:04d}", b"x")
        pages = []
        real = store.list_page

        async def list_page(prefix, delimiter="/", *args, **kwargs):
            if delimiter is None:  # the count's pages (the unlink's lookup lists with "/")
                pages.append(prefix)
                if len(pages) == 2:  # between the first and second page: one key before, one after
                    await fs.unlink(ROOT, b"f0001")
                    await make_file(fs, ROOT, b"f2999", b"y" * 100)
            return await real(prefix, delimiter, *args, **kwargs)
        store.list_page = list_page
        await fs.usage.count_once()
        assert fs.usage.used == 2500 - 1 + 100

    run(body, mount=MountOptions(capacity=GiB))
