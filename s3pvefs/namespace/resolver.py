"""What a path is in the bucket: names, kinds and attributes, from the metadata cache
or from S3; directory listings; the objects of unlinked files still open (hidden.py)
left out of both.

Rules kept here (SEMANTICS.md says them for users):
- A directory shadows a file of the same name; a directory is a marker object
  ``dir/``, or just a common prefix, or an old ``dir_$folder$`` marker.
- A name a fresh listing shows needs only its headers (headers.py); any other name
  is one round trip of three parallel requests.
- While S3 is slow or down, a name known before answers with its last known
  attributes (freshness.py).
"""

from __future__ import annotations

import trio

from s3pvefs.config import CacheConfig
from s3pvefs.errors import single_error
from s3pvefs.namespace.freshness import Freshness
from s3pvefs.namespace.headers import CONCURRENCY, HeaderReader
from s3pvefs.namespace.hidden import HiddenObjects
from s3pvefs.namespace.keys import FOLDER_SUFFIX, KeyMapper, join_path, listable_name
from s3pvefs.namespace.metacache import Listing, MetaCache, parent_of
from s3pvefs.namespace.stat import (DIR, FILE, SPECIAL, SYMLINK, Defaults, Stat, decode, implicit_dir,
                                    is_old_style_dir, now_ns)
from s3pvefs.read.smallbodies import SmallBodies
from s3pvefs.store.base import ObjectStore


class Resolver:
    def __init__(self, store: ObjectStore, keys: KeyMapper, cache: MetaCache, defaults: Defaults,
                 hidden: HiddenObjects, nursery: trio.Nursery, cfg: CacheConfig,
                 bodies: SmallBodies | None = None, header_concurrency: int = CONCURRENCY):
        self.store, self.keys, self.cache, self.defaults, self.hidden = store, keys, cache, defaults, hidden
        self.cfg = cfg
        self.fresh = Freshness(self.fetch_stat, cache, nursery, cfg.stale_answer_after)
        self.headers = HeaderReader(store, keys, cache, defaults, nursery, hidden=hidden.is_hidden, bodies=bodies,
                                    concurrency=header_concurrency)

    # ------------------------------------------------------------------ names
    async def stat(self, path: str) -> Stat | None:
        """What path is now (or what it was last known to be, if S3 is slow or down)."""
        return await self.fresh.stat(path)

    async def fetch_stat(self, path: str) -> Stat | None:
        """Ask S3 what path is. A name the parent's fresh listing shows needs only its
        headers (headers.py: one HEAD, read ahead with its neighbours); otherwise HEAD
        of the file key, HEAD of the directory marker and a one-key LIST of the
        directory prefix, in parallel (one round trip)."""
        parent = parent_of(path)
        listing = self.cache.listings.get(parent)
        if listing is None and path and self.cache.worth_relisting(parent):
            listing = await self.fetch_listing(parent)  # cheaper than a probe of each name in it
            self.cache.put_listing(parent, listing)
        listed = listing.entries.get(path.rpartition("/")[2]) if listing is not None else None
        if listed is not None and not listed.complete:
            s = await self.headers.read(path, listed)
            if s is not None:
                return s
        key, prefix = self.keys.key(path), self.keys.dir_prefix(path)
        hidden = self.hidden.seen_by(key)  # key and everything under key/
        found: dict[str, object] = {}

        async def head_file():
            found["file"] = await self.store.head(key)

        async def head_marker():
            found["marker"] = await self.store.head(prefix)

        async def list_prefix():
            found["list"] = await self.store.list_page(prefix, "/", None, 2)

        with single_error():
            async with trio.open_nursery() as n:
                n.start_soon(head_file)
                n.start_soon(head_marker)
                n.start_soon(list_prefix)
        page, marker, info = found["list"], found["marker"], found["file"]
        children = [o for o in page.objects if o.key != prefix and not hidden(o.key, o.etag)]
        busy = bool(children or page.prefixes)
        if marker is None and self.hidden.any_under(prefix):  # maybe only unlinked files still open
            busy = await self.has_visible(prefix, marker=False)
        if marker is not None or busy:
            s = decode(marker, DIR, self.defaults) if marker else implicit_dir(self.defaults, now_ns())
        elif is_old_style_dir(info) and not hidden(key, info.etag):
            s = decode(info, DIR, self.defaults)
        elif info is not None and not hidden(key, info.etag):
            s = decode(info, FILE, self.defaults)
        else:
            self.cache.put_negative(path)
            return None
        return self.cache.put_stat(path, s)

    async def resolve(self, parent_path: str, name: str) -> Stat | None:
        """What parent_path/name is, as cheaply as the caches allow: maybe only what a
        listing says (complete=False); ``complete`` reads the headers."""
        path = join_path(parent_path, name)
        cached = self.cache.lookup(path)
        if cached is None and path not in self.cache.last_known and self.cache.worth_relisting(parent_path):
            # It answers for the names not there (cp -r asks before each create), and
            # those there need only their headers.
            self.cache.put_listing(parent_path, await self.fetch_listing(parent_path))
            cached = self.cache.lookup(path)
        if cached is False:
            return None
        if cached is not None:
            return cached
        return await self.fresh.stat(path)

    async def complete(self, path: str, s: Stat | None) -> Stat | None:
        """s with the attributes its headers hold (a listing's answer has none)."""
        if s is None or s.complete:
            return s
        return await self.fresh.stat(path)

    # ------------------------------------------------------------------ directories
    async def listing(self, path: str) -> Listing:
        listing = self.cache.listings.get(path)
        if listing is None:
            listing = await self.fetch_listing(path)
            self.cache.put_listing(path, listing)
        return listing

    async def fetch_listing(self, path: str) -> Listing:
        """A full paginated LIST of the directory at path."""
        prefix = self.keys.dir_prefix(path)
        files: dict[str, Stat] = {}
        dirs: dict[str, Stat] = {}
        t = now_ns()
        hidden = self.hidden.seen_by(prefix)
        async for page in self.store.list_all(prefix, "/"):
            for p in page.prefixes:
                name = p[len(prefix):-1]
                if self.hidden.any_under(p) and not await self.has_visible(p, marker=True):
                    continue  # only unlinked files still open are left there
                if listable_name(name):
                    dirs.setdefault(name, implicit_dir(self.defaults, t).with_(complete=False))
            for o in page.objects:
                rest = o.key[len(prefix):]
                if not rest or hidden(o.key, o.etag):
                    continue
                if rest.endswith(FOLDER_SUFFIX):
                    name = rest[: -len(FOLDER_SUFFIX)]
                    if listable_name(name):
                        dirs.setdefault(name, implicit_dir(self.defaults, t).with_(complete=False))
                elif listable_name(rest):
                    files[rest] = decode(o, FILE, self.defaults)
        return Listing({**files, **dirs})  # a directory shadows a file of the same name

    async def entries(self, path: str) -> dict[str, Stat]:
        """The directory's entries for a readdir snapshot: the listing, with what HEADs
        read; a small directory (or listing_heads) has every header read first."""
        entries = dict((await self.listing(path)).entries)
        self._merge_known(path, entries)
        unread = [name for name, s in entries.items() if not s.complete]
        if unread and (self.cfg.listing_heads or len(unread) <= self.cfg.listing_heads_below):
            await self.headers.read_all(path, unread)  # the listing shows real modes and times
            self._merge_known(path, entries)
        return entries

    def _merge_known(self, path: str, entries: dict[str, Stat]) -> None:
        """Listed entries whose headers were read (a HEAD knows more than a LIST)."""
        for name, s in entries.items():
            known = self.cache.stats.get(join_path(path, name))
            if known is None:
                continue
            # a LIST cannot tell a symlink, a FIFO or an old-style directory object from a file
            if known.kind == s.kind or (s.kind == FILE and (known.kind in (SYMLINK, SPECIAL) or
                                                            (known.kind == DIR and s.size == 0))):
                entries[name] = known

    async def old_style_marker(self, path: str) -> str | None:
        """The key of path's old-style directory object (`name`, no slash), if it has one."""
        key = self.keys.key(path)
        return key if is_old_style_dir(await self.store.head(key)) else None

    async def is_empty(self, path: str) -> bool:
        """Nothing in the bucket under the directory but its marker (and hidden objects)."""
        prefix = self.keys.dir_prefix(path)
        if self.hidden.any_under(prefix):
            return not await self.has_visible(prefix, marker=False)
        hidden = self.hidden.seen_by(prefix)
        page = await self.store.list_page(prefix, "/", None, 3)
        others = [o for o in page.objects if o.key != prefix and not hidden(o.key, o.etag)]
        return not others and not page.prefixes

    async def has_visible(self, prefix: str, *, marker: bool) -> bool:
        """Whether any object under prefix is not a hidden one (an unlinked file still
        open); the prefix's own marker counts if ``marker``. A full LIST, so only for
        prefixes that hold hidden keys: a delimited LIST shows such a prefix even when
        nothing else is left in it."""
        hidden = self.hidden.seen_by(prefix)
        async for page in self.store.list_all(prefix, None):
            if any((marker or o.key != prefix) and not hidden(o.key, o.etag)
                   for o in page.objects):
                return True
        return False

    async def objects_under(self, path: str) -> list:
        """Every object under the directory at path (not hidden ones): a directory rename."""
        out = []
        hidden = self.hidden.seen_by(self.keys.dir_prefix(path))
        async for page in self.store.list_all(self.keys.dir_prefix(path), None):
            out += [o for o in page.objects if not hidden(o.key, o.etag)]
        return out
