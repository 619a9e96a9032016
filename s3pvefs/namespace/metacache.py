"""Metadata caches (cachetools TTL caches): attributes by path, negative lookups,
and directory listings. The clock is injectable so tests control expiry.

Every change this mount makes calls ``invalidate``/``put_stat``/``put_negative``
for the paths it touched, which also update the parent's cached listing in place,
so the mount sees its own writes at once and a directory it is filling (``cp -r``)
keeps answering lookups of new names from its listing, without a request each.
Other writers' changes show up within the TTLs. When a directory's listing expires
while names in it are still being looked up, it is listed again (a request per
1,000 names), which answers for every name in it or not (three requests each
otherwise).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from cachetools import LRUCache, TTLCache

from s3pvefs.config import CacheConfig
from s3pvefs.namespace.stat import DIR, Stat


@dataclass(frozen=True)
class Listing:
    """One directory's entries as read by a full paginated LIST."""

    entries: dict[str, Stat]  # name -> attributes (complete=False for files)


LIST_PAGE = 1000  # entries one ListObjectsV2 request returns
RELIST_PAGES = 20  # a recently listed directory this big is listed again rather than probed name by name


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


class MetaCache:
    def __init__(self, cfg: CacheConfig, clock: Callable[[], float] = time.monotonic):
        self.stats: TTLCache[str, Stat] = TTLCache(cfg.stat_max_entries, cfg.stat_ttl, timer=clock)
        self.negative: TTLCache[str, bool] = TTLCache(cfg.stat_max_entries, cfg.negative_ttl, timer=clock)
        self.listings: TTLCache[str, Listing] = TTLCache(cfg.listing_max_entries, cfg.listing_ttl, timer=clock)
        # The last answer for every path, past its TTL: what to say while S3 is slow or
        # down (namespace/freshness.py). Stat, or False for "not there".
        self.last_known: LRUCache[str, Stat | bool] = LRUCache(cfg.stat_max_entries)
        # How many entries recently listed directories had, kept past their listings.
        self.listed_sizes: TTLCache[str, int] = TTLCache(cfg.listing_max_entries, 6 * cfg.listing_ttl,
                                                         timer=clock)
        # Directory -> the time a name in it last changed here, while its marker does not
        # hold it yet (fs/dirtimes.py): attributes read from S3 meanwhile show it.
        self.pending_dir_times: dict[str, int] = {}

    def lookup(self, path: str) -> Stat | None | bool:
        """Cached attributes, False if known absent, None if unknown."""
        s = self.stats.get(path)
        if s is not None:
            return s
        if path in self.negative:
            return False
        parent, name = parent_of(path), path.rpartition("/")[2]
        listing = self.listings.get(parent)
        if listing is not None:
            return listing.entries.get(name, False)
        return None

    def put_stat(self, path: str, s: Stat) -> Stat:
        """Cache path's attributes; what is cached (with a pending directory time)."""
        if s.kind == DIR and (t := self.pending_dir_times.get(path)) is not None:
            s = s.with_(mtime_ns=max(s.mtime_ns, t), ctime_ns=max(s.ctime_ns, t))
        self.negative.pop(path, None)
        self.stats[path] = s
        if s.complete:  # what answers in an outage must be what the headers said
            self.last_known[path] = s
        self._listed(path, s)
        return s

    def put_negative(self, path: str) -> None:
        self.stats.pop(path, None)
        self.negative[path] = True
        self.last_known[path] = False
        self._listed(path, None)

    def _listed(self, path: str, s: Stat | None) -> None:
        """Keep the parent's cached listing (or names) true to a change made here."""
        parent, name = parent_of(path), path.rpartition("/")[2]
        listing = self.listings.get(parent)
        if listing is not None:
            if s is None:
                listing.entries.pop(name, None)
            else:
                listing.entries[name] = s

    def put_listing(self, path: str, listing: Listing) -> None:
        self.listings[path] = listing
        self.listed_sizes[path] = len(listing.entries)

    def worth_relisting(self, directory: str) -> bool:
        """True when directory's listing expired a short while ago and is at most
        RELIST_PAGES pages: listing it again (a request per 1,000 names) answers this
        lookup and the next ones, each with one HEAD of its headers at most, where a
        name not in a listing costs three requests (`ls -l` of a big directory takes
        longer than the listing lasts)."""
        size = self.listed_sizes.get(directory)
        return directory not in self.listings and size is not None and size <= RELIST_PAGES * LIST_PAGE

    def invalidate(self, path: str) -> None:
        """Forget what is known about path (also as an entry of its parent's listing)."""
        self.stats.pop(path, None)
        self.negative.pop(path, None)
        self.listings.pop(path, None)
        self._listed(path, None)

    def invalidate_tree(self, path: str) -> None:
        """A directory was renamed or removed: drop everything at or below it."""
        below = path + "/"
        for cache in (self.stats, self.negative, self.listings, self.last_known, self.pending_dir_times):
            for key in [k for k in list(cache.keys()) if k == path or k.startswith(below)]:
                cache.pop(key, None)
        self.listings.pop(parent_of(path), None)
