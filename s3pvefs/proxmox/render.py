"""An Inventory as a human table or as JSON (``s3pvefs ls``, ``s3pvefs ls --json``).

JSON schema "s3pvefs-ls/1" (keys are only ever added within a schema version)::

    {
      "schema": "s3pvefs-ls/1",
      "bucket": "demo", "prefix": "pve",          # prefix "" = the whole bucket
      "backups": [{                               # sorted by vmid (null last), date, name
          "path": "dump/vzdump-qemu-100-2024_05_01-02_00_13.vma.zst",   # below the prefix
          "volname": "backup/vzdump-qemu-100-2024_05_01-02_00_13.vma.zst", # <storage>:<volname>
          "name": "vzdump-qemu-100-2024_05_01-02_00_13.vma.zst",
          "vmid": 100,                            # null if the name has none
          "guest": "qemu",                        # "qemu" | "lxc" | "openvz" | null (unknown)
          "date": "2024-05-01T02:00:13",          # from the name, node-local time; null if none
          "format": "vma",                        # "vma" | "tar" | "tgz"
          "compression": "zst",                   # "gz" | "lzo" | "zst" | "bz2" | null (none)
          "size": 3145728,                        # bytes
          "protected": true,                      # <archive>.protected exists
          "log": true,                            # the job log <basename>.log exists
          "notes": "web server\\nbefore upgrade", # whole <archive>.notes (first 64 KiB), or null
          "notes_truncated": false,
          "standard_name": true,                  # vzdump-<guest>-<vmid>-<date>.<ext>
          "last_modified": "2024-05-01T00:04:55Z" # S3 LastModified, UTC
      }],
      "images": [{"path", "volname", "name", "vmid", "format": "raw|qcow2|vmdk",
                  "kind": "disk|cloudinit|vmstate|volume", "disk": 0 | null,
                  "snapshot": "<snap>" | null, "base": false, "size", "last_modified"}],
      "isos": [{"path", "volname", "name", "size", "last_modified"}],
      "templates": [{"path", "volname", "name", "compression": "gz|xz|zst|bz2" | null,
                     "size", "last_modified"}],
      "snippets": [{"path", "volname", "name", "size", "last_modified"}],
      "imports": [{"path", "volname", "name", "format": "ova|ovf|qcow2|raw|vmdk",
                   "size", "last_modified"}],
      "other": [{"path", "directory": false, "size": 12 | null, "last_modified": "…" | null,
                 "reason": "not a backup archive name (…)"}]     # sorted by path
    }

The table shows the same, sizes in binary units, the first line of the notes, and a
summary; characters that are not printable (a terminal escape in a name or in notes)
are shown escaped.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from s3pvefs.proxmox.inventory import BackupItem, Inventory, OtherItem, VolumeItem

SCHEMA = "s3pvefs-ls/1"


# ---------------------------------------------------------------------------- JSON

def _utc(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _class(item) -> str:
    """The object's storage class; a server that says none means STANDARD."""
    return item.storage_class or "STANDARD"


def _volume(v: VolumeItem, **extra) -> dict:
    return {"path": v.path, "volname": v.info.volname, "name": v.info.name, **extra,
            "size": v.size, "last_modified": _utc(v.last_modified), "storage_class": _class(v)}


def _backup(b: BackupItem) -> dict:
    i = b.info
    return {"path": b.path, "volname": i.volname, "name": i.name, "vmid": i.vmid, "guest": i.guest,
            "date": i.date.isoformat() if i.date else None, "format": i.format,
            "compression": i.compression, "size": b.size, "protected": b.protected, "log": b.log,
            "notes": b.notes, "notes_truncated": b.notes_truncated, "standard_name": i.standard,
            "last_modified": _utc(b.last_modified), "storage_class": _class(b),
            # S3 Object Lock (None: the bucket has none, or it was not read)
            "retain_until": _utc(b.lock.until) if b.lock and b.lock.until else None,
            "retention_mode": b.lock.mode if b.lock else None,
            "legal_hold": b.lock.legal_hold if b.lock else None}


def _other(o: OtherItem) -> dict:
    return {"path": o.path, "directory": o.path.endswith("/"), "size": o.size,
            "last_modified": _utc(o.last_modified), "reason": o.reason,
            "storage_class": None if o.path.endswith("/") else _class(o)}


def to_dict(inv: Inventory) -> dict:
    return {
        "schema": SCHEMA,
        "bucket": inv.bucket,
        "prefix": inv.prefix,
        "backups": [_backup(b) for b in inv.backups],
        "images": [_volume(v, vmid=v.info.vmid, format=v.info.format, kind=v.info.kind, disk=v.info.disk,
                           snapshot=v.info.snapshot, base=v.info.base) for v in inv.images],
        "isos": [_volume(v) for v in inv.isos],
        "templates": [_volume(v, compression=v.info.compression) for v in inv.templates],
        "snippets": [_volume(v) for v in inv.snippets],
        "imports": [_volume(v, format=v.info.format) for v in inv.imports],
        "other": [_other(o) for o in inv.other],
    }


def to_json(inv: Inventory) -> str:
    return json.dumps(to_dict(inv), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- table

def human_size(n: int | None) -> str:
    """1536 -> '1.5 KiB', 14.2 GiB -> '14.2 GiB', 700 MiB -> '700 MiB' (binary units)."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        value /= 1024
        if value < 1023.5 or unit == "EiB":
            return f"{value:.1f} {unit}" if value < 99.95 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def clean(text: str) -> str:
    """Non-printable characters escaped, so bucket content cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    return text.split("\n", 1)[0].rstrip("\r")


def _plain_table(headers: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    rows = [[clean(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _lock_until(b: BackupItem) -> str:
    if b.lock is None or not b.lock.until:
        return "-"
    return f"{datetime.fromtimestamp(b.lock.until, timezone.utc):%Y-%m-%d %H:%M} {(b.lock.mode or '?')[:4]}"


def _backup_rows(backups: list[BackupItem]) -> list[list[str]]:
    rows = []
    for b in backups:
        i = b.info
        rows.append([str(i.vmid) if i.vmid is not None else "-", i.guest or "unknown",
                     i.date.strftime("%Y-%m-%d %H:%M:%S") if i.date else "-", i.format,
                     i.compression or "none", human_size(b.size), _yes(b.protected), _yes(b.log),
                     i.name, _first_line(b.notes)])
    return rows


def _image_kind(v: VolumeItem) -> str:
    i = v.info
    kind = {"disk": f"disk {i.disk}", "vmstate": f"vmstate {i.snapshot}"}.get(i.kind, i.kind)
    return f"{kind} (base)" if i.base else kind


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def summary(inv: Inventory) -> str:
    protected = sum(b.protected for b in inv.backups)
    guests = len({b.info.vmid for b in inv.backups if b.info.vmid is not None})
    total = sum(b.size for b in inv.backups)
    parts = [f"{_plural(len(inv.backups), 'backup')} ({protected} protected) of "
             f"{_plural(guests, 'guest')}, {human_size(total)}"]
    for items, one in ((inv.images, "disk image"), (inv.isos, "ISO image"),
                       (inv.templates, "container template"), (inv.snippets, "snippet"),
                       (inv.imports, "import file")):
        if items:
            parts.append(_plural(len(items), one))
    if inv.other:
        parts.append(f"{len(inv.other)} other")
    return "; ".join(parts)


def to_table(inv: Inventory) -> str:
    root = f"{inv.bucket}/{inv.prefix}/" if inv.prefix else f"{inv.bucket}/"
    out: list[str] = []
    items = [*inv.backups, *inv.images, *inv.isos, *inv.templates, *inv.snippets, *inv.imports,
             *(o for o in inv.other if not o.path.endswith("/"))]
    # a CLASS column, in every section, once any object is outside STANDARD
    classes = any(_class(i) != "STANDARD" for i in items)

    def table(headers, rows, right=frozenset(), of=()):
        if classes:
            headers = [*headers, "CLASS"]
            rows = [[*row, "-" if item.path.endswith("/") else _class(item)]
                    for row, item in zip(rows, of)]
        return _plain_table(headers, rows, right)

    def section(title: str, lines: list[str]) -> None:
        if out:
            out.append("")
        out.append(clean(title))
        out.extend(lines)

    if inv.backups:
        headers, rows = ["VMID", "TYPE", "DATE", "FORMAT", "COMP", "SIZE", "PROTECTED", "LOG", "ARCHIVE",
                         "NOTES"], _backup_rows(inv.backups)
        if any(b.lock for b in inv.backups):  # Object Lock: before the free-text NOTES
            headers[9:9] = ["LOCKED UNTIL", "HOLD"]
            for row, b in zip(rows, inv.backups):
                row[9:9] = [_lock_until(b), _yes(b.lock is not None and b.lock.legal_hold)]
        section(f"Backups in {root}dump/", table(headers, rows, right=frozenset({5}), of=inv.backups))
    else:
        section(f"Backups in {root}dump/: none", [])
    if inv.images:
        section(f"Disk images in {root}images/",
                table(["VMID", "KIND", "FORMAT", "SIZE", "NAME"],
                       [[str(v.info.vmid), _image_kind(v), v.info.format, human_size(v.size), v.info.name]
                        for v in inv.images], right=frozenset({3}), of=inv.images))
    if inv.isos:
        section(f"ISO images in {root}template/iso/",
                table(["SIZE", "NAME"], [[human_size(v.size), v.info.name] for v in inv.isos],
                       right=frozenset({0}), of=inv.isos))
    if inv.templates:
        section(f"Container templates in {root}template/cache/",
                table(["COMP", "SIZE", "NAME"],
                       [[v.info.compression or "none", human_size(v.size), v.info.name] for v in inv.templates],
                       right=frozenset({1}), of=inv.templates))
    if inv.snippets:
        section(f"Snippets in {root}snippets/",
                table(["SIZE", "NAME"], [[human_size(v.size), v.info.name] for v in inv.snippets],
                       right=frozenset({0}), of=inv.snippets))
    if inv.imports:
        section(f"Import files in {root}import/",
                table(["FORMAT", "SIZE", "NAME"],
                       [[v.info.format, human_size(v.size), v.info.name] for v in inv.imports],
                       right=frozenset({1}), of=inv.imports))
    if inv.other:
        section(f"Other objects under {root} (Proxmox does not list them)",
                table(["SIZE", "PATH", "REASON"],
                       [[human_size(o.size), o.path, o.reason] for o in inv.other], right=frozenset({0}),
                       of=inv.other))
    out.append("")
    if inv.is_empty():
        out.append(clean(f"Nothing under {root}: is the prefix right?"))
    else:
        out.append(summary(inv))
    return "\n".join(out) + "\n"
