"""How much of the bucket the mount's prefix uses, for statfs (the Proxmox usage bar).

S3 has no cheap "size of a prefix": it takes a LIST of every object under it (one
request per 1,000 objects). So it is counted in the background, once at mount and
then every ``usage_interval`` seconds, never on the statfs path: statfs reports the
last count (or nothing used until the first count is done). Uploads not yet
completed are not counted.
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
        self.used: int | None = None  # bytes at the last count
        self.objects: int | None = None

    async def count_once(self) -> None:
        used = objects = 0
        async for page in self._store.list_all(self._prefix, None):
            used += sum(o.size for o in page.objects)
            objects += len(page.objects)
        self.used, self.objects = used, objects
        log.info("usage of %s: %d bytes in %d objects", self._prefix or "the bucket", used, objects)

    async def run(self) -> None:
        """Count now and then every interval, for the life of the mount."""
        while True:
            try:
                await self.count_once()
            except StoreError as e:  # keep the last figure; try again next time
                log.warning("could not count the bucket's usage: %s", e)
            await trio.sleep(self.interval)
