"""File attributes and their s3fs-compatible encoding in x-amz-meta-* headers."""

from __future__ import annotations

import stat as st
import time
from dataclasses import dataclass

from s3pvefs.store.base import ObjectInfo

FILE, DIR, SYMLINK = "file", "dir", "symlink"
# A FIFO, socket or device node: an empty object whose mode header says the type (and
# x-amz-meta-rdev the device), as s3fs stores them. The kernel serves their opens.
SPECIAL = "special"
_KIND_BITS = {FILE: st.S_IFREG, DIR: st.S_IFDIR, SYMLINK: st.S_IFLNK}
SPECIAL_TYPES = frozenset({st.S_IFIFO, st.S_IFSOCK, st.S_IFCHR, st.S_IFBLK})
RDEV_MAX = 0xFFFF_FFFF  # dev_t as FUSE carries it (32 bits)


@dataclass(frozen=True)
class Stat:
    kind: str
    mode: int  # full st_mode, type bits included
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    etag: str | None = None
    # False when the attributes come from a LIST, which carries no user metadata:
    # mode/uid/gid/times are defaults until a HEAD reads the headers.
    complete: bool = True
    rdev: int = 0  # device number of a SPECIAL character or block device

    def with_(self, **changes) -> "Stat":
        # A copy with the changes set. dataclasses.replace would rebuild it through
        # __init__ (5 us): too much for a call on every write, 2,048 for `dd bs=512` of 1 MiB.
        fields = self.__dict__
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise TypeError(f"Stat has no field {sorted(unknown)[0]!r}")
        new = object.__new__(type(self))
        new.__dict__.update(fields, **changes)
        return new


@dataclass(frozen=True)
class Defaults:
    """Attributes for objects that carry no metadata (mount options)."""

    uid: int = 0
    gid: int = 0
    file_mode: int = 0o644
    dir_mode: int = 0o755


def now_ns() -> int:
    return time.time_ns()


def kind_of_mode(mode: int) -> str:
    if st.S_ISDIR(mode):
        return DIR
    if st.S_ISLNK(mode):
        return SYMLINK
    if st.S_IFMT(mode) in SPECIAL_TYPES:
        return SPECIAL
    return FILE


def new_stat(kind: str, perm: int, uid: int, gid: int, size: int = 0, t_ns: int | None = None) -> Stat:
    t = now_ns() if t_ns is None else t_ns
    return Stat(kind, _KIND_BITS[kind] | (perm & 0o7777), uid, gid, size, t, t, t)


def format_time(t_ns: int) -> str:
    sec, ns = divmod(t_ns, 1_000_000_000)
    return f"{sec}.{ns:09d}" if ns else str(sec)


def parse_time(text: str) -> int | None:
    """'1700000000', '1700000000.123456789' (s3fs) or a float (rclone) -> ns."""
    text = text.strip()
    whole, _, frac = text.partition(".")
    if not whole.lstrip("-").isdigit() or (frac and not frac.isdigit()):
        return None
    try:  # isdigit() also passes '--5' and '²', which int() rejects
        return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    except ValueError:
        return None


def encode_metadata(s: Stat) -> dict[str, str]:
    meta = {
        "mode": str(s.mode),
        "uid": str(s.uid),
        "gid": str(s.gid),
        "mtime": format_time(s.mtime_ns),
        "ctime": format_time(s.ctime_ns),
        "atime": format_time(s.atime_ns),
    }
    if s.kind == SPECIAL:
        meta["rdev"] = str(s.rdev)  # as s3fs writes it for every mknod
    return meta


# What a header may hold to be used; anything else falls back to the defaults (a foreign
# object must never make a name, or its whole directory, unreadable, nor show 1969 or
# the year 3170843). uid_t is 32 bits and (uid_t)-1 means "no owner"; times are int64
# nanoseconds in the kernel's and pyfuse3's structures, and no object predates 1970.
ID_MAX = 0xFFFF_FFFE
MODE_MAX = 0o177777
TIME_NS_MAX = (1 << 63) - 1


def _int(meta: dict[str, str], name: str, low: int, high: int) -> int | None:
    try:
        value = int(meta[name])
    except (KeyError, ValueError, TypeError):
        return None
    return value if low <= value <= high else None


def _time(meta: dict[str, str], name: str) -> int | None:
    ns = parse_time(meta[name]) if name in meta else None
    return ns if ns is not None and 0 <= ns <= TIME_NS_MAX else None


def last_modified_ns(info: ObjectInfo) -> int:
    """The object's LastModified in ns (via whole microseconds: a float of epoch seconds
    cannot hold nanoseconds exactly)."""
    return min(max(0, round(info.last_modified * 1_000_000) * 1000), TIME_NS_MAX)


def decode(info: ObjectInfo, kind: str, defaults: Defaults) -> Stat:
    """Attributes of an object; kind is what the key says (a 'dir/' key is a DIR).

    Header values that are missing, malformed or out of range fall back to the
    defaults (mode, owner) or to LastModified (times), so a foreign object never makes
    a name unreadable.
    """
    meta = info.metadata or {}
    lm_ns = last_modified_ns(info)
    mode = _int(meta, "mode", 0, MODE_MAX)
    if mode is None:
        mode = _KIND_BITS[kind] | (defaults.dir_mode if kind == DIR else defaults.file_mode)
    elif kind == DIR or st.S_IFMT(mode) not in (st.S_IFREG, st.S_IFLNK, *SPECIAL_TYPES):
        # The key decides directories both ways (a 'k' whose header says S_IFDIR is
        # still a file, a 'k/' marker saying S_IFIFO a directory); bare permission bits
        # get the key's type.
        mode = _KIND_BITS[kind] | st.S_IMODE(mode)
    mtime = _time(meta, "mtime")
    mtime = lm_ns if mtime is None else mtime
    ctime, atime = _time(meta, "ctime"), _time(meta, "atime")
    # ctime is when the object last changed in any way: a rename's copy, a chmod's copy
    # in place, a marker rewritten all make a new LastModified without touching the header
    ctime = max(mtime if ctime is None else ctime, lm_ns if info.metadata is not None else 0)
    uid, gid = _int(meta, "uid", 0, ID_MAX), _int(meta, "gid", 0, ID_MAX)
    return Stat(
        kind=kind_of_mode(mode),
        mode=mode,
        uid=defaults.uid if uid is None else uid,
        gid=defaults.gid if gid is None else gid,
        size=0 if kind == DIR else info.size,
        mtime_ns=mtime,
        ctime_ns=ctime,
        atime_ns=mtime if atime is None else atime,
        etag=info.etag,
        complete=info.metadata is not None,
        rdev=(_int(meta, "rdev", 0, RDEV_MAX) or 0) if st.S_IFMT(mode) in (st.S_IFCHR, st.S_IFBLK) else 0,
    )


# What older s3fs versions and some GUIs mark a directory with: a zero-byte object
# "name" (no trailing slash) of this content type.
OLD_STYLE_DIR_TYPES = ("application/x-directory", "httpd/unix-directory")


def is_old_style_dir(info: ObjectInfo | None) -> bool:
    return info is not None and info.size == 0 and \
        (info.content_type or "").split(";")[0].strip().lower() in OLD_STYLE_DIR_TYPES


def implicit_dir(defaults: Defaults, t_ns: int) -> Stat:
    """A directory that exists only as a common prefix (no marker object)."""
    return new_stat(DIR, defaults.dir_mode, defaults.uid, defaults.gid, 0, t_ns)
