"""With S3 slow or down, names known before answer from the last known attributes
within cache.stale_answer_after; unknown names still wait for (and fail with) S3."""

from __future__ import annotations

import errno
import time

import pytest
import trio

from s3pvefs.config import CacheConfig
from s3pvefs.errors import FsError, NotFound, StoreError
from tests.core.conftest import FakeClock
from tests.core.helpers import ROOT

CACHE = CacheConfig(stat_ttl=10.0, negative_ttl=5.0, listing_ttl=10.0, stale_answer_after=0.05)
DOWN = StoreError("HEAD: connection refused", code="Network", transient=True)


def test_known_names_answer_while_s3_hangs_and_refresh_when_it_is_back(run):
    clock = FakeClock()

    async def body(fs, store):
        store.put_outside("pve/dump/", b"", {"mode": "16877"})
        store.put_outside("pve/dump/a.vma.zst", b"abc")
        dump, s = await fs.lookup(ROOT, b"dump")
        f, _ = await fs.lookup(dump.ino, b"a.vma.zst")
        with pytest.raises(NotFound):
            await fs.lookup(dump.ino, b"gone")
        clock.advance(60)  # every cached answer expired
        store.stall |= {"head", "list"}
        t0 = time.monotonic()
        assert (await fs.lookup(ROOT, b"dump"))[1].kind == "dir"
        assert (await fs.getattr(dump.ino)).kind == "dir"
        assert (await fs.getattr(f.ino)).size == 3
        with pytest.raises(NotFound):
            await fs.lookup(dump.ino, b"gone")  # known absent stays absent
        assert time.monotonic() - t0 < 1.0  # four answers at 0.05 s each at most
        # a name never seen cannot be answered without S3
        with trio.move_on_after(0.3) as scope:
            await fs.lookup(dump.ino, b"never-seen")
        assert scope.cancelled_caught
        # S3 is back: the background refresh (still waiting) and later lookups see changes
        store.stall.clear()
        store.put_outside("pve/dump/a.vma.zst", b"abcdef")
        clock.advance(60)
        with trio.fail_after(5):  # the refreshes stalled above finish (not a fixed sleep: a loaded host)
            while fs.resolver.fresh._running:
                await trio.sleep(0.01)
        assert (await fs.lookup(dump.ino, b"a.vma.zst"))[1].size == 6

    run(body, clock=clock, cache=CACHE)


def test_known_names_answer_while_s3_refuses(run):
    clock = FakeClock()

    async def body(fs, store):
        store.put_outside("pve/images/100/vm-100-disk-0.raw", b"x" * 10)
        images, _ = await fs.lookup(ROOT, b"images")
        clock.advance(60)
        store.fail.update(head=DOWN, list=DOWN)
        assert (await fs.lookup(ROOT, b"images"))[1].kind == "dir"
        assert (await fs.getattr(images.ino)).kind == "dir"
        with pytest.raises(FsError) as e:
            await fs.lookup(images.ino, b"100")  # never looked up: S3's error
        assert e.value.errno == errno.EIO
        store.fail.clear()
        assert (await fs.lookup(images.ino, b"100"))[1].kind == "dir"

    run(body, clock=clock, cache=CACHE)
