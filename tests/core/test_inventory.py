"""The inventory of `s3pvefs ls` against MemoryStore: what is listed, what is "other",
side files, notes, pagination, requests made, and the table / JSON rendering."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import trio

from s3pvefs.errors import StoreError
from s3pvefs.proxmox import inventory, names, render
from s3pvefs.store.memory import MemoryStore
from tests.core.helpers import HugeBytes

A100 = "vzdump-qemu-100-2024_05_01-02_00_13.vma.zst"
A100B = "vzdump-qemu-100-2024_05_08-02_00_11.vma.zst"
A101 = "vzdump-lxc-101-2024_05_01-03_00_00.tar.zst"
A101OLD = "vzdump-lxc-101-2023_12_24-23_59_59.tar.gz"
A1000 = "vzdump-qemu-1000-2024_05_02-01_00_00.vma"


def build(store: MemoryStore, prefix: str = "pve", bucket: str = "bucket") -> inventory.Inventory:
    return trio.run(inventory.build, store, prefix, bucket)


def bucket_of(files: dict[str, bytes], prefix: str = "pve/") -> MemoryStore:
    store = MemoryStore()
    for rel, data in files.items():
        store.put_outside(prefix + rel, data)
    return store


def realistic() -> MemoryStore:
    store = bucket_of({
        "dump/": b"",  # directory markers
        "template/": b"", "template/iso/": b"", "images/": b"", "images/100/": b"",
        f"dump/{A100}": b"\0" * 3000,
        f"dump/{A100}.notes": "web server\nbefore the upgrade to bookworm ✓".encode(),
        f"dump/{A100}.protected": b"",
        "dump/vzdump-qemu-100-2024_05_01-02_00_13.log": b"INFO: ...",
        f"dump/{A100B}": b"\0" * 5000,
        f"dump/{A101}": b"x" * 100,
        f"dump/{A101}.notes": b"",  # empty notes: none
        "dump/vzdump-lxc-101-2024_05_01-03_00_00.log": b"log",
        f"dump/{A101OLD}": b"x" * 10,
        f"dump/{A1000}": b"x" * 7,
        f"dump/{A1000}.protected": b"",
        "dump/my-backup.vma.zst": b"m",
        "dump/vzdump-qemu-100-2024_05_15-02_00_00.vma.dat": b"partial",
        "dump/vzdump-qemu-100-2024_05_15-02_00_00.tmp/qemu-server.conf": b"c",
        "dump/vzdump-qemu-100-2024_05_15-02_00_00.tmp/fw.conf": b"c",
        "dump/vzdump-qemu-103-2024_04_01-00_00_00.log": b"ERROR: failed",
        "dump/vzdump-qemu-104-2024_04_01-00_00_00.vma.zst.notes": b"orphan notes",
        "dump/vzdump-qemu-104-2024_04_01-00_00_00.vma.zst.protected": b"",
        "dump/README.txt": b"hello",
        "template/iso/debian-12.iso": b"i" * 2048,
        "template/iso/x.iso.tmp_dwnl.4242": b"i",
        "template/cache/debian-12-standard_12.7-1_amd64.tar.zst": b"t",
        "template/cache/bad.tar.lz4": b"t",
        "template/README": b"r",
        "images/100/vm-100-disk-0.qcow2": b"q" * 10,
        "images/100/vm-100-cloudinit.qcow2": b"q",
        "images/100/vm-100-state-snap1.raw": b"q",
        "images/100/tmp_1234_100/disk1.vmdk": b"q",
        "images/100/tmp_1234_100/disk2.vmdk": b"q",
        "images/101/base-101-disk-0.raw": b"q",
        "images/9/vm-9-disk-0.raw": b"q",
        "images/abc/x.raw": b"q",
        "images/abc/y.raw": b"q",
        "images/stray.raw": b"q",
        "snippets/hook.pl": b"#!/usr/bin/perl",
        "snippets/sub/x": b"",
        "import/win.ova": b"o",
        "import/bad name.ova": b"o",
        "private/100/etc/hostname": b"h",
        "stray.txt": b"s",
        "dump_$folder$": b"",  # old s3fs directory marker
    })
    # Outside the storage's prefix: never shown.
    store.put_outside("other/dump/vzdump-qemu-999-2024_05_01-02_00_13.vma", b"not ours")
    store.put_outside("pve2/dump/vzdump-qemu-998-2024_05_01-02_00_13.vma", b"not ours")
    return store


# ---------------------------------------------------------------------------- inventory

def test_backups_sorted_by_vmid_then_date_with_side_files():
    inv = build(realistic())
    assert [b.info.name for b in inv.backups] == [A100, A100B, A101OLD, A101, A1000, "my-backup.vma.zst"]
    by_name = {b.info.name: b for b in inv.backups}
    b = by_name[A100]
    assert (b.path, b.size, b.protected, b.log) == (f"dump/{A100}", 3000, True, True)
    assert b.notes == "web server\nbefore the upgrade to bookworm ✓" and not b.notes_truncated
    assert (b.info.vmid, b.info.guest, b.info.date, b.info.format, b.info.compression) == \
        (100, "qemu", datetime(2024, 5, 1, 2, 0, 13), "vma", "zst")
    assert (by_name[A100B].protected, by_name[A100B].log, by_name[A100B].notes) == (False, False, None)
    assert (by_name[A101].log, by_name[A101].notes) == (True, None)  # empty notes are no notes
    assert (by_name[A1000].protected, by_name[A1000].info.compression) == (True, None)
    unknown = by_name["my-backup.vma.zst"]
    assert (unknown.info.vmid, unknown.info.guest, unknown.info.date) == (None, None, None)


def test_volumes_of_every_content_type():
    inv = build(realistic())
    assert [(v.info.vmid, v.info.name, v.info.kind) for v in inv.images] == [
        (9, "vm-9-disk-0.raw", "disk"),
        (100, "vm-100-cloudinit.qcow2", "cloudinit"),
        (100, "vm-100-disk-0.qcow2", "disk"),
        (100, "vm-100-state-snap1.raw", "vmstate"),
        (101, "base-101-disk-0.raw", "disk"),
    ]
    assert [v.path for v in inv.isos] == ["template/iso/debian-12.iso"]
    assert inv.isos[0].size == 2048
    assert [(v.info.name, v.info.compression) for v in inv.templates] == \
        [("debian-12-standard_12.7-1_amd64.tar.zst", "zst")]
    assert [v.info.name for v in inv.snippets] == ["hook.pl"]
    assert [(v.info.name, v.info.format) for v in inv.imports] == [("win.ova", "ova")]


def test_everything_else_is_other_with_its_reason():
    inv = build(realistic())
    assert [(o.path, o.reason) for o in inv.other] == [
        ("dump/README.txt", names.NOT_BACKUP),
        ("dump/vzdump-qemu-100-2024_05_15-02_00_00.tmp/", names.BACKUP_TMPDIR),
        ("dump/vzdump-qemu-100-2024_05_15-02_00_00.vma.dat", names.BACKUP_TEMP),
        ("dump/vzdump-qemu-103-2024_04_01-00_00_00.log", names.ORPHAN["log"]),
        ("dump/vzdump-qemu-104-2024_04_01-00_00_00.vma.zst.notes", names.ORPHAN["notes"]),
        ("dump/vzdump-qemu-104-2024_04_01-00_00_00.vma.zst.protected", names.ORPHAN["protected"]),
        ("images/100/tmp_1234_100/", names.OVA_TMPDIR),  # once, not per file
        ("images/abc/", names.IMAGE_BAD_DIR),
        ("images/stray.raw", names.IMAGE_NOT_IN_VMID_DIR),
        ("import/bad name.ova", names.NOT_IMPORT),
        ("private/", names.ROOTDIR),  # not walked
        ("snippets/sub/", names.SUBDIRECTORY),
        ("stray.txt", names.OUTSIDE_LAYOUT),
        ("template/README", names.TEMPLATE_DIR),
        ("template/cache/bad.tar.lz4", names.NOT_TEMPLATE),
        ("template/iso/x.iso.tmp_dwnl.4242", names.DOWNLOAD_TEMP),
    ]
    sizes = {o.path: o.size for o in inv.other}
    assert sizes["dump/README.txt"] == 5 and sizes["private/"] is None
    # Nothing outside the prefix, no directory marker, no _$folder$ object.
    every = [b.path for b in inv.backups] + [o.path for o in inv.other] + \
        [v.path for v in inv.images + inv.isos + inv.templates + inv.snippets + inv.imports]
    assert not [p for p in every if "999" in p or "998" in p or "$folder$" in p or p in names.LAYOUT_DIRS]


def test_requests_one_list_per_layout_directory_and_one_get_per_notes():
    store = realistic()
    store.reset_counts()
    build(store)
    assert store.calls == {"list": 8, "get": 1}  # no HEAD: sizes and dates come from the LIST
    assert store.ranges == [(f"pve/dump/{A100}.notes", 0, len(store.objects[f"pve/dump/{A100}.notes"].data))]


def test_listings_are_paginated():
    files = {f"dump/vzdump-qemu-{100 + i}-2024_05_01-02_00_13.vma.zst": b"x" for i in range(2100)}
    files.update({f"images/{100 + i}/vm-{100 + i}-disk-0.raw": b"x" for i in range(1100)})
    store = bucket_of(files)
    inv = build(store)
    assert [b.info.vmid for b in inv.backups] == list(range(100, 2200))
    assert len(inv.images) == 1100 and not inv.other
    assert store.calls["list"] == 8 + 2 + 1  # dump/: 3 pages, images/: 2 pages


def test_whole_bucket_as_the_storage_root():
    store = bucket_of({f"dump/{A100}": b"x", "template/iso/a.iso": b"i", "pve/dump/x.vma": b""}, prefix="")
    inv = build(store, prefix="")
    assert inv.prefix == ""
    assert [b.path for b in inv.backups] == [f"dump/{A100}"]
    assert [v.path for v in inv.isos] == ["template/iso/a.iso"]
    assert [(o.path, o.reason) for o in inv.other] == [("pve/", names.OUTSIDE_LAYOUT)]


def test_prefix_slashes_do_not_matter():
    store = bucket_of({f"dump/{A100}": b"x"}, prefix="a/b/")
    for prefix in ("a/b", "/a/b/", "a/b/"):
        inv = build(store, prefix=prefix)
        assert inv.prefix == "a/b"
        assert [b.path for b in inv.backups] == [f"dump/{A100}"]


def test_nothing_under_the_prefix():
    store = bucket_of({f"dump/{A100}": b"x"})
    inv = build(store, prefix="wrong")
    assert inv.is_empty()
    assert "Nothing under bucket/wrong/" in render.to_table(inv)


def test_long_notes_are_cut():
    store = bucket_of({f"dump/{A100}": b"x", f"dump/{A100}.notes": b"n" * (200 * 1024)})
    inv = build(store)
    assert inv.backups[0].notes == "n" * inventory.NOTES_MAX
    assert inv.backups[0].notes_truncated
    assert store.ranges == [(f"pve/dump/{A100}.notes", 0, inventory.NOTES_MAX)]


def test_notes_that_are_not_utf8_are_shown_anyway():
    store = bucket_of({f"dump/{A100}": b"x", f"dump/{A100}.notes": b"caf\xe9\nok"})
    assert build(store).backups[0].notes == "caf\ufffd\nok"


def test_notes_deleted_since_the_listing_are_no_notes():
    store = bucket_of({f"dump/{A100}": b"x", f"dump/{A100}.notes": b"n"})
    store.fail["get"] = StoreError("GET: NoSuchKey", code="NoSuchKey")
    assert build(store).backups[0].notes is None


@pytest.mark.parametrize("op", ["list", "get"])
def test_store_failures_come_out_as_one_store_error(op):
    store = realistic()
    store.fail[op] = StoreError("AccessDenied (403)", code="AccessDenied")
    with pytest.raises(StoreError) as e:  # not an ExceptionGroup
        build(store)
    assert e.value.code == "AccessDenied"


def test_names_a_mount_cannot_show_are_other():
    long = "x" * 250 + ".vma.zst"
    store = bucket_of({f"dump/{long}": b"x", "dump//vzdump-qemu-100-2024_05_01-02_00_13.vma": b"x",
                       f"dump/{A100}": b"x"})
    inv = build(store)
    assert [b.info.name for b in inv.backups] == [A100]
    assert sorted(o.path for o in inv.other) == ["dump//", f"dump/{long}"]
    assert {o.reason for o in inv.other} == {inventory.NOT_VISIBLE}


def test_huge_backups_are_not_read():
    store = MemoryStore()
    store.put_outside(f"pve/dump/{A100}", HugeBytes(300 << 30))
    inv = build(store)
    assert inv.backups[0].size == 300 << 30 and store.ranges == []
    assert "300 GiB" in render.to_table(inv)


# ---------------------------------------------------------------------------- rendering

@pytest.mark.parametrize("n, text", [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (10 * 1024, "10.0 KiB"),
    (1024 * 1024 - 1, "1.0 MiB"), (int(99.96 * (1 << 20)), "100 MiB"), (700 << 20, "700 MiB"),
    (3 << 30, "3.0 GiB"), (int(9.96 * (1 << 30)), "10.0 GiB"), (int(14.24 * (1 << 30)), "14.2 GiB"),
    (5 << 40, "5.0 TiB"), (2 << 60, "2.0 EiB"),
])
def test_human_size(n, text):
    assert render.human_size(n) == text


def test_table():
    text = render.to_table(build(realistic()))
    lines = text.splitlines()
    assert lines[0] == "Backups in bucket/pve/dump/"
    header = lines[1].split()
    assert header == ["VMID", "TYPE", "DATE", "FORMAT", "COMP", "SIZE", "PROTECTED", "LOG", "ARCHIVE", "NOTES"]
    rows = [line.split() for line in lines[2:8]]
    assert [r[0] for r in rows] == ["100", "100", "101", "101", "1000", "-"]
    assert rows[0] == ["100", "qemu", "2024-05-01", "02:00:13", "vma", "zst", "2.9", "KiB", "yes", "yes", A100,
                       "web", "server"]  # the notes' first line only
    assert rows[4][:9] == ["1000", "qemu", "2024-05-02", "01:00:00", "vma", "none", "7", "B", "yes"]
    assert rows[5][:7] == ["-", "unknown", "-", "vma", "zst", "1", "B"]
    # aligned: every backup row starts its columns where the header does
    start = lines[1].index("ARCHIVE")
    assert all(line[start:].startswith("vzdump-") or line[start:].startswith("my-") for line in lines[2:8])
    size_end = lines[1].index("SIZE") + len("SIZE")
    assert all(line[size_end - 1] != " " for line in lines[2:8])  # sizes right-aligned
    for title in ("Disk images in bucket/pve/images/", "ISO images in bucket/pve/template/iso/",
                  "Container templates in bucket/pve/template/cache/", "Snippets in bucket/pve/snippets/",
                  "Import files in bucket/pve/import/", "Other objects under bucket/pve/"):
        assert any(line.startswith(title) for line in lines), title
    assert "100   vmstate snap1" in text and "101   disk 0 (base)" in text
    assert "private/" in text and names.ROOTDIR in text
    assert lines[-1] == ("6 backups (2 protected) of 3 guests, 7.9 KiB; 5 disk images; 1 ISO image; "
                         "1 container template; 1 snippet; 1 import file; 16 other")
    assert all(line == line.rstrip() for line in lines)


def test_table_without_backups():
    text = render.to_table(build(bucket_of({"template/iso/a.iso": b"i"})))
    assert text.startswith("Backups in bucket/pve/dump/: none\n")
    assert text.splitlines()[-1] == "0 backups (0 protected) of 0 guests, 0 B; 1 ISO image"


def test_table_escapes_what_could_drive_the_terminal():
    evil = "vzdump-qemu-100-2024_05_01-02_00_13.vma.zst"
    store = bucket_of({f"dump/{evil}": b"x", f"dump/{evil}.notes": b"\x1b[2J\x1b]0;pwned\x07hi",
                       "snippets/a\x1b[31mred": b""})
    inv = build(store)
    text = render.to_table(inv)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J\\x1b]0;pwned\\x07hi" in text and "a\\x1b[31mred" in text
    doc = json.loads(render.to_json(inv))
    assert doc["backups"][0]["notes"] == "\x1b[2J\x1b]0;pwned\x07hi"  # JSON keeps the real text


def test_json_schema():
    doc = json.loads(render.to_json(build(realistic())))
    assert list(doc) == ["schema", "bucket", "prefix", "backups", "images", "isos", "templates", "snippets",
                         "imports", "other"]
    assert (doc["schema"], doc["bucket"], doc["prefix"]) == ("s3pvefs-ls/1", "bucket", "pve")
    b = doc["backups"][0]
    assert list(b) == ["path", "volname", "name", "vmid", "guest", "date", "format", "compression", "size",
                       "protected", "log", "notes", "notes_truncated", "standard_name", "last_modified",
                       "storage_class", "retain_until", "retention_mode", "legal_hold"]
    assert {k: v for k, v in b.items() if k != "last_modified"} == {
        "path": f"dump/{A100}", "volname": f"backup/{A100}", "name": A100, "vmid": 100, "guest": "qemu",
        "date": "2024-05-01T02:00:13", "format": "vma", "compression": "zst", "size": 3000, "protected": True,
        "log": True, "notes": "web server\nbefore the upgrade to bookworm ✓", "notes_truncated": False,
        "standard_name": True, "storage_class": "STANDARD", "retain_until": None, "retention_mode": None,
        "legal_hold": None}
    assert b["last_modified"].endswith("Z") and datetime.fromisoformat(b["last_modified"][:-1])
    last = doc["backups"][-1]
    assert (last["vmid"], last["guest"], last["date"], last["standard_name"]) == (None, None, None, False)
    assert [d["vmid"] for d in doc["backups"]] == [100, 100, 101, 101, 1000, None]
    img = doc["images"][2]
    assert {k: v for k, v in img.items() if k != "last_modified"} == {
        "path": "images/100/vm-100-disk-0.qcow2", "volname": "100/vm-100-disk-0.qcow2",
        "name": "vm-100-disk-0.qcow2", "vmid": 100, "format": "qcow2", "kind": "disk", "disk": 0,
        "snapshot": None, "base": False, "size": 10, "storage_class": "STANDARD"}
    assert [list(d) for d in (doc["isos"][0], doc["snippets"][0])] == \
        [["path", "volname", "name", "size", "last_modified", "storage_class"]] * 2
    assert doc["templates"][0]["volname"] == "vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    assert doc["templates"][0]["compression"] == "zst"
    assert doc["imports"][0]["format"] == "ova" and doc["imports"][0]["volname"] == "import/win.ova"
    other = {o["path"]: o for o in doc["other"]}
    assert other["private/"] == {"path": "private/", "directory": True, "size": None, "last_modified": None,
                                 "reason": names.ROOTDIR, "storage_class": None}
    assert other["stray.txt"]["directory"] is False and other["stray.txt"]["size"] == 1


def test_table_shows_storage_classes_once_any_object_is_outside_standard():
    inv = build(realistic())
    assert "CLASS" not in render.to_table(inv)
    inv.backups[0].storage_class = "GLACIER"
    text = render.to_table(inv)
    header = next(line for line in text.splitlines() if line.startswith("VMID  TYPE"))
    assert header.endswith("CLASS")
    assert inv.backups[0].info.name in next(line for line in text.splitlines() if line.endswith("GLACIER"))
    assert any(line.startswith("SIZE") and line.endswith("CLASS") for line in text.splitlines())  # isos too
