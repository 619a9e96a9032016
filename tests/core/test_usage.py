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
