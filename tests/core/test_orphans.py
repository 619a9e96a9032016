"""At mount, multipart uploads left by a killed daemon (no part for stale_upload_idle)
are aborted; uploads still getting parts (another node's backup) are not."""

from __future__ import annotations

import trio

from s3pvefs.store.memory import MemoryStore
from s3pvefs.write.orphans import abort_stale_uploads


def test_only_idle_uploads_under_the_prefix_are_aborted():
    async def main():
        store = MemoryStore()
        dead = await store.create_multipart("pve/dump/a.vma.dat", {})
        await store.upload_part("pve/dump/a.vma.dat", dead, 1, b"x" * 10)
        alive = await store.create_multipart("pve/dump/b.vma.dat", {})
        await store.upload_part("pve/dump/b.vma.dat", alive, 1, b"y" * 10)
        elsewhere = await store.create_multipart("other/c", {})
        never_a_part = await store.create_multipart("pve/d", {})
        store.uploads[dead].last_part -= 7200  # its writer died two hours ago
        store.uploads[elsewhere].initiated -= 7200
        store.uploads[never_a_part].initiated -= 7200
        aborted = await abort_stale_uploads(store, "pve/", 3600)
        assert sorted(aborted) == ["pve/d", "pve/dump/a.vma.dat"]
        assert set(store.uploads) == {alive, elsewhere}
        assert await abort_stale_uploads(store, "pve/", 3600) == []  # nothing more to do

    trio.run(main)
