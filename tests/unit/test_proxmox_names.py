"""Proxmox's naming rules (docs/proxmox-contract.md "Layout" and "Volume names";
pve-storage Storage.pm archive_info / $*_EXT_RE_*, Plugin.pm get_subdir_files,
list_images, parse_name_dir): which names are volumes, and what they say."""

from datetime import datetime

import pytest

from s3pvefs.proxmox import names
from s3pvefs.proxmox.names import (Backup, Image, ImportFile, Iso, Other, SideFile, Snippet, Template,
                                   classify, parse_backup, parse_backup_side_file, parse_image, parse_import,
                                   parse_iso, parse_template)

# ---------------------------------------------------------------------------- backups


@pytest.mark.parametrize("name, guest, vmid, date, fmt, comp", [
    ("vzdump-qemu-100-2024_05_01-02_00_13.vma.zst", "qemu", 100, (2024, 5, 1, 2, 0, 13), "vma", "zst"),
    ("vzdump-qemu-100-2024_05_01-02_00_13.vma", "qemu", 100, (2024, 5, 1, 2, 0, 13), "vma", None),
    ("vzdump-qemu-101-2023_01_31-23_59_59.vma.gz", "qemu", 101, (2023, 1, 31, 23, 59, 59), "vma", "gz"),
    ("vzdump-qemu-102-2023_01_31-23_59_59.vma.lzo", "qemu", 102, (2023, 1, 31, 23, 59, 59), "vma", "lzo"),
    ("vzdump-qemu-103-2023_01_31-23_59_59.vma.bz2", "qemu", 103, (2023, 1, 31, 23, 59, 59), "vma", "bz2"),
    ("vzdump-lxc-200-2024_02_29-00_00_00.tar.zst", "lxc", 200, (2024, 2, 29, 0, 0, 0), "tar", "zst"),
    ("vzdump-lxc-200-2024_02_29-00_00_00.tar", "lxc", 200, (2024, 2, 29, 0, 0, 0), "tar", None),
    ("vzdump-lxc-200-2024_02_29-00_00_00.tar.gz", "lxc", 200, (2024, 2, 29, 0, 0, 0), "tar", "gz"),
    ("vzdump-lxc-200-2024_02_29-00_00_00.tar.lzo", "lxc", 200, (2024, 2, 29, 0, 0, 0), "tar", "lzo"),
    ("vzdump-lxc-200-2024_02_29-00_00_00.tar.bz2", "lxc", 200, (2024, 2, 29, 0, 0, 0), "tar", "bz2"),
    ("vzdump-lxc-200-2024_02_29-00_00_00.tgz", "lxc", 200, (2024, 2, 29, 0, 0, 0), "tgz", "gz"),
    ("vzdump-openvz-300-2012_12_12-12_12_12.tgz", "openvz", 300, (2012, 12, 12, 12, 12, 12), "tgz", "gz"),
    ("vzdump-openvz-300-2012_12_12-12_12_12.tar", "openvz", 300, (2012, 12, 12, 12, 12, 12), "tar", None),
    ("vzdump-qemu-999999999-2024_05_01-02_00_13.vma.zst", "qemu", 999999999, (2024, 5, 1, 2, 0, 13), "vma", "zst"),
])
def test_standard_backup_names(name, guest, vmid, date, fmt, comp):
    b = parse_backup(name)
    assert b == Backup(name, name.split(".", 1)[1], fmt, comp, guest, vmid, datetime(*date), True)
    assert b.volname == f"backup/{name}"
    base = name.split(".", 1)[0]
    assert b.log_name == base + ".log"
    assert b.notes_name == name + ".notes"
    assert b.protected_name == name + ".protected"


@pytest.mark.parametrize("name, guest, vmid, fmt, comp", [
    # Listed by Proxmox (the extension is enough) but not standard names: no date, no log.
    ("vzdump-qemu-100-manual.vma.zst", "qemu", 100, "vma", "zst"),
    ("vzdump-qemu-100.vma", "qemu", None, "vma", None),  # no "-<vmid>-" followed by more name
    ("vzdump-lxc-abc-2024_05_01-02_00_13.tar.zst", "lxc", None, "tar", "zst"),
    ("vzdump-qemu-99-2024_05_01-02_00_13.vma.zst", "qemu", None, "vma", "zst"),  # VMIDs have 3-9 digits
    ("vzdump-qemu-0100-2024_05_01-02_00_13.vma", "qemu", None, "vma", None),  # no leading zero
    ("vzdump-qemu-1234567890-2024_05_01-02_00_13.vma", "qemu", None, "vma", None),  # 10 digits
    ("vzdump-qemu-100-2024_5_01-02_00_13.vma", "qemu", 100, "vma", None),  # date needs 2 digits each
    ("vzdump-qemu-100-2024_05_01-02_00_13-extra.vma", "qemu", 100, "vma", None),
    ("my-backup.vma.zst", None, None, "vma", "zst"),
    ("host-100-etc.tar.gz", None, 100, "tar", "gz"),  # any name's -<vmid>- counts
    ("vzdump-kvm-100-2024_05_01-02_00_13.vma", None, 100, "vma", None),  # not a guest type
    ("x.tgz", None, None, "tgz", "gz"),
])
def test_nonstandard_backup_names_still_listed(name, guest, vmid, fmt, comp):
    b = parse_backup(name)
    assert b is not None
    assert (b.guest, b.vmid, b.format, b.compression, b.date, b.standard) == (guest, vmid, fmt, comp, None, False)
    assert b.log_name is None


def test_invalid_date_makes_archive_info_fail():
    # timelocal() dies, so Proxmox's archive_info gives nothing: type "unknown", no date;
    # the VMID still comes from the name.
    for bad in ("2024_13_01-02_00_13", "2024_02_30-00_00_00", "2023_02_29-00_00_00", "2024_05_01-24_00_00",
                "2024_05_01-23_60_00", "2024_05_01-23_00_60", "2024_00_10-00_00_00", "2024_01_00-00_00_00"):
        b = parse_backup(f"vzdump-qemu-100-{bad}.vma.zst")
        assert (b.guest, b.vmid, b.date, b.standard) == (None, 100, None, False), bad


@pytest.mark.parametrize("name", [
    "vzdump-qemu-100-2024_05_01-02_00_13.vma.zst.notes",
    "vzdump-qemu-100-2024_05_01-02_00_13.vma.zst.protected",
    "vzdump-qemu-100-2024_05_01-02_00_13.log",
    "vzdump-qemu-100-2024_05_01-02_00_13.vma.dat",  # temp name during the backup
    "vzdump-qemu-100-2024_05_01-02_00_13.dat",
    "vzdump-qemu-100-2024_05_01-02_00_13.vma.zst.notes.tmp.1234",
    "vzdump-qemu-100-2024_05_01-02_00_13.VMA.ZST",  # case-sensitive
    "vzdump-qemu-100-2024_05_01-02_00_13.vma.ZST",
    "vzdump-qemu-100-2024_05_01-02_00_13.vma.xz",  # not a vzdump compressor
    "vzdump-qemu-100-2024_05_01-02_00_13.vma.lz4",
    "vzdump-lxc-100-2024_05_01-02_00_13.tar.xz",
    "vzdump-lxc-100-2024_05_01-02_00_13.tgz.gz",
    "vzdump-lxc-100-2024_05_01-02_00_13.tar.gz.part",
    "vzdump-qemu-100-2024_05_01-02_00_13.vma.zst.bak",
    ".vma", "vma", "vma.zst", "", "README.txt", "qemu-server.conf",
    "dir/vzdump-qemu-100-2024_05_01-02_00_13.vma",  # a file name, not a path
])
def test_not_backup_names(name):
    assert parse_backup(name) is None


def test_backup_extension_is_the_longest_match():
    b = parse_backup("a.vma.tar")  # [^/]+ is greedy: the archive is a tar named "a.vma"
    assert (b.extension, b.format, b.compression) == ("tar", "tar", None)
    b = parse_backup("a.tar.vma.zst")
    assert (b.extension, b.format, b.compression) == ("vma.zst", "vma", "zst")


def test_backup_side_files():
    archive = "vzdump-lxc-101-2024_05_01-03_00_00.tar.zst"
    assert parse_backup_side_file(archive + ".notes") == SideFile("notes", archive)
    assert parse_backup_side_file(archive + ".protected") == SideFile("protected", archive)
    assert parse_backup_side_file("vzdump-lxc-101-2024_05_01-03_00_00.log") == \
        SideFile("log", "vzdump-lxc-101-2024_05_01-03_00_00.log")
    # notes/protected of any archive name; logs only of standard ones
    assert parse_backup_side_file("my.vma.notes") == SideFile("notes", "my.vma")
    assert parse_backup_side_file("my.log") is None
    assert parse_backup_side_file("vzdump-qemu-100-manual.log") is None
    assert parse_backup_side_file("my.txt.notes") is None
    assert parse_backup_side_file(archive + ".notes.tmp.42") is None
    assert parse_backup_side_file(archive) is None


# ---------------------------------------------------------------------------- images

@pytest.mark.parametrize("directory, name, expected", [
    ("100", "vm-100-disk-0.qcow2", Image("vm-100-disk-0.qcow2", 100, "qcow2", False, "disk", 0)),
    ("100", "vm-100-disk-12.raw", Image("vm-100-disk-12.raw", 100, "raw", False, "disk", 12)),
    ("100", "vm-100-disk-1.vmdk", Image("vm-100-disk-1.vmdk", 100, "vmdk", False, "disk", 1)),
    ("100", "base-100-disk-0.qcow2", Image("base-100-disk-0.qcow2", 100, "qcow2", True, "disk", 0)),
    ("100", "vm-100-cloudinit.qcow2", Image("vm-100-cloudinit.qcow2", 100, "qcow2", False, "cloudinit")),
    ("100", "vm-100-state-before_upgrade.raw",
     Image("vm-100-state-before_upgrade.raw", 100, "raw", False, "vmstate", None, "before_upgrade")),
    ("100", "vm-100-fleece-0.qcow2", Image("vm-100-fleece-0.qcow2", 100, "qcow2", False, "volume")),
    ("100", "subvol-100-disk-0.raw", Image("subvol-100-disk-0.raw", 100, "raw", False, "volume")),
    ("100", "anything.raw", Image("anything.raw", 100, "raw", False, "volume")),  # parse_name_dir takes it
    ("100", "base-foo.qcow2", Image("base-foo.qcow2", 100, "qcow2", True, "volume")),
    ("101", "vm-100-disk-0.raw", Image("vm-100-disk-0.raw", 101, "raw", False, "disk", 0)),  # owner = dir
    ("0", "vm-0-disk-0.raw", Image("vm-0-disk-0.raw", 0, "raw", False, "disk", 0)),
    ("100", "vm-100-snap-x.qcow2", Image("vm-100-snap-x.qcow2", 100, "qcow2", False, "volume")),
])
def test_image_names(directory, name, expected):
    image = parse_image(directory, name)
    assert image == expected
    assert image.volname == f"{int(directory)}/{name}"


@pytest.mark.parametrize("directory, name", [
    ("100", "vm-100-disk-0.img"),  # not an image format
    ("100", "vm-100-disk-0.QCOW2"),  # case-sensitive
    ("100", "vm-100-disk-0.subvol"),  # container subvolumes: directories, not for S3
    ("100", "vm-100-disk-0"),
    ("100", "vm-100-state-snap1"),  # state files on a dir storage carry .raw
    ("100", "vm-100-disk 0.raw"),  # no whitespace
    ("100", "my disk.qcow2"),
    ("100", "snap-x-vm-100-disk-0.qcow2"),  # external qcow2 snapshot: not a volume
    ("100", "vm-100-disk-0.qcow2.tmp"),
    ("abc", "vm-100-disk-0.raw"),  # the directory must be digits
    ("1oo", "vm-100-disk-0.raw"),
    ("", "vm-100-disk-0.raw"),
    ("١٠٠", "vm-100-disk-0.raw"),  # Arabic-Indic digits are not Perl's \d on bytes
])
def test_not_image_names(directory, name):
    assert parse_image(directory, name) is None


# ---------------------------------------------------------------------------- iso, vztmpl, import

@pytest.mark.parametrize("name, ok", [
    ("debian-12.7.0-amd64-netinst.iso", True), ("virtio-win.ISO", True), ("ubuntu.img", True),
    ("x.Img", True), (".iso", False), ("x.iso.tmp_dwnl.4242", False), ("x.iso.gz", False),
    ("x.qcow2", False), ("iso", False), ("x.isox", False),
])
def test_iso_names(name, ok):
    assert (parse_iso(name) == Iso(name)) is ok
    if ok:
        assert parse_iso(name).volname == f"iso/{name}"


@pytest.mark.parametrize("name, comp", [
    ("debian-12-standard_12.7-1_amd64.tar.zst", "zst"), ("alpine-3.20-default_20240908_amd64.tar.xz", "xz"),
    ("centos.tar.gz", "gz"), ("old.tar.bz2", "bz2"), ("plain.tar", None), ("UPPER.TAR.GZ", "gz"),
    ("a.tar.tar", None),
])
def test_template_names(name, comp):
    assert parse_template(name) == Template(name, comp)
    assert parse_template(name).volname == f"vztmpl/{name}"


@pytest.mark.parametrize("name", [
    "x.tar.lz4", "x.tar.lzo", "x.tgz", "x.tar.gz.part", "x.zst", "x.tar.", ".tar", "x.tar.gz.tmp_dwnl.1",
])
def test_not_template_names(name):
    assert parse_template(name) is None


@pytest.mark.parametrize("name, fmt", [
    ("win11.ova", "ova"), ("appliance.ovf", "ovf"), ("disk.qcow2", "qcow2"), ("disk.raw", "raw"),
    ("disk-1_a+b=c.vmdk", "vmdk"), ("A.B.vmdk", "vmdk"),
])
def test_import_names(name, fmt):
    assert parse_import(name) == ImportFile(name, fmt)
    assert parse_import(name).volname == f"import/{name}"


@pytest.mark.parametrize("name", [
    "bad name.ova",  # no spaces when listing
    "win.OVA",  # the extension is case-sensitive
    "x.iso", "x.img", "x.ova.tmp_dwnl.9", "été.ova", "x~.ova", ".ova",
])
def test_not_import_names(name):
    assert parse_import(name) is None


# ---------------------------------------------------------------------------- classify

@pytest.mark.parametrize("path, expected", [
    ("dump/vzdump-qemu-100-2024_05_01-02_00_13.vma.zst", parse_backup("vzdump-qemu-100-2024_05_01-02_00_13.vma.zst")),
    ("dump/vzdump-qemu-100-2024_05_01-02_00_13.log", SideFile("log", "vzdump-qemu-100-2024_05_01-02_00_13.log")),
    ("dump/x.vma.protected", SideFile("protected", "x.vma")),
    ("dump/vzdump-qemu-100-2024_05_01-02_00_13.vma.dat", Other(names.BACKUP_TEMP)),
    ("dump/vzdump-qemu-100-2024_05_01-02_00_13.tmp/", Other(names.BACKUP_TMPDIR)),
    ("dump/vzdump-qemu-100-2024_05_01-02_00_13.tmp/qemu-server.conf", Other(names.BACKUP_TMPDIR)),
    ("dump/x.vma.notes.tmp.777", Other(names.NOTES_TEMP)),
    ("dump/README", Other(names.NOT_BACKUP)),
    ("dump/old/", Other(names.SUBDIRECTORY)),
    ("dump/old/vzdump-qemu-100-2024_05_01-02_00_13.vma", Other(names.SUBDIRECTORY)),
    ("images/100/vm-100-disk-0.raw", Image("vm-100-disk-0.raw", 100, "raw", False, "disk", 0)),
    ("images/100/snap-a.qcow2", Other(names.IMAGE_SNAPSHOT)),
    ("images/100/notes.txt", Other(names.NOT_IMAGE)),
    ("images/100/tmp_4242_100/", Other(names.OVA_TMPDIR)),
    ("images/100/tmp_4242_100/disk.vmdk", Other(names.OVA_TMPDIR)),
    ("images/100/sub/", Other(names.SUBDIRECTORY)),
    ("images/vm-100-disk-0.raw", Other(names.IMAGE_NOT_IN_VMID_DIR)),
    ("images/abc/", Other(names.IMAGE_BAD_DIR)),
    ("images/abc/vm-100-disk-0.raw", Other(names.IMAGE_BAD_DIR)),
    ("template/iso/x.iso", Iso("x.iso")),
    ("template/iso/x.iso.tmp_dwnl.42", Other(names.DOWNLOAD_TEMP)),
    ("template/iso/x.txt", Other(names.NOT_ISO)),
    ("template/iso/sub/", Other(names.SUBDIRECTORY)),
    ("template/cache/x.tar.zst", Template("x.tar.zst", "zst")),
    ("template/cache/x.tar.zst.tmp_dcom.42", Other(names.DOWNLOAD_TEMP)),
    ("template/cache/x.tar.lz4", Other(names.NOT_TEMPLATE)),
    ("template/x.iso", Other(names.TEMPLATE_DIR)),
    ("template/qemu/", Other(names.TEMPLATE_DIR)),
    ("snippets/hook.pl", Snippet("hook.pl")),
    ("snippets/any name at all", Snippet("any name at all")),
    ("snippets/sub/", Other(names.SUBDIRECTORY)),
    ("import/vm.ova", ImportFile("vm.ova", "ova")),
    ("import/vm 1.ova", Other(names.NOT_IMPORT)),
    ("import/vm.ova.tmp_dwnl.3", Other(names.DOWNLOAD_TEMP)),
    ("private/", Other(names.ROOTDIR)),
    ("private/100/etc/hostname", Other(names.ROOTDIR)),
    ("README", Other(names.OUTSIDE_LAYOUT)),
    ("vzdump-qemu-100-2024_05_01-02_00_13.vma", Other(names.OUTSIDE_LAYOUT)),  # not in dump/
    ("iso/x.iso", Other(names.OUTSIDE_LAYOUT)),
    ("backup/", Other(names.OUTSIDE_LAYOUT)),
    ("dump", Other(names.OUTSIDE_LAYOUT)),  # a file named like the directory
])
def test_classify(path, expected):
    assert classify(path) == expected


@pytest.mark.parametrize("path", ["dump/", "images/", "template/", "template/iso/", "template/cache/",
                                  "snippets/", "import/", "images/100/", "images/0/"])
def test_layout_directories_are_not_entries(path):
    assert classify(path) is None


def test_content_types_and_volnames():
    assert [cls.content for cls in (Backup, Image, Iso, Template, Snippet, ImportFile)] == \
        ["backup", "images", "iso", "vztmpl", "snippets", "import"]
    assert Snippet("a b").volname == "snippets/a b"
