"""Storage classes by place (storage_class, storage_classes).

``storage_classes = "dump=GLACIER_IR template/iso=STANDARD_IA"`` puts each new object
under that directory of the mount (the longest matching place wins) in that class,
and ``storage_class`` the rest ("" = the server's default, STANDARD). The class is
sent with every PUT, CreateMultipartUpload and CopyObject, so a rename sets the class
of its target place. Decided by the key alone, never by a request's size.

Kept in the server's default class wherever they are: the mount's object of zeros
(``.s3pvefs-zeros``, which grown files are copied from), directory markers, and a backup's side
files in dump/ (``.log``, ``.notes``, ``.protected``): Proxmox reads those in every
content view, and archive classes charge at least 128 KiB per object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from s3pvefs.errors import ConfigError
from s3pvefs.namespace.keys import mount_own

# S3's classes; Ceph RGW's placement targets may define others of the same form.
_CLASS = re.compile(r"[A-Z][A-Z0-9_]*")
ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})  # readable only after a restore
_SIDE_FILES = (".log", ".notes", ".protected")  # proxmox/names.py: a backup's side files


def _class(text: str, setting: str) -> str:
    if not _CLASS.fullmatch(text):
        raise ConfigError(f"{setting}: {text!r} is not a storage class (e.g. STANDARD_IA, GLACIER_IR)")
    return text


@dataclass(frozen=True)
class StorageClasses:
    prefix: str  # the mount's key prefix ("" = whole bucket)
    default: str | None
    places: tuple[tuple[str, str], ...]  # (directory below the mount, class), longest first

    @classmethod
    def parse(cls, prefix: str, default: str, places: str) -> StorageClasses:
        found = {}
        for word in (w for w in re.split(r"[\s;]+", places.strip()) if w):
            place, sep, name = word.partition("=")
            place = place.strip("/")
            if not sep or not place or ".." in place.split("/"):
                raise ConfigError(f"storage_classes: {word!r} is not DIRECTORY=CLASS (e.g. dump=GLACIER_IR)")
            if place in found:
                raise ConfigError(f"storage_classes: {place} is given twice")
            found[place] = _class(name, "storage_classes")
        return cls(prefix.strip("/"), _class(default, "storage_class") if default else None,
                   tuple(sorted(found.items(), key=lambda p: -len(p[0]))))

    def of(self, key: str) -> str | None:
        """The class a new object at key goes in; None: the server's default."""
        if key.endswith("/"):
            return None  # a directory marker
        rel = key[len(self.prefix) + 1:] if self.prefix else key
        if mount_own(rel):
            return None  # zeros grown files copy, bytes open files read: never in a class that needs a restore
        if rel.startswith("dump/") and rel.endswith(_SIDE_FILES):
            return None
        for place, name in self.places:
            if rel.startswith(place + "/"):
                return name
        return self.default

    def request_args(self, key: str) -> dict[str, str]:
        """StorageClass= for boto3, or nothing."""
        name = self.of(key)
        return {"StorageClass": name} if name else {}
