"""Whole bodies of small files, read with their headers.

Proxmox's content views stat every name in `dump/` and then read every `.notes`
file. The headers of a listed name are read anyway (namespace/headers.py); for a file
of at most SMALL_FILE bytes one GET brings its body with them for the same round
trip, so opening and reading it then costs nothing. Bodies are kept by ETag (another
version is never served for this one) and least recently used go first past LIMIT
bytes in all.
"""

from __future__ import annotations

from collections import OrderedDict

SMALL_FILE = 16 * 1024  # bytes: notes, snippets, small configs; a GET costs what a HEAD does
LIMIT = 32 * 1024 * 1024  # bytes of bodies kept in all


class SmallBodies:
    def __init__(self, limit: int = LIMIT):
        self._limit = limit
        self._bodies: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # key -> (etag, body)
        self._used = 0
        self.hits = 0

    def put(self, key: str, etag: str, body: bytes) -> None:
        if len(body) > SMALL_FILE or not etag:
            return
        self.drop(key)
        self._bodies[key] = (etag, body)
        self._used += len(body)
        while self._used > self._limit:
            _, (_, old) = self._bodies.popitem(last=False)
            self._used -= len(old)

    def get(self, key: str, etag: str | None) -> bytes | None:
        """The body of that version of key, if kept."""
        kept = self._bodies.get(key)
        if kept is None or etag is None or kept[0] != etag:
            return None
        self._bodies.move_to_end(key)
        self.hits += 1
        return kept[1]

    def drop(self, key: str) -> None:
        kept = self._bodies.pop(key, None)
        if kept is not None:
            self._used -= len(kept[1])
