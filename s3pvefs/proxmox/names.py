"""Proxmox VE's volume naming rules for a ``dir`` storage, as pure functions (no I/O).

The rules are pve-storage's (``PVE/Storage.pm``, ``PVE/Storage/Plugin.pm``, 9.x), the
regular expressions translated from Perl, including which ones ignore case:

- backups, ``dump/``: any name ending in ``.tgz``, ``.vma`` or ``.tar``, the last two
  optionally followed by ``.gz|.lzo|.zst|.bz2`` (``$BACKUP_EXT_RE_2``, case-sensitive).
  ``archive_info`` adds the guest type to ``vzdump-(lxc|openvz|qemu)-…`` names and, for
  the standard name ``vzdump-<type>-<vmid>-YYYY_MM_DD-HH_MM_SS.<ext>`` (VMID of 3 to 9
  digits, a valid date), the date and the log name. Other names still are backups
  (Proxmox shows their type as "unknown"); their VMID is the first ``-<3-9 digits>-``.
- side files of a backup: ``<archive>.notes``, ``<archive>.protected``, and
  ``<basename>.log`` (standard names only: the archive name without its extension).
- images, ``images/<vmid>/``: a directory named by digits holding
  ``<name>.(raw|qcow2|vmdk)`` that ``parse_name_dir`` accepts: ``vm-|base-|subvol-<digits>-…``
  or ``[base-]…``, no whitespace; ``snap-*.qcow2`` (external snapshots) are not volumes.
- ISO images, ``template/iso/``: ``*.iso``, ``*.img``, any case.
- container templates, ``template/cache/``: ``*.tar``, ``*.tar.(gz|xz|zst|bz2)``, any case.
- import, ``import/``: ``[A-Za-z0-9+=_.-]+`` then ``.ova|.ovf|.qcow2|.raw|.vmdk``
  (the extension case-sensitive: the Perl ``/i`` does not reach into the embedded ``qr//``).
- snippets, ``snippets/``: any file name.

Proxmox lists only files directly in these directories (``<dir>/*``, directories skipped);
images are one level deeper. Everything else is "other", with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

GUEST_TYPES = ("qemu", "lxc", "openvz")
BACKUP_COMPRESSIONS = ("gz", "lzo", "zst", "bz2")
TEMPLATE_COMPRESSIONS = ("gz", "xz", "zst", "bz2")
IMAGE_FORMATS = ("raw", "qcow2", "vmdk")
IMPORT_FORMATS = ("ova", "ovf", "qcow2", "raw", "vmdk")

# Directories of the layout (pve-storage $vtype_subdirs), as paths below the storage root.
DUMP, IMAGES, ISO, VZTMPL, SNIPPETS, IMPORT = \
    "dump/", "images/", "template/iso/", "template/cache/", "snippets/", "import/"
LAYOUT_DIRS = frozenset({DUMP, IMAGES, "template/", ISO, VZTMPL, SNIPPETS, IMPORT})

NOTES_EXT, PROTECTED_EXT, LOG_EXT = ".notes", ".protected", ".log"

# Perl's \d and \s on file names (bytes) are ASCII; Python's are Unicode: spell them out.
_D = "[0-9]"
_NOSPACE = r"[^/ \t\n\r\f\v]"
_VMID = f"[1-9]{_D}{{2,8}}"  # 100 .. 999999999
_DATE = f"({_D}{{4}})_({_D}{{2}})_({_D}{{2}})-({_D}{{2}})_({_D}{{2}})_({_D}{{2}})"

_BACKUP_EXT = r"\.(tgz|(?:tar|vma)(?:\.(gz|lzo|zst|bz2))?)"
_BACKUP_RE = re.compile(r"[^/]+" + _BACKUP_EXT)
_VZDUMP_RE = re.compile(r"vzdump-(lxc|openvz|qemu)-.+" + _BACKUP_EXT)
_STD_BASE_RE = re.compile(f"vzdump-(lxc|openvz|qemu)-({_VMID})-{_DATE}")
_LOG_RE = re.compile(f"vzdump-(?:lxc|openvz|qemu)-{_VMID}-{_DATE}" + re.escape(LOG_EXT))
_ISO_RE = re.compile(r"[^/]+\.(?:iso|img)", re.IGNORECASE)
_VZTMPL_RE = re.compile(r"[^/]+\.(?:(tar)(?!\.)|tar\.(gz|xz|zst|bz2))", re.IGNORECASE)
_IMPORT_RE = re.compile(r"[a-zA-Z0-9\-.+=_]+\.(ova|ovf|qcow2|raw|vmdk)")
_IMAGE_EXT_RE = re.compile(r"[^/]+\.(raw|qcow2|vmdk)")
_NAME_DIR_RE = re.compile(f"(?:vm-|base-|subvol-){_D}+-{_NOSPACE}+\\.(?:raw|qcow2|vmdk)")
_NAME_DIR_PLAIN_RE = re.compile(f"(?:base-)?{_NOSPACE}+\\.(?:raw|qcow2|vmdk)")
_SNAPSHOT_FILE_RE = re.compile(r"snap-.*\.qcow2")
_IMAGE_KIND_RE = re.compile(f"(vm|base)-({_D}+)-(?:disk-({_D}+)|(cloudinit)|state-(.+)|.+)\\.[a-z0-9]+")
_DIR_RE = re.compile(f"{_D}+")
_VZDUMP_TEMP_RE = re.compile(r"vzdump-(?:lxc|openvz|qemu)-.+\.dat")
_VZDUMP_TMPDIR_RE = re.compile(r"vzdump-(?:lxc|openvz|qemu)-.+\.tmp")
_NOTES_TEMP_RE = re.compile(r".+\.notes\.tmp\.[0-9]+")
_DOWNLOAD_TEMP_RE = re.compile(r".+\.tmp_(?:dwnl|dcom)\.[0-9]+")
_OVA_TMPDIR_RE = re.compile(f"tmp_{_D}+_{_D}+")


# ---------------------------------------------------------------------------- volumes

@dataclass(frozen=True)
class Backup:
    """A backup archive in dump/."""

    name: str
    extension: str  # "vma.zst", "tar", "tgz"
    format: str  # "vma" | "tar" | "tgz"
    compression: str | None  # None | "gz" | "lzo" | "zst" | "bz2" ("gz" for tgz)
    guest: str | None  # "qemu" | "lxc" | "openvz"; None: Proxmox shows "unknown"
    vmid: int | None
    date: datetime | None  # from the name: the backing-up node's local time, no zone
    standard: bool  # vzdump-<type>-<vmid>-<date>.<ext> (Proxmox's is_std_name)

    content = "backup"

    @property
    def volname(self) -> str:
        return f"backup/{self.name}"

    @property
    def notes_name(self) -> str:
        return self.name + NOTES_EXT

    @property
    def protected_name(self) -> str:
        return self.name + PROTECTED_EXT

    @property
    def log_name(self) -> str | None:
        """Proxmox knows the job log of standard names only."""
        return self.name[:-len(self.extension) - 1] + LOG_EXT if self.standard else None


@dataclass(frozen=True)
class Image:
    """A disk image in images/<vmid>/."""

    name: str
    vmid: int  # the directory it is in (Proxmox's owner)
    format: str  # "raw" | "qcow2" | "vmdk"
    base: bool  # a linked-clone template image (base-…)
    kind: str  # "disk" (vm-<id>-disk-<n>) | "cloudinit" | "vmstate" (vm-<id>-state-<snap>) | "volume"
    disk: int | None = None  # <n> of a disk
    snapshot: str | None = None  # <snap> of a vmstate

    content = "images"

    @property
    def volname(self) -> str:
        return f"{self.vmid}/{self.name}"


@dataclass(frozen=True)
class Iso:
    name: str

    content = "iso"

    @property
    def volname(self) -> str:
        return f"iso/{self.name}"


@dataclass(frozen=True)
class Template:
    """A container template in template/cache/."""

    name: str
    compression: str | None  # None | "gz" | "xz" | "zst" | "bz2"

    content = "vztmpl"

    @property
    def volname(self) -> str:
        return f"vztmpl/{self.name}"


@dataclass(frozen=True)
class Snippet:
    name: str

    content = "snippets"

    @property
    def volname(self) -> str:
        return f"snippets/{self.name}"


@dataclass(frozen=True)
class ImportFile:
    name: str
    format: str  # "ova" | "ovf" | "qcow2" | "raw" | "vmdk"

    content = "import"

    @property
    def volname(self) -> str:
        return f"import/{self.name}"


Volume = Backup | Image | Iso | Template | Snippet | ImportFile


@dataclass(frozen=True)
class SideFile:
    """A file in dump/ that belongs to a backup if that backup is there: ``of`` is the
    archive name (notes, protected) or the log's own name (log, matched against
    Backup.log_name)."""

    kind: str  # "notes" | "protected" | "log"
    of: str


@dataclass(frozen=True)
class Other:
    """Not a volume Proxmox would list; ``reason`` says why (or what it probably is)."""

    reason: str


# Reasons, so callers and tests can tell them apart.
OUTSIDE_LAYOUT = "outside the Proxmox layout"
ROOTDIR = "container volumes (rootdir): not a content type for S3, not listed"
SUBDIRECTORY = "a subdirectory: Proxmox lists only the files of this directory"
NOT_BACKUP = "not a backup archive name (vzdump-<type>-<vmid>-<date>.vma|tar[.gz|.lzo|.zst|.bz2] or .tgz)"
BACKUP_TEMP = "unfinished backup: temporary file of a running or interrupted vzdump"
BACKUP_TMPDIR = "temporary directory of a running or interrupted VM backup"
NOTES_TEMP = "temporary notes file of an interrupted notes edit"
NOT_ISO = "not an ISO image name (*.iso, *.img)"
NOT_TEMPLATE = "not a container template name (*.tar, *.tar.gz|.xz|.zst|.bz2)"
NOT_IMPORT = "not an import file name ([A-Za-z0-9_.+=-] then .ova|.ovf|.qcow2|.raw|.vmdk)"
DOWNLOAD_TEMP = "unfinished download (temporary file of an upload or download from URL)"
TEMPLATE_DIR = "not in template/iso/ or template/cache/"
IMAGE_NOT_IN_VMID_DIR = "not in a VMID directory (images/<vmid>/)"
IMAGE_BAD_DIR = "not a VMID directory (images/<digits>/)"
NOT_IMAGE = "not a disk image name (vm-<vmid>-disk-<n>.raw|qcow2|vmdk, base-…, no spaces)"
IMAGE_SNAPSHOT = "qcow2 external snapshot file (snap-*.qcow2), not a volume"
OVA_TMPDIR = "temporary directory of an OVA import"
ORPHAN = {"notes": "notes of a backup that is not there",
          "protected": "protection marker of a backup that is not there",
          "log": "job log of a backup that is not there (failed job, or the archive was deleted)"}


# ---------------------------------------------------------------------------- parsers

def parse_backup(name: str) -> Backup | None:
    """A file name in dump/ as Proxmox lists it, or None if it is not an archive name."""
    m = _BACKUP_RE.fullmatch(name)
    if m is None:
        return None
    extension, compression = m.group(1), m.group(2)
    fmt = extension.split(".", 1)[0]
    if fmt == "tgz":
        compression = "gz"
    guest = vmid = date = None
    standard = False
    v = _VZDUMP_RE.fullmatch(name)
    if v is not None:
        guest = v.group(1)
        s = _STD_BASE_RE.fullmatch(name[:-len(extension) - 1])
        if s is not None and s.group(1) == guest:
            try:
                date = datetime(*(int(g) for g in s.groups()[2:]))
            except ValueError:  # archive_info's timelocal dies: Proxmox knows nothing of it
                guest = None
            else:
                vmid, standard = int(s.group(2)), True
    if vmid is None:  # get_subdir_files: the first -<vmid>- of any archive name
        n = re.search(f"-({_VMID})-[^/]+\\.{re.escape(extension)}\\Z", name)
        vmid = int(n.group(1)) if n else None
    return Backup(name, extension, fmt, compression, guest, vmid, date, standard)


def parse_backup_side_file(name: str) -> SideFile | None:
    """<archive>.notes, <archive>.protected, or the log of a standard-named backup."""
    for kind, ext in (("notes", NOTES_EXT), ("protected", PROTECTED_EXT)):
        if name.endswith(ext) and parse_backup(name[:-len(ext)]) is not None:
            return SideFile(kind, name[:-len(ext)])
    if _LOG_RE.fullmatch(name):
        return SideFile("log", name)
    return None


def parse_image(directory: str, name: str) -> Image | None:
    """A file ``name`` in images/<directory>/ as list_images takes it, or None."""
    if not is_vmid_dir(directory):
        return None
    m = _IMAGE_EXT_RE.fullmatch(name)
    if m is None or _SNAPSHOT_FILE_RE.fullmatch(name) and not _NAME_DIR_RE.fullmatch(name):
        return None
    if not (_NAME_DIR_RE.fullmatch(name) or _NAME_DIR_PLAIN_RE.fullmatch(name)):
        return None
    kind, disk, snapshot = "volume", None, None
    k = _IMAGE_KIND_RE.fullmatch(name)
    if k is not None:
        if k.group(3) is not None:
            kind, disk = "disk", int(k.group(3))
        elif k.group(4) is not None:
            kind = "cloudinit"
        elif k.group(5) is not None:
            kind, snapshot = "vmstate", k.group(5)
    return Image(name, int(directory), m.group(1), name.startswith("base-"), kind, disk, snapshot)


def is_vmid_dir(name: str) -> bool:
    """images/<name>/ is a directory list_images looks into."""
    return _DIR_RE.fullmatch(name) is not None


def parse_iso(name: str) -> Iso | None:
    return Iso(name) if _ISO_RE.fullmatch(name) else None


def parse_template(name: str) -> Template | None:
    m = _VZTMPL_RE.fullmatch(name)
    if m is None:
        return None
    return Template(name, m.group(2).lower() if m.group(2) else None)


def parse_import(name: str) -> ImportFile | None:
    m = _IMPORT_RE.fullmatch(name)
    return ImportFile(name, m.group(1)) if m else None


# ---------------------------------------------------------------------------- classify

def classify(path: str) -> Volume | SideFile | Other | None:
    """What Proxmox makes of ``path``, relative to the storage root; a directory ends in
    '/'. None for the layout's own directories (dump/, template/iso/, images/<vmid>/, …)."""
    if path in LAYOUT_DIRS:
        return None
    is_dir = path.endswith("/")
    parts = (path[:-1] if is_dir else path).split("/")
    top, depth = parts[0], len(parts)
    if top == "private":
        return Other(ROOTDIR)
    if depth == 1 or f"{top}/" not in LAYOUT_DIRS:
        return Other(OUTSIDE_LAYOUT)
    if top == "template":
        sub = f"template/{parts[1]}/"
        if depth == 2 or sub not in LAYOUT_DIRS:
            return Other(TEMPLATE_DIR)
        return _in_content_dir(sub, parts[2:], is_dir)
    if top == "images":
        return _in_images(parts[1:], is_dir)
    return _in_content_dir(f"{top}/", parts[1:], is_dir)


def _in_content_dir(directory: str, rest: list[str], is_dir: bool) -> Volume | SideFile | Other:
    name = rest[0]
    if len(rest) > 1 or is_dir:
        if directory == DUMP and _VZDUMP_TMPDIR_RE.fullmatch(name):
            return Other(BACKUP_TMPDIR)
        return Other(SUBDIRECTORY)
    if directory == DUMP:
        found = parse_backup(name) or parse_backup_side_file(name)
        if found is not None:
            return found
        if _VZDUMP_TEMP_RE.fullmatch(name):
            return Other(BACKUP_TEMP)
        if _NOTES_TEMP_RE.fullmatch(name):
            return Other(NOTES_TEMP)
        return Other(NOT_BACKUP)
    if directory == SNIPPETS:
        return Snippet(name)
    parse, reason = {ISO: (parse_iso, NOT_ISO), VZTMPL: (parse_template, NOT_TEMPLATE),
                     IMPORT: (parse_import, NOT_IMPORT)}[directory]
    found = parse(name)
    if found is not None:
        return found
    return Other(DOWNLOAD_TEMP if _DOWNLOAD_TEMP_RE.fullmatch(name) else reason)


def _in_images(rest: list[str], is_dir: bool) -> Image | Other | None:
    if len(rest) == 1 and not is_dir:
        return Other(IMAGE_NOT_IN_VMID_DIR)
    if not is_vmid_dir(rest[0]):
        return Other(IMAGE_BAD_DIR)
    if len(rest) == 1:  # images/<vmid>/ itself: part of the layout
        return None
    name = rest[1]
    if len(rest) > 2 or is_dir:
        return Other(OVA_TMPDIR if _OVA_TMPDIR_RE.fullmatch(name) else SUBDIRECTORY)
    image = parse_image(rest[0], name)
    if image is not None:
        return image
    if _SNAPSHOT_FILE_RE.fullmatch(name):
        return Other(IMAGE_SNAPSHOT)
    return Other(NOT_IMAGE)
