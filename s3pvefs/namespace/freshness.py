"""Attributes that never wait long on the network for a name already known.

Proxmox's status daemon stats the storage and its content directories every 10 s
with a 2 s timeout and marks the storage dead when that is exceeded. When the
cached attributes of a name have expired but the mount knew them before (the
cache keeps the last answer for every path, ``MetaCache.last_known``), the S3
request goes out in the background and the caller waits at most ``patience``;
if S3 has not answered by then, or fails, the last known answer is returned and
the background request updates the cache when (if) it completes. Names never
seen before wait for S3 like before (bounded by the store's timeouts).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from s3pvefs.errors import StoreError
from s3pvefs.namespace.metacache import MetaCache
from s3pvefs.namespace.stat import Stat

log = logging.getLogger(__name__)


class _Refresh:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.started = trio.current_time()
        self.result: Stat | None = None
        self.error: Exception | None = None


OUTAGE_MEMORY = 5.0  # after S3 failed or stayed silent, known names answer at once this long


class Freshness:
    def __init__(self, fetch: Callable[[str], Awaitable[Stat | None]], cache: MetaCache,
                 nursery: trio.Nursery, patience: float):
        self._fetch = fetch
        self._cache = cache
        self._nursery = nursery
        self.patience = patience
        self._running: dict[str, _Refresh] = {}
        self._down_until = float("-inf")  # trio time until which S3 counts as unreachable

    async def stat(self, path: str) -> Stat | None:
        """What path is now, or what it was last known to be if S3 is slow or down."""
        known = self._cache.last_known.get(path)
        if known is None:
            return await self._fetch(path)
        refresh = self._running.get(path)
        if refresh is None:
            refresh = self._running[path] = _Refresh()
            self._nursery.start_soon(self._run, path, refresh)
        now = trio.current_time()
        # Patience is spent once per refresh, and not at all while S3 is known to be down:
        # a stat is a lookup and a getattr, and pvestatd stats several directories.
        wait = 0.0 if now < self._down_until else max(0.0, self.patience - (now - refresh.started))
        with trio.move_on_after(wait):
            await refresh.done.wait()
        if refresh.done.is_set() and refresh.error is None:
            return refresh.result
        self._down_until = max(self._down_until, trio.current_time() + OUTAGE_MEMORY)
        log.debug("%s: S3 %s, answering from the last known attributes", path,
                  "failed" if refresh.done.is_set() else "is slow")
        return known or None

    async def _run(self, path: str, refresh: _Refresh) -> None:
        try:
            refresh.result = await self._fetch(path)
            self._down_until = float("-inf")  # it answers again
        except StoreError as e:  # the caller answers from what it knew
            refresh.error = e
        except Exception as e:  # noqa: BLE001 - a background task must not kill the mount
            log.exception("refreshing %s", path)
            refresh.error = e
        finally:
            refresh.done.set()
            del self._running[path]
