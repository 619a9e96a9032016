"""What Proxmox VE would list in a bucket used as a dir storage, read straight from S3.

Only the ObjectStore protocol is used (list_all, get_range), so this runs against
S3Store and, in tests, MemoryStore. Requests: one paginated LIST for each directory of
the layout (the storage root, dump/, template/, template/iso/, template/cache/,
snippets/, import/ with delimiter '/', images/ without), all at once, then one ranged
GET per ``.notes`` file (at most ``NOTES_MAX`` bytes, ``NOTES_CONCURRENCY`` at a time).
Object headers are never read: sizes and dates come from the LIST.

Directory markers (``dir/``, ``dir_$folder$``) are directories, not entries. Anything
that is not a volume or a side file of a backup present is reported as "other" with
the reason; directories outside the layout are reported once, not walked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import trio

from s3pvefs.errors import StoreError, single_error
from s3pvefs.namespace.keys import FOLDER_SUFFIX, listable_name, mount_own
from s3pvefs.proxmox import names
from s3pvefs.proxmox.names import Backup, Image, ImportFile, Iso, Other, SideFile, Snippet, Template
from s3pvefs.store.objectlock import LockState
from s3pvefs.store.base import ObjectInfo, ObjectStore

NOTES_MAX = 64 * 1024  # notes longer than this are cut (Proxmox's are a few lines)
NOTES_CONCURRENCY = 16
NOT_VISIBLE = "not visible through a mount (a name that is empty, '.', '..' or longer than 255 bytes)"

# (directory below the storage root, delimiter): what is listed.
_LISTINGS = (("", "/"), (names.DUMP, "/"), ("template/", "/"), (names.ISO, "/"), (names.VZTMPL, "/"),
             (names.IMAGES, None), (names.SNIPPETS, "/"), (names.IMPORT, "/"))


@dataclass
class BackupItem:
    path: str  # below the storage root: dump/<name>
    size: int
    last_modified: float  # epoch seconds (S3 LastModified)
    info: Backup
    protected: bool = False  # <archive>.protected is there
    log: bool = False  # the job log is there
    notes: str | None = None  # content of <archive>.notes (UTF-8, at most NOTES_MAX bytes)
    notes_truncated: bool = False
    storage_class: str | None = None  # from the LIST (None: not said, i.e. STANDARD)
    lock: LockState | None = None  # S3 Object Lock, read by HEAD when the bucket has it


@dataclass(frozen=True)
class VolumeItem:
    path: str
    size: int
    last_modified: float
    info: Image | Iso | Template | Snippet | ImportFile
    storage_class: str | None = None


@dataclass(frozen=True)
class OtherItem:
    path: str  # a directory ends in '/'
    size: int | None  # None for a directory
    last_modified: float | None
    reason: str
    storage_class: str | None = None


@dataclass
class Inventory:
    bucket: str
    prefix: str
    backups: list[BackupItem] = field(default_factory=list)  # by VMID, date, name
    images: list[VolumeItem] = field(default_factory=list)  # by VMID, name
    isos: list[VolumeItem] = field(default_factory=list)
    templates: list[VolumeItem] = field(default_factory=list)
    snippets: list[VolumeItem] = field(default_factory=list)
    imports: list[VolumeItem] = field(default_factory=list)
    other: list[OtherItem] = field(default_factory=list)  # by path

    def is_empty(self) -> bool:
        return not any((self.backups, self.images, self.isos, self.templates, self.snippets,
                        self.imports, self.other))


async def _list(store: ObjectStore, prefix: str, delimiter: str | None) \
        -> tuple[list[ObjectInfo], list[str]]:
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    async for page in store.list_all(prefix, delimiter):
        objects.extend(page.objects)
        prefixes.extend(page.prefixes)
    return objects, prefixes


def _collapse_images(path: str) -> str:
    """images/ is listed without delimiter: a key below a directory that is not walked
    (images/<not digits>/…, images/<vmid>/<dir>/…) stands for that directory."""
    parts = path.split("/")
    if len(parts) > 2 and not names.is_vmid_dir(parts[1]):
        return "/".join(parts[:2]) + "/"
    if len(parts) > 3:
        return "/".join(parts[:3]) + "/"
    return path


async def build(store: ObjectStore, prefix: str, bucket: str = "", object_lock: bool = False) -> Inventory:
    """The inventory of the storage whose root is ``prefix`` ('' = the whole bucket);
    object_lock: the bucket has it, each archive's lock is read (one HEAD each)."""
    root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    results: dict[str, tuple[list[ObjectInfo], list[str]]] = {}

    async def list_one(directory: str, delimiter: str | None) -> None:
        results[directory] = await _list(store, root + directory, delimiter)

    with single_error():
        async with trio.open_nursery() as nursery:
            for directory, delimiter in _LISTINGS:
                nursery.start_soon(list_one, directory, delimiter)

    # path below the root -> the object there, or None for a directory
    entries: dict[str, ObjectInfo | None] = {}
    for directory, _ in _LISTINGS:
        objects, prefixes = results[directory]
        for p in prefixes:
            entries.setdefault(p[len(root):], None)
        for obj in objects:
            path = obj.key[len(root):]
            if directory == names.IMAGES:
                collapsed = _collapse_images(path)
                if collapsed != path:
                    entries.setdefault(collapsed, None)
                    continue
            if path.endswith("/"):  # a directory marker: the directory is there
                if path != directory:
                    entries.setdefault(path, None)
            elif path.endswith(FOLDER_SUFFIX) or not path:
                continue
            else:
                entries[path] = obj

    inv = Inventory(bucket=bucket, prefix=root.rstrip("/"))
    dump_files = {p[len(names.DUMP):]: o for p, o in entries.items()
                  if o is not None and p.startswith(names.DUMP) and "/" not in p[len(names.DUMP):]}
    side_files: list[tuple[str, ObjectInfo, SideFile]] = []
    for path, obj in sorted(entries.items()):
        if mount_own(path):  # the mount's own objects (zeros, bytes of open files): nobody's file
            continue
        components = (path[:-1] if path.endswith("/") else path).split("/")
        if not all(listable_name(c) for c in components):
            kind: object = Other(NOT_VISIBLE)
        else:
            kind = names.classify(path)
        if kind is None:
            continue
        if isinstance(kind, Other):
            inv.other.append(OtherItem(path, obj.size if obj else None, obj.last_modified if obj else None,
                                       kind.reason, obj.storage_class if obj else None))
        elif isinstance(kind, SideFile):
            side_files.append((path, obj, kind))
        elif isinstance(kind, Backup):
            inv.backups.append(BackupItem(path, obj.size, obj.last_modified, kind,
                                          protected=kind.protected_name in dump_files,
                                          log=kind.log_name is not None and kind.log_name in dump_files,
                                          storage_class=obj.storage_class))
        else:
            bucket_list = {Image: inv.images, Iso: inv.isos, Template: inv.templates, Snippet: inv.snippets,
                           ImportFile: inv.imports}[type(kind)]
            bucket_list.append(VolumeItem(path, obj.size, obj.last_modified, kind, obj.storage_class))

    archives = {b.info.name for b in inv.backups}
    logs = {b.info.log_name for b in inv.backups if b.info.log_name}
    for path, obj, side in side_files:
        if not (side.of in logs if side.kind == "log" else side.of in archives):
            inv.other.append(OtherItem(path, obj.size, obj.last_modified, names.ORPHAN[side.kind],
                                       obj.storage_class))

    await _read_notes(store, root, inv.backups, dump_files)
    if object_lock:
        await _read_locks(store, root, inv.backups)

    inv.backups.sort(key=_backup_order)
    inv.images.sort(key=lambda v: (v.info.vmid, v.info.name))
    inv.other.sort(key=lambda o: o.path)
    return inv


def _backup_order(b: BackupItem):
    i = b.info
    return (i.vmid is None, i.vmid or 0, i.date is None, i.date or datetime.min, i.name)


async def _read_locks(store: ObjectStore, root: str, backups: list[BackupItem]) -> None:
    limiter = trio.CapacityLimiter(NOTES_CONCURRENCY)

    async def read(item: BackupItem) -> None:
        async with limiter:
            info = await store.head(root + item.path)
        if info is not None:
            item.lock = LockState.of(info)

    with single_error():
        async with trio.open_nursery() as nursery:
            for item in backups:
                nursery.start_soon(read, item)


async def _read_notes(store: ObjectStore, root: str, backups: list[BackupItem],
                      dump_files: dict[str, ObjectInfo]) -> None:
    limiter = trio.CapacityLimiter(NOTES_CONCURRENCY)

    async def read(item: BackupItem, obj: ObjectInfo) -> None:
        async with limiter:
            try:
                data = await store.get_range(obj.key, 0, min(obj.size, NOTES_MAX))
            except StoreError as e:
                if e.code in ("NoSuchKey", "404", "NotFound"):  # deleted since the LIST
                    return
                raise
        text = data.decode("utf-8", errors="replace")
        if NOTES_MAX < obj.size:
            item.notes_truncated = True
        item.notes = text or None

    with single_error():
        async with trio.open_nursery() as nursery:
            for item in backups:
                obj = dump_files.get(item.info.notes_name)
                if obj is not None and obj.size > 0:
                    nursery.start_soon(read, item, obj)
