"""How much of the bucket the mount's prefix uses, for statfs (the Proxmox usage bar).

S3 has no cheap "size of a prefix": it takes a LIST of every object under it (one
request per 1,000 objects). So it is counted in the background, once at mount and
then every ``usage_interval`` seconds (6 h), never on the statfs path: statfs reports
the last count (or nothing used until the first count is done). Between counts, this
mount's own commits, deletes and overwrites are applied as they happen (``changed``);
the recount catches up with other nodes and tools. Uploads not yet completed are not
counted.
"""

from __future__ import annotations

import logging

import trio

from s3pvefs.errors import StoreError
from s3pvefs.store.base import ObjectStore

log = logging.getLogger(__name__)


class UsageMeter:
    def __init__(self, store: ObjectStore, prefix: str, interval: float):
        self._store = store
        self._prefix = prefix  # "" or "some/prefix/"
        self.interval = interval
        self.used: int | None = None  # bytes at the last count, with this mount's changes since
        self._cursor: str | None = None  # the last key a count under way has listed
        self._missed = 0  # changes to keys it had already listed
        self.objects: int | None = None

    def changed(self, key: str, delta: int) -> None:
        """This mount committed, overwrote or deleted the object at key: delta bytes
        more (or fewer)."""
        if self.used is not None:
            self.used = max(0, self.used + delta)
        if self._cursor is not None and key <= self._cursor:
            self._missed += delta  # a count under way has listed that key already

    async def count_once(self) -> None:
        used = objects = 0
        self._cursor, self._missed = "", 0
        try:
            async for page in self._store.list_all(self._prefix, None):
                used += sum(o.size for o in page.objects)
                objects += len(page.objects)
                if page.objects:
                    self._cursor = page.objects[-1].key
            self.used, self.objects = max(0, used + self._missed), objects
        finally:
            self._cursor = None
        log.info("usage of %s: %d bytes in %d objects", self._prefix or "the bucket", used, objects)

    async def run(self) -> None:
        """Count now and then every interval, for the life of the mount."""
        while True:
            try:
                await self.count_once()
            except StoreError as e:  # keep the last figure; try again next time
                log.warning("could not count the bucket's usage: %s", e)
            await trio.sleep(self.interval)
