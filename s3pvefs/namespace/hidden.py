"""Objects of unlinked files that are still open.

POSIX lets an open file outlive its name. Its data is in S3 (or partly), so its
object stays at its key, hidden from this mount's listings and lookups, and is
deleted when the last handle closes. A new file taking the name on this mount first
has it copied aside (fs/filesystem.py, _keep_hidden_bytes): it is then hidden there.
Another writer's object at that key meanwhile (another node) costs the hidden file its
bytes: its handles get ESTALE, and its last close deletes nothing.
"""

from __future__ import annotations


class HiddenObjects:
    def __init__(self, journal=None) -> None:
        self._by_key: dict[str, tuple[str, object]] = {}  # key -> (etag, owner)
        # Written down on local disk (write/uploadlog.py) while hidden: the next mount
        # deletes what a daemon killed before the last close left.
        self._journal = journal

    def hide(self, key: str, etag: str, owner: object) -> None:
        self._by_key[key] = (etag, owner)
        if self._journal is not None:
            self._journal.hidden(key, etag)

    def _gone(self, key: str) -> None:
        if self._journal is not None:
            self._journal.unhidden(key)

    def entries(self) -> list[tuple[str, str, object]]:
        """(key, etag, owner) of every object hidden now."""
        return [(k, e, o) for k, (e, o) in self._by_key.items()]

    def holds(self, key: str, owner: object) -> bool:
        """The object at key is still owner's (nothing was written over it)."""
        entry = self._by_key.get(key)
        return entry is not None and entry[1] is owner

    def is_hidden(self, key: str, etag: str | None) -> bool:
        """A listed or fetched object is one of them (same key, same ETag)."""
        entry = self._by_key.get(key)
        return entry is not None and entry[0] == etag

    def any_under(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self._by_key)

    def seen_by(self, prefix: str):
        """is_hidden for the answer of a LIST of prefix about to be sent: an object
        hidden when it was sent counts as hidden still (its last close may delete it
        and unhide it while the LIST is under way, and the answer may predate the delete)."""
        then = {k: e for k, (e, _) in self._by_key.items() if k.startswith(prefix)}
        return lambda key, etag: self.is_hidden(key, etag) or (etag is not None and then.get(key) == etag)

    def move(self, key: str, new_key: str, etag: str, owner: object) -> None:
        """owner's hidden object was copied to new_key (etag), where it is hidden now. Not
        journaled: the copy has a record of its own, and the object at key keeps its
        record until the caller has deleted it there."""
        if self.holds(key, owner):
            del self._by_key[key]
        self._by_key[new_key] = (etag, owner)

    def owner_of(self, key: str) -> object | None:
        entry = self._by_key.get(key)
        return entry[1] if entry is not None else None

    def keys(self) -> list[str]:
        return list(self._by_key)

    def unhide(self, key: str) -> None:
        """Another object was written at key."""
        if self._by_key.pop(key, None) is not None:
            self._gone(key)

    def etag_of(self, key: str, owner: object) -> str | None:
        """The ETag of owner's hidden object at key (None: not owner's any more)."""
        entry = self._by_key.get(key)
        return entry[0] if entry is not None and entry[1] is owner else None

    def take(self, key: str, owner: object) -> str | None:
        """At owner's last close: the ETag to delete at key, if the object is still its."""
        entry = self._by_key.get(key)
        if entry is None or entry[1] is not owner:
            return None
        del self._by_key[key]
        self._gone(key)
        return entry[0]
