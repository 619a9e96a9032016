"""Core tier: Filesystem against MemoryStore, no kernel.

``run(body, **config)`` runs ``async def body(fs, store)`` under trio.run with a
nursery and a fresh Filesystem whose cache_dir is under tmp_path. Config sections
(store=, cache=, write=, read=, mount=) and ``clock=`` may be given; ``store=``
may also be a ready MemoryStore (so a test can pre-populate it)."""

from __future__ import annotations

import dataclasses

import pytest
import trio

from s3pvefs.config import CacheConfig, Config, StoreConfig, WriteConfig
from s3pvefs.fs.filesystem import Filesystem
from s3pvefs.store.memory import MemoryStore


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def run(tmp_path):
    def runner(body, *, store: MemoryStore | None = None, clock=None, prefix: str = "pve", **sections):
        store = MemoryStore() if store is None else store
        cache = sections.pop("cache", CacheConfig())
        cache = dataclasses.replace(cache, cache_dir=str(tmp_path / "cache"))
        write = sections.pop("write", WriteConfig())
        if write.outage_patience == WriteConfig.outage_patience:  # a failure is final at once, unless asked
            write = dataclasses.replace(write, outage_patience=0.0)
        sections["write"] = write
        cfg = Config(store=StoreConfig(bucket="bucket", prefix=prefix), cache=cache, **sections)
        kwargs = {} if clock is None else {"clock": clock}

        async def main():
            async with trio.open_nursery() as nursery:
                fs = Filesystem(store, cfg, nursery, **kwargs)
                await body(fs, store)
                nursery.cancel_scope.cancel()

        try:
            trio.run(main)
        except BaseExceptionGroup as group:  # the nursery wraps what body raised
            if len(group.exceptions) == 1:
                raise group.exceptions[0]
            raise
        return store

    return runner
