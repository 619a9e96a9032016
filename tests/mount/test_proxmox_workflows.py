"""Workflow tier: what Proxmox VE does to a `dir` storage, replayed operation by operation
on a real mount (moto behind it; Ceph RGW in the slow tier, `-m slow`), with the programs Proxmox runs (zstd, pigz/gzip, lzop,
tar, cp, dd, qemu-img) and python scripts where the exact open flags matter.

Sources of every step: /work/shared/docs/proxmox-contract.md (pve-manager VZDump.pm,
pve-storage Plugin.pm/Storage.pm/API2 Status.pm, pve-common download_file_from_url,
pve-guest-common GuestHelpers.pm). Every archive is verified after the fact twice: read
back (decompressed) through the mount, and as the object in the bucket with boto3. Every
file a test leaves is checked against the volume-name rules Proxmox applies, so the
tier proves it uses names Proxmox would list.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import time
from dataclasses import dataclass

import pytest

from tests.conftest import need
from tests.mount.conftest import sha256_file
from tests.mount.test_streaming import assert_no_uploads, daemon_pid, run_py, sh

pytestmark = pytest.mark.mount

KiB, MiB = 1 << 10, 1 << 20

PVE_DIRS = ["dump", "images", "template/iso", "template/cache", "snippets", "import"]


@pytest.fixture(params=["moto", pytest.param("ceph", marks=pytest.mark.slow)])
def mount(request, mount):
    """Every workflow runs on moto (default suite) and on Ceph RGW (slow tier)."""
    return mount if request.param == "moto" else request.getfixturevalue("ceph_mount")


@pytest.fixture(autouse=True)
def _umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ----------------------------------------------------------------------------- volume names
#
# pve-storage PVE/Storage.pm and Plugin.pm, as quoted in the contract.

BACKUP_RE = re.compile(
    r"vzdump-(lxc|openvz|qemu)-(\d+)-(\d{4})_(\d\d)_(\d\d)-(\d\d)_(\d\d)_(\d\d)"
    r"\.(tgz|(vma|tar)(\.(gz|lzo|zst|bz2))?)")
BACKUP_LOG_RE = re.compile(r"vzdump-(lxc|openvz|qemu)-\d+-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.log")
ISO_RE = re.compile(r"[^/]+\.(iso|img)", re.IGNORECASE)
VZTMPL_RE = re.compile(r"[^/]+\.tar(\.(gz|xz|zst|bz2))?", re.IGNORECASE)
IMPORT_RE = re.compile(r"[^/]+\.(ova|ovf|qcow2|raw|vmdk)", re.IGNORECASE)
IMAGE_RE = re.compile(r"(base|vm)-(\d+)-\S+\.(raw|qcow2|vmdk)")
UPLOAD_CHARS_RE = re.compile(r"[a-zA-Z0-9_.-]+")  # names of uploads are normalised to these


def volume_kind(rel: str) -> str:
    """What Proxmox would see in the storage-relative path `rel` (a file), or AssertionError
    if Proxmox would not list it as a volume (or a backup's side file)."""
    parts = rel.split("/")
    name = parts[-1]
    if parts[0] == "dump" and len(parts) == 2:
        if BACKUP_RE.fullmatch(name):
            return "backup"
        side = re.fullmatch(r"(.+)\.(notes|protected)", name)
        if side and BACKUP_RE.fullmatch(side[1]):
            return "backup." + side[2]
        if BACKUP_LOG_RE.fullmatch(name):
            return "backup.log"
    elif parts[:2] == ["template", "iso"] and len(parts) == 3:
        if ISO_RE.fullmatch(name) and UPLOAD_CHARS_RE.fullmatch(name):
            return "iso"
    elif parts[:2] == ["template", "cache"] and len(parts) == 3:
        if VZTMPL_RE.fullmatch(name) and UPLOAD_CHARS_RE.fullmatch(name):
            return "vztmpl"
    elif parts[0] == "images" and len(parts) == 3 and re.fullmatch(r"[0-9][0-9]*", parts[1]):
        image = IMAGE_RE.fullmatch(name)
        # alloc_image: "illegal name - should be 'vm-$vmid-*'"; base images keep their vmid too
        if image and image[2] == parts[1]:
            return "images"
    elif parts[0] == "snippets" and len(parts) == 2:
        return "snippets"  # any name
    elif parts[0] == "import" and len(parts) == 2:
        if IMPORT_RE.fullmatch(name) and UPLOAD_CHARS_RE.fullmatch(name):
            return "import"
    raise AssertionError(f"{rel!r} is not a name Proxmox would accept as a volume")


def dir_ok(rel: str) -> bool:
    return rel in {"dump", "images", "template", "template/iso", "template/cache", "snippets", "import"} \
        or re.fullmatch(r"images/[0-9][0-9]*", rel) is not None


def assert_pve_names(m) -> dict[str, str]:
    """Every file in the bucket and on the mount has a name Proxmox accepts; every directory
    is one of the storage's. No temp file (.dat, .tmp/, .notes.tmp.<pid>, .tmp_dwnl.<pid>)
    is left behind. Returns {rel: kind}."""
    kinds = {}
    for key in sorted(m.keys()):
        assert key.startswith(m.prefix + "/"), key
        rel = key[len(m.prefix) + 1:]
        if key.endswith("/"):
            assert dir_ok(rel.rstrip("/")), f"unexpected directory {rel!r} in the bucket"
        elif rel == ".s3pvefs-zeros":  # the mount's object of zeros (raw images grown by truncate)
            assert not os.path.exists(m.path(rel))  # never a name on the mount
        else:
            kinds[rel] = volume_kind(rel)
    seen = {}
    for root, dirs, files in os.walk(m.mp):
        for d in dirs:
            rel = os.path.relpath(os.path.join(root, d), m.mp)
            assert dir_ok(rel), f"unexpected directory {rel!r} on the mount"
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), m.mp)
            seen[rel] = volume_kind(rel)
    assert seen == kinds, (seen, kinds)
    return kinds


def assert_log_clean(m) -> None:
    text = m.log_text()
    bad = [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    assert bad == [], "daemon log has warnings/errors:\n" + "\n".join(bad[:20])


def make_layout(m) -> None:
    """What every storage activation does: mkdir -p of the base path's content dirs."""
    sh(f"cd {m.mp} && mkdir -p {' '.join(PVE_DIRS)}")
    # storage status (PVE::Tools::df): 0 blocks or 0 fragment size would mark it inactive
    st = os.statvfs(m.mp)
    assert st.f_blocks > 0 and st.f_frsize > 0 and st.f_bavail > 0
    for d in PVE_DIRS:
        assert os.path.isdir(m.path(d)), d
        assert m.key(d) + "/" in m.keys(), d  # a marker: the empty directory persists


def test_volume_name_rules_accept_and_refuse():
    """The checker itself: the names the workflows use pass, the temp names they go through
    (which Proxmox must never list as volumes) and near misses do not."""
    good = {
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.zst": "backup",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.gz": "backup",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.lzo": "backup",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma": "backup",
        "dump/vzdump-lxc-101-2026_01_02-03_04_05.tar.zst": "backup",
        "dump/vzdump-openvz-7-2026_01_02-03_04_05.tgz": "backup",
        "dump/vzdump-lxc-101-2026_01_02-03_04_05.log": "backup.log",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.zst.notes": "backup.notes",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.zst.protected": "backup.protected",
        "template/iso/debian-12.5.0-amd64-netinst.iso": "iso",
        "template/iso/FreeDOS.IMG": "iso",
        "template/cache/debian-12-standard_12.7-1_amd64.tar.zst": "vztmpl",
        "template/cache/alpine.tar": "vztmpl",
        "images/100/vm-100-disk-0.raw": "images",
        "images/100/base-100-disk-1.qcow2": "images",
        "snippets/any name at all.sh": "snippets",
        "import/appliance.ova": "import",
    }
    for rel, kind in good.items():
        assert volume_kind(rel) == kind, rel
    bad = [
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.dat",  # the temp name of a running backup
        "dump/vzdump-lxc-101-2026_01_02-03_04_05.tar.dat",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.tmp/qemu-server.conf",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.zst.notes.tmp.4242",
        "dump/vzdump-qemu-100-2026_1_02-03_04_05.vma.zst",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.xz",
        "dump/vzdump-kvm-100-2026_01_02-03_04_05.vma.zst",
        "dump/vzdump-qemu-100-2026_01_02-03_04_05.vma.zst.log",
        "template/iso/debian.iso.tmp_dwnl.4242",
        "template/iso/debian.iso.tmp_dcom.4242",
        "template/iso/my image.iso",
        "template/cache/rootfs.tar.lz4",
        "images/100/vm-101-disk-0.raw",
        "images/100/vm-100-disk-0.img",
        "images/vm-100-disk-0.raw",
        "import/disk.iso",
        "elsewhere.iso",
    ]
    for rel in bad:
        with pytest.raises(AssertionError):
            volume_kind(rel)


# ----------------------------------------------------------------------------- tools and data


@dataclass(frozen=True)
class Compressor:
    ext: str  # archive extension after .vma / .tar
    cmd: str  # as vzdump's compressor_info() builds it
    decompress: str
    # same bytes for the same input: gzip/pigz/lzop put the time into their header when
    # they read a pipe, zstd does not (the size is the same either way)
    stable: bool


@pytest.fixture(scope="module")
def compressors() -> dict[str, Compressor]:
    for tool in ("zstd", "pigz", "lzop"):
        need(tool)
    return {
        "zstd": Compressor("zst", "zstd -q --threads=1", "zstd -q -d -c", True),
        # vzdump: "pigz -p N --rsyncable" when pigz is configured (the gzip form is the same bytes' format)
        "gzip": Compressor("gz", "pigz -p 2 --rsyncable", "gzip -q -d -c", False),
        "lzo": Compressor("lzo", "lzop", "lzop -q -d -c", False),
    }


def disk_data(path, size_mib: int, seed: int) -> str:
    """A guest-disk-like stream: every 8 MiB holds 4 MiB of random bytes, 3 MiB of
    compressible text and 1 MiB of zeros (cut at size_mib). Returns its sha256."""
    rnd = random.Random(seed)
    text = b"".join(b"guest fs block %08d seed %d: %s\n" % (i, seed, b"x" * 90) for i in range(3 * MiB // 100))
    text = (text * 2)[:3 * MiB]
    h = hashlib.sha256()
    left = size_mib * MiB
    with open(path, "wb") as f:
        while left:
            for piece in (rnd.randbytes(4 * MiB), text, bytes(1 * MiB)):
                piece = piece[:left]
                f.write(piece)
                h.update(piece)
                left -= len(piece)
    return h.hexdigest()


def ts_name(kind: str, vmid: int, day: int, hour: int, minute: int = 0, second: int = 0) -> str:
    return f"vzdump-{kind}-{vmid}-2026_03_{day:02d}-{hour:02d}_{minute:02d}_{second:02d}"


# A PVE::Tools::file_set_contents: "<file>.tmp.<pid>" O_WRONLY|O_CREAT|O_EXCL, written,
# closed, renamed over <file>. Prints the temp name it used.
SET_CONTENTS = """
path, text = sys.argv[1], sys.argv[2]
tmp = f"{path}.tmp.{os.getpid()}"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
write_all(fd, text.encode())
os.close(fd)
os.rename(tmp, path)
print(tmp)
"""


def set_contents(path: str, text: str) -> str:
    tmp = run_py(SET_CONTENTS, path, text).strip()
    assert re.fullmatch(re.escape(path) + r"\.tmp\.\d+", tmp), tmp
    return tmp


@dataclass
class Backup:
    base: str  # vzdump-qemu-100-2026_...
    archive: str  # base + ".vma.zst"
    size: int  # bytes the compressor wrote
    digest: str | None  # sha256 of the archive as the compressor wrote it (stable compressors)
    existing: int  # backups of this guest counted in dump/ before it


def vzdump_vm(m, tmp_path, vmid: int, base: str, src, comp: Compressor) -> Backup:
    """exec_backup_task of a VM, step by step, into dump/ on the mount."""
    dump = m.path("dump")
    archive = f"{base}.vma.{comp.ext}"
    assert volume_kind(f"dump/{archive}") == "backup"

    # 1. count the guest's existing backups: readdir + stat (no free-space check)
    existing = 0
    for name in os.listdir(dump):
        match = BACKUP_RE.fullmatch(name)
        os.stat(os.path.join(dump, name))
        if match and match[1] == "qemu" and int(match[2]) == vmid:
            existing += 1

    # 2. the temp name: last extension replaced by .dat; an old one is unlinked first
    dat = os.path.join(dump, f"{base}.vma.dat")
    if os.path.exists(dat):
        os.unlink(dat)
    assert not os.path.exists(dat)

    # 3. the config directory: files written as temp file + rename
    tmpdir = os.path.join(dump, f"{base}.tmp")
    os.mkdir(tmpdir)
    conf = f"boot: order=scsi0\ncores: 2\nmemory: 2048\nname: vm{vmid}\nscsi0: local:{vmid}/vm-{vmid}-disk-0.raw\n"
    set_contents(os.path.join(tmpdir, "qemu-server.conf"), conf)
    set_contents(os.path.join(tmpdir, "qemu-server.fw"), "[OPTIONS]\nenable: 0\n")
    assert sorted(os.listdir(tmpdir)) == ["qemu-server.conf", "qemu-server.fw"]
    assert m.get(f"dump/{base}.tmp/qemu-server.conf") == conf.encode()

    # 4. the data: the compressor reads a pipe and writes the .dat, opened by the shell
    #    with O_WRONLY|O_CREAT|O_TRUNC, strictly sequentially, never fsynced
    sh(f"cat {src} | {comp.cmd} > {dat}")

    # what the compressor produces from the same input (all but the header time)
    expected = tmp_path / f"{base}.expected"
    sh(f"cat {src} | {comp.cmd} > {expected}")
    size = os.path.getsize(expected)
    # the compressor's close committed it: the whole .dat is in the bucket already
    assert m.head(f"dump/{base}.vma.dat")["ContentLength"] == size

    # 5. rename to the final name, then stat it and log its size: all of it, at once
    os.rename(dat, os.path.join(dump, archive))
    assert os.stat(os.path.join(dump, archive)).st_size == size
    assert not os.path.exists(dat)

    # end of the task: the config directory goes with rmtree
    run_py("import shutil; shutil.rmtree(sys.argv[1])", tmpdir)
    assert not os.path.exists(tmpdir)

    # 6. the job log, copied with cp
    log = tmp_path / f"{base}.log"
    log.write_text(f"INFO: Starting Backup of VM {vmid} (qemu)\nINFO: creating vzdump archive '{archive}'\n"
                   * 40 + f"INFO: archive file size: {size}\nINFO: Finished Backup of VM {vmid}\n")
    sh(f"cp {log} {os.path.join(dump, base + '.log')}")
    assert m.get(f"dump/{base}.log") == log.read_bytes()

    digest = sha256_file(expected) if comp.stable else None
    expected.unlink()
    return Backup(base=base, archive=archive, size=size, digest=digest, existing=existing)


def assert_archive(m, rel: str, backup: Backup, src, comp: Compressor, tmp_path) -> None:
    """After the fact: the object in the bucket (decompressed from a boto3 download), then
    a decompression of the file read through the mount; both give the source back."""
    head = m.head(rel)
    assert head["ContentLength"] == backup.size
    assert int(head["Metadata"]["mode"]) == stat.S_IFREG | 0o644
    in_bucket = m.sha256(rel)
    if backup.digest is not None:
        assert in_bucket == backup.digest
    assert sha256_file(m.path(rel)) == in_bucket
    fetched = tmp_path / "fetched-from-bucket"
    m.s3.download_file(m.bucket, m.key(rel), str(fetched))
    sh(f"{comp.decompress} {fetched} | cmp - {src}")
    fetched.unlink()
    sh(f"{comp.decompress} {m.path(rel)} | cmp - {src}")


# ----------------------------------------------------------------------------- 1. VM backups


@pytest.mark.parametrize("compression", ["zstd", "gzip", "lzo"])
def test_vm_backup_through_compressor(mount, tmp_path, compressors, compression):
    comp = compressors[compression]
    m = mount()
    make_layout(m)
    src = tmp_path / "disk.raw"
    disk_data(src, 24, seed=100)

    # a crashed earlier run of the same job left its .dat (never listed as a backup)
    base = ts_name("qemu", 100, 14, 1, 30, 5)
    sh(f"head -c {3 * MiB + 17} /dev/urandom > {m.path('dump', base + '.vma.dat')}")
    assert m.head(f"dump/{base}.vma.dat")["ContentLength"] == 3 * MiB + 17

    backup = vzdump_vm(m, tmp_path, 100, base, src, comp)
    assert backup.existing == 0
    assert backup.size > 12 * MiB  # the random half does not compress: a multipart stream
    dump_files = {f"pve/dump/{backup.archive}", f"pve/dump/{base}.log"}
    assert m.keys() == {m.key(d) + "/" for d in PVE_DIRS + ["template"]} | dump_files
    assert_archive(m, f"dump/{backup.archive}", backup, src, comp, tmp_path)
    assert sorted(os.listdir(m.path("dump"))) == sorted([backup.archive, base + ".log"])

    # the next night's backup sees one existing backup of this guest
    base2 = ts_name("qemu", 100, 15, 1, 30, 7)
    src2 = tmp_path / "disk2.raw"
    disk_data(src2, 6, seed=101)
    backup2 = vzdump_vm(m, tmp_path, 100, base2, src2, comp)
    assert backup2.existing == 1
    assert_archive(m, f"dump/{backup2.archive}", backup2, src2, comp, tmp_path)
    assert_archive(m, f"dump/{backup.archive}", backup, src, comp, tmp_path)  # untouched

    kinds = assert_pve_names(m)
    assert sorted(kinds.values()) == ["backup", "backup", "backup.log", "backup.log"]
    assert_no_uploads(m)
    assert_log_clean(m)


# ----------------------------------------------------------------------------- 2. container backup


def make_rootfs(root) -> None:
    """A small container root: text, binaries, an empty dir, a symlink, odd modes."""
    os.makedirs(root / "etc" / "network")
    os.makedirs(root / "usr" / "bin")
    os.makedirs(root / "var" / "empty")
    os.makedirs(root / "root")
    (root / "etc" / "hostname").write_text("ct101\n")
    (root / "etc" / "network" / "interfaces").write_text("auto eth0\niface eth0 inet dhcp\n" * 20)
    for i in range(6):
        (root / "usr" / "bin" / f"tool{i}").write_bytes(os.urandom(1 * MiB + i * 4099))
        os.chmod(root / "usr" / "bin" / f"tool{i}", 0o755)
    (root / "var" / "log.txt").write_bytes(b"log line of the container\n" * 200_000)
    (root / "root" / ".secret").write_text("s3cr3t\n")
    os.chmod(root / "root" / ".secret", 0o600)
    os.chmod(root / "root", 0o700)
    os.symlink("../usr/bin/tool0", root / "etc" / "tool-link")


def test_container_backup_tar_zstd_and_restore(mount, tmp_path, compressors):
    m = mount()
    make_layout(m)
    rootfs = tmp_path / "rootfs"
    make_rootfs(rootfs)
    base = ts_name("lxc", 101, 16, 2, 0, 1)
    dat, archive = m.path("dump", f"{base}.tar.dat"), m.path("dump", f"{base}.tar.zst")

    # containers keep their temp dir in /var/tmp unless `df -T` names a POSIX filesystem
    fstype = sh(f"df -P -T {m.mp} | tail -n 1").stdout.split()[1]
    assert fstype not in {"ext3", "ext4", "nfs", "nfs4", "reiserfs", "xfs"}, fstype
    tar_cmd = f"tar -C {rootfs} --numeric-owner --sparse -cpf - ./"
    sh(f"{tar_cmd} | zstd -q --threads=1 > {dat}")
    assert sorted(os.listdir(m.path("dump"))) == [f"{base}.tar.dat"]
    expected = tmp_path / "expected.tar.zst"
    sh(f"{tar_cmd} | zstd -q --threads=1 > {expected}")
    os.rename(dat, archive)
    assert os.stat(archive).st_size == os.path.getsize(expected)
    log = tmp_path / "ct.log"
    log.write_text("INFO: Starting Backup of VM 101 (lxc)\nINFO: Finished Backup of VM 101\n")
    sh(f"cp {log} {m.path('dump', base + '.log')}")

    rel = f"dump/{base}.tar.zst"
    assert m.head(rel)["ContentLength"] == os.path.getsize(expected)
    assert m.sha256(rel) == sha256_file(expected)
    assert volume_kind(rel) == "backup"

    # restore as pct restore does: tar xpf - --zstd, reading the archive sequentially
    restored = tmp_path / "restored"
    restored.mkdir()
    sh(f"tar -C {restored} --numeric-owner --zstd -xpf {archive}")
    sh(f"diff -r --no-dereference {rootfs} {restored}")
    assert os.readlink(restored / "etc" / "tool-link") == "../usr/bin/tool0"
    assert stat.S_IMODE(os.stat(restored / "root" / ".secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(restored / "usr" / "bin" / "tool3").st_mode) == 0o755
    assert os.path.isdir(restored / "var" / "empty")

    # an uncompressed container backup: tar straight into the .dat; tar -t of a regular
    # file seeks over the members' data (lseek/pread on the mount)
    base2 = ts_name("lxc", 101, 17, 2, 0, 1)
    sh(f"{tar_cmd} > {m.path('dump', base2 + '.tar.dat')}")
    os.rename(m.path("dump", base2 + ".tar.dat"), m.path("dump", base2 + ".tar"))
    plain = tmp_path / "plain.tar"
    sh(f"{tar_cmd} > {plain}")
    assert os.stat(m.path("dump", base2 + ".tar")).st_size == os.path.getsize(plain)
    listing = sh(f"tar -tvf {m.path('dump', base2 + '.tar')}").stdout
    assert listing == sh(f"tar -tvf {plain}").stdout
    assert "./usr/bin/tool5" in listing
    one = sh(f"tar -xOf {m.path('dump', base2 + '.tar')} ./etc/hostname").stdout
    assert one == "ct101\n"
    assert m.sha256(f"dump/{base2}.tar") == sha256_file(plain)

    kinds = assert_pve_names(m)
    assert sorted(kinds.values()) == ["backup", "backup", "backup.log"]
    assert_no_uploads(m)
    assert_log_clean(m)


# ----------------------------------------------------------------------------- 3. notes, protection


PROTECT = """
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDONLY, 0o666)  # sysopen($path, O_CREAT)
st = os.fstat(fd)
os.close(fd)
print(st.st_size)
"""


def test_notes_and_protection(mount, tmp_path, compressors):
    comp = compressors["zstd"]
    m = mount()
    make_layout(m)
    src = tmp_path / "disk.raw"
    disk_data(src, 4, seed=200)
    b = vzdump_vm(m, tmp_path, 200, ts_name("qemu", 200, 18, 3), src, comp)
    archive = m.path("dump", b.archive)
    notes, protected = archive + ".notes", archive + ".protected"

    # notes set at backup time (--notes-template): no .notes exists yet
    tmp1 = set_contents(notes, "nightly backup of vm200\n")
    assert m.get(f"dump/{b.archive}.notes") == b"nightly backup of vm200\n"
    # edited in the GUI: a new temp file renamed OVER the existing .notes
    tmp2 = set_contents(notes, "before the upgrade to 9.1\nkeep it\n")
    for tmp in (tmp1, tmp2):
        assert not os.path.exists(tmp)
        assert m.key(os.path.relpath(tmp, m.mp)) not in m.keys()
    with open(notes) as f:
        assert f.read() == "before the upgrade to 9.1\nkeep it\n"
    assert m.get(f"dump/{b.archive}.notes") == b"before the upgrade to 9.1\nkeep it\n"
    assert int(m.meta(f"dump/{b.archive}.notes")["mode"]) == stat.S_IFREG | 0o644

    # a stale temp file of the same name (a pid reused after a crash): O_EXCL refuses it
    stale = f"{notes}.tmp.4242"
    with open(stale, "w") as f:
        f.write("stale")
    run_py("""
        try:
            os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            sys.exit("O_EXCL opened an existing file")
    """, stale)
    assert m.get(os.path.relpath(stale, m.mp)) == b"stale"
    os.unlink(stale)

    # protection: O_CREAT with read-only access, zero length
    assert not os.path.exists(protected)
    assert run_py(PROTECT, protected).strip() == "0"
    assert os.path.exists(protected)  # what get_volume_attribute checks: -e
    assert os.stat(protected).st_size == 0
    head = m.head(f"dump/{b.archive}.protected")
    assert head["ContentLength"] == 0
    assert int(head["Metadata"]["mode"]) == stat.S_IFREG | 0o644
    # protecting twice is harmless
    assert run_py(PROTECT, protected).strip() == "0"
    assert m.head(f"dump/{b.archive}.protected")["ContentLength"] == 0

    kinds = assert_pve_names(m)
    assert sorted(kinds.values()) == ["backup", "backup.log", "backup.notes", "backup.protected"]

    # all of it survives a remount
    m.remount()
    with open(notes) as f:
        assert f.read() == "before the upgrade to 9.1\nkeep it\n"
    assert os.path.exists(protected) and os.stat(protected).st_size == 0

    # notes emptied: unlink; unprotect: unlink
    os.unlink(notes)
    assert not os.path.exists(notes)
    assert m.key(f"dump/{b.archive}.notes") not in m.keys()
    os.unlink(protected)
    assert not os.path.exists(protected)
    assert sorted(os.listdir(m.path("dump"))) == sorted([b.archive, b.base + ".log"])
    assert_archive(m, f"dump/{b.archive}", b, src, comp, tmp_path)
    assert_pve_names(m)
    assert_no_uploads(m)
    assert_log_clean(m)


# ----------------------------------------------------------------------------- 4. pruning


def prune(dump: str, vmid: int, keep_last: int) -> list[str]:
    """prune-backups keep-last for one guest: age from the name, protected ones kept;
    removal unlinks the archive, then its .notes and .log. Returns removed archives."""
    mine = []
    for name in os.listdir(dump):
        match = BACKUP_RE.fullmatch(name)
        if match and int(match[2]) == vmid:
            mine.append((match.group(3, 4, 5, 6, 7, 8), name))
    mine.sort(reverse=True)
    removed = []
    for _, name in mine[keep_last:]:
        path = os.path.join(dump, name)
        if os.path.exists(path + ".protected"):
            continue
        os.unlink(path)
        base = re.sub(r"\.(tgz|(vma|tar)(\.(gz|lzo|zst|bz2))?)$", "", name)
        for side in (path + ".notes", os.path.join(dump, base + ".log")):
            if os.path.exists(side):
                os.unlink(side)
        removed.append(name)
    return removed


def test_pruning_and_rmdir_of_dump(mount, tmp_path, compressors):
    comp = compressors["zstd"]
    m = mount()
    make_layout(m)
    dump = m.path("dump")
    backups = {}
    for i, (vmid, day) in enumerate([(300, 10), (300, 11), (300, 12), (300, 13), (301, 12)]):
        src = tmp_path / f"src{i}"
        disk_data(src, 1, seed=300 + i)
        b = vzdump_vm(m, tmp_path, vmid, ts_name("qemu", vmid, day, 4, 5, 6), src, comp)
        set_contents(m.path("dump", b.archive + ".notes"), f"backup {i}\n")
        backups[i] = b
    assert [backups[i].existing for i in range(5)] == [0, 1, 2, 3, 0]
    # the oldest backup of 300 is protected
    run_py(PROTECT, m.path("dump", backups[0].archive + ".protected"))
    assert os.path.exists(m.path("dump", backups[0].archive + ".protected"))
    assert not os.path.exists(m.path("dump", backups[1].archive + ".protected"))

    # keep-last=1 for 300: removes 11th and 12th, keeps 13th (newest) and 10th (protected)
    removed = prune(dump, 300, keep_last=1)
    assert sorted(removed) == sorted([backups[1].archive, backups[2].archive])
    with pytest.raises(OSError) as e:
        os.rmdir(dump)  # pve-storage tries, expects failure
    assert e.value.errno == errno.ENOTEMPTY

    left = {0, 3, 4}
    expected = set()
    for i in left:
        b = backups[i]
        expected |= {b.archive, b.archive + ".notes", b.base + ".log"}
    expected.add(backups[0].archive + ".protected")
    assert set(os.listdir(dump)) == expected
    assert {k for k in m.keys() if k.startswith("pve/dump/") and k != "pve/dump/"} == \
        {f"pve/dump/{n}" for n in expected}
    for i in (1, 2):
        assert not os.path.exists(m.path("dump", backups[i].archive))
    assert_pve_names(m)
    for i in left:
        assert m.sha256(f"dump/{backups[i].archive}") == backups[i].digest

    # the rest goes, one guest at a time; dump/ refuses rmdir while anything is in it
    os.unlink(m.path("dump", backups[0].archive + ".protected"))
    assert sorted(prune(dump, 300, keep_last=0)) == sorted([backups[0].archive, backups[3].archive])
    with pytest.raises(OSError) as e:
        os.rmdir(dump)
    assert e.value.errno == errno.ENOTEMPTY
    assert prune(dump, 301, keep_last=0) == [backups[4].archive]
    assert os.listdir(dump) == []

    # an empty dump/ is a real directory: it persists, across a remount too
    assert "pve/dump/" in m.keys()
    m.remount()
    assert os.path.isdir(dump) and os.listdir(dump) == []
    assert "pve/dump/" in m.keys()
    os.rmdir(dump)
    assert not os.path.exists(dump)
    assert m.keys() == {m.key(d) + "/" for d in PVE_DIRS + ["template"] if d != "dump"}
    m.remount()
    assert not os.path.exists(dump)
    assert_no_uploads(m)
    assert_log_clean(m)


# ----------------------------------------------------------------------------- 5. restore


def test_restore_and_show_configuration(mount, tmp_path, compressors):
    comp = compressors["zstd"]
    m = mount()
    make_layout(m)
    src = tmp_path / "disk.raw"
    disk_data(src, 30, seed=500)
    b = vzdump_vm(m, tmp_path, 500, ts_name("qemu", 500, 20, 22, 15, 0), src, comp)
    rel = f"dump/{b.archive}"
    archive = m.path(rel)
    before_head = m.head(rel)
    before_stat = os.stat(archive)
    before_keys = m.keys()

    # "show configuration": the start of the archive, then the reader goes away
    with open(src, "rb") as f:
        first = f.read(100)
    for _ in range(3):
        r = subprocess.run(["bash", "-c", f"zstd -q -d -c {archive} | head -c 100"], capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr  # head's status: the pipe's last command
        assert r.stdout == first
    # the same with an explicit early close after a few bytes (vma config reads the header)
    run_py("""
        fd = os.open(sys.argv[1], os.O_RDONLY)
        assert os.read(fd, 4) == b"\\x28\\xb5\\x2f\\xfd"
        os.close(fd)
    """, archive)
    # broken pipe is normal for the decompressor; zstd reports it and exits non-zero
    r = subprocess.run(["bash", "-c", f"set -o pipefail; zstd -q -d -c {archive} | head -c 100 > /dev/null"],
                       capture_output=True, timeout=60)
    assert r.returncode != 0

    # the mount is fine afterwards: nothing was written, nothing left open on the server side
    assert_no_uploads(m)
    after_head = m.head(rel)
    for field in ("ETag", "ContentLength", "LastModified", "Metadata"):
        assert after_head[field] == before_head[field], field
    after_stat = os.stat(archive)
    assert (after_stat.st_size, after_stat.st_mode, after_stat.st_mtime) == \
        (before_stat.st_size, before_stat.st_mode, before_stat.st_mtime)
    assert m.keys() == before_keys

    # restore: a sequential read through the decompressor, compared with the source
    sh(f"zstd -q -d -c {archive} | cmp - {src}")
    # twice at once (restore of one backup while another reads it to verify)
    sh(f"zstd -q -d -c {archive} | cmp - {src} & a=$!; zstd -q -t {archive} & b=$!; wait $a; wait $b")
    assert m.sha256(rel) == b.digest
    assert_no_uploads(m)
    assert_pve_names(m)
    assert_log_clean(m)


# ----------------------------------------------------------------------------- 6. ISO, templates, import


DOWNLOAD = """
# download_file_from_url: wget -O <dest>.tmp_dwnl.<pid> (fopen "wb"), then the whole file
# is read back for the checksum
import hashlib
dest, src = sys.argv[1], sys.argv[2]
tmp = f"{dest}.tmp_dwnl.{os.getpid()}"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
with open(src, "rb") as f:
    while chunk := f.read(256 << 10):  # wget writes what arrives
        write_all(fd, chunk)
os.close(fd)
h = hashlib.sha256()
with open(tmp, "rb") as f:
    while chunk := f.read(1 << 20):
        h.update(chunk)
print(tmp)
print(h.hexdigest())
"""


def download(dest: str, src) -> tuple[str, str]:
    out = run_py(DOWNLOAD, dest, str(src)).split()
    tmp, digest = out
    assert re.fullmatch(re.escape(dest) + r"\.tmp_dwnl\.\d+", tmp), tmp
    assert os.path.exists(tmp)
    return tmp, digest


def test_iso_upload_download_and_dd_import(mount, tmp_path, compressors):
    m = mount()
    make_layout(m)
    iso_dir, cache_dir = m.path("template", "iso"), m.path("template", "cache")

    # upload: staged in /var/tmp, then cp straight to the final name
    iso = tmp_path / "upload.iso"
    digest = disk_data(iso, 9, seed=600)
    name = "debian-12.5.0-amd64-netinst.iso"
    sh(f"cp {iso} {os.path.join(iso_dir, name)}")
    assert m.head(f"template/iso/{name}")["ContentLength"] == 9 * MiB
    assert m.sha256(f"template/iso/{name}") == digest
    assert volume_kind(f"template/iso/{name}") == "iso"

    # the cross-node copy: scp -p (utimes + chmod)
    os.utime(iso, (1_700_000_000, 1_700_000_000))
    os.chmod(iso, 0o640)
    sh(f"cp -p {iso} {os.path.join(iso_dir, 'node2-copy.iso')}")
    st = os.stat(os.path.join(iso_dir, "node2-copy.iso"))
    assert (int(st.st_mtime), stat.S_IMODE(st.st_mode)) == (1_700_000_000, 0o640)

    # download from URL: <dest>.tmp_dwnl.<pid>, read back for the checksum, renamed
    dl_src = tmp_path / "ubuntu.iso"
    dl_digest = disk_data(dl_src, 11, seed=601)
    dest = os.path.join(iso_dir, "ubuntu-24.04.1-live-server-amd64.iso")
    tmp, got = download(dest, dl_src)
    assert got == dl_digest
    if need("qemu-img"):
        info = json.loads(sh(f"qemu-img info --output=json {tmp}").stdout)
        assert info["format"] == "raw" and info["virtual-size"] == 11 * MiB
    os.rename(tmp, dest)
    assert not os.path.exists(tmp)
    assert os.stat(dest).st_size == 11 * MiB
    assert m.sha256(os.path.relpath(dest, m.mp)) == dl_digest

    # a compressed download: decompressed to <dest>.tmp_dcom.<pid>, that one renamed
    gz_src = tmp_path / "alpine.img.gz"
    img = tmp_path / "alpine.img"
    img_digest = disk_data(img, 5, seed=602)
    sh(f"gzip -n -c {img} > {gz_src}")
    dest = os.path.join(iso_dir, "alpine-virt-3.20.img")
    tmp, got = download(dest, gz_src)
    assert got == sha256_file(gz_src)
    dcom = tmp.replace(".tmp_dwnl.", ".tmp_dcom.")
    sh(f"gzip -d -c < {tmp} > {dcom}")
    os.unlink(tmp)
    os.rename(dcom, dest)
    assert m.sha256(os.path.relpath(dest, m.mp)) == img_digest

    # pveam download of a template: tar -t of the temp file, then renamed
    rootfs = tmp_path / "rootfs"
    make_rootfs(rootfs)
    tmpl = tmp_path / "tmpl.tar.zst"
    sh(f"tar -C {rootfs} -cpf - ./ | zstd -q > {tmpl}")
    dest = os.path.join(cache_dir, "debian-12-standard_12.7-1_amd64.tar.zst")
    tmp, got = download(dest, tmpl)
    assert got == sha256_file(tmpl)
    members = sh(f"tar --zstd -tf {tmp}").stdout.split()
    assert "./etc/hostname" in members and "./usr/bin/tool5" in members
    os.rename(tmp, dest)
    assert m.sha256(os.path.relpath(dest, m.mp)) == got

    # migration import: dd of=<final> conv=excl bs=64k
    ct = tmp_path / "alpine-3.20-default_20240908_amd64.tar.xz"
    sh(f"tar -C {rootfs} -cJf {ct} ./etc")
    target = os.path.join(cache_dir, ct.name)
    sh(f"dd if={ct} of={target} conv=excl bs=64k status=none")
    assert m.sha256(os.path.relpath(target, m.mp)) == sha256_file(ct)
    mtime = m.head(os.path.relpath(target, m.mp))["LastModified"]
    # a second import of the same name must not overwrite it
    r = subprocess.run(["dd", f"if={iso}", f"of={target}", "conv=excl", "bs=64k", "status=none"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "File exists" in r.stderr, r.stderr
    assert m.sha256(os.path.relpath(target, m.mp)) == sha256_file(ct)
    assert m.head(os.path.relpath(target, m.mp))["LastModified"] == mtime
    sh(f"tar -tJf {target} ./etc/hostname")
    # and an ISO migrated the same way
    sh(f"dd if={iso} of={os.path.join(iso_dir, 'migrated.iso')} conv=excl bs=64k status=none")
    assert m.sha256("template/iso/migrated.iso") == digest

    kinds = assert_pve_names(m)
    assert sorted(kinds.values()) == ["iso"] * 5 + ["vztmpl"] * 2
    # everything is read back intact through the mount
    assert sha256_file(m.path("template/iso", name)) == digest
    assert sha256_file(m.path("template/iso", "ubuntu-24.04.1-live-server-amd64.iso")) == dl_digest
    assert sha256_file(m.path("template/iso", "alpine-virt-3.20.img")) == img_digest
    assert_no_uploads(m)
    assert_log_clean(m)


# ----------------------------------------------------------------------------- 7. hookscript


HOOK = """#!/bin/sh
# Proxmox hookscript: <vmid> <phase>
echo "hook for $1 in phase $2"
[ "$2" = pre-start ] && echo "prepared $1" >&2
exit 0
"""

# pve-guest-common check_hookscript: -f $path, then -x $path (perl's -x: stat mode bits)
PERL_CHECK = 'die "not a file\\n" unless -f $ARGV[0]; die "script is not executable\\n" unless -x $ARGV[0];'


def check_hookscript(path: str) -> None:
    if need("perl"):
        sh(f"perl -e '{PERL_CHECK}' {path}")
    assert os.path.isfile(path)
    assert os.stat(path).st_mode & 0o111, oct(os.stat(path).st_mode)  # what perl's -x tests as root
    assert os.access(path, os.X_OK)


def run_hook(path: str, vmid: int, phase: str) -> subprocess.CompletedProcess:
    return subprocess.run([path, str(vmid), phase], capture_output=True, text=True, timeout=30)


def test_hookscript_in_snippets(mount, tmp_path):
    m = mount()
    make_layout(m)
    local = tmp_path / "hook.sh"
    local.write_text(HOOK)
    hook = m.path("snippets", "hookscript.sh")
    sh(f"cp {local} {hook}")  # uploaded as 0644: not executable yet
    with pytest.raises(PermissionError):
        run_hook(hook, 100, "pre-start")

    os.chmod(hook, 0o755)
    check_hookscript(hook)
    r = run_hook(hook, 100, "pre-start")
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == ("hook for 100 in phase pre-start\n", "prepared 100\n")
    assert int(m.meta("snippets/hookscript.sh")["mode"]) == stat.S_IFREG | 0o755
    assert m.get("snippets/hookscript.sh") == HOOK.encode()

    # a VM start on another day, on a fresh mount: qm start checks -f / -x, then runs it
    m.remount()
    check_hookscript(hook)
    assert stat.S_IMODE(os.stat(hook).st_mode) == 0o755
    r = run_hook(hook, 101, "post-stop")
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == ("hook for 101 in phase post-stop\n", "")
    assert os.listdir(m.path("snippets")) == ["hookscript.sh"]
    assert_pve_names(m)
    assert_no_uploads(m)
    assert_log_clean(m)


def test_hookscript_checked_right_after_snippets_listing(mount, tmp_path):
    """The storage content view / `pvesm list` (readdir + stat of snippets/) and then a
    VM start on a node that mounted the bucket freshly (reboot, other node of a cluster)."""
    m = mount()
    make_layout(m)
    hook = m.path("snippets", "hookscript.sh")
    (tmp_path / "hook.sh").write_text(HOOK)
    sh(f"cp {tmp_path / 'hook.sh'} {hook} && chmod 0755 {hook}")
    assert int(m.meta("snippets/hookscript.sh")["mode"]) == stat.S_IFREG | 0o755
    m.remount()
    # list_volumes of snippets: readdir, then a stat of each entry
    names = os.listdir(m.path("snippets"))
    assert names == ["hookscript.sh"]
    for name in names:
        assert stat.S_ISREG(os.stat(m.path("snippets", name)).st_mode)
    # qm start: check_hookscript (perl -f, -x), then exec
    check_hookscript(hook)
    assert stat.S_IMODE(os.stat(hook).st_mode) == 0o755
    r = run_hook(hook, 102, "pre-start")
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- 8. images


def test_image_allocation_listing_and_qemu_img_info(mount):
    m = mount()
    make_layout(m)
    vmdir = m.path("images", "100")
    sh(f"mkdir -p {vmdir}")
    raw, qcow2 = os.path.join(vmdir, "vm-100-disk-0.raw"), os.path.join(vmdir, "vm-100-disk-1.qcow2")
    raw_size, qcow2_size = 48 * MiB, 64 * MiB
    # alloc_image runs under umask 0037; raw is a sparse ftruncate to full size
    sh(f"umask 0037; truncate -s {raw_size} {raw}")
    have_qemu_img = bool(need("qemu-img"))
    if have_qemu_img:
        sh(f"umask 0037; qemu-img create -f qcow2 -o preallocation=metadata {qcow2} {qcow2_size // KiB}K")
    st = os.stat(raw)
    assert st.st_size == raw_size
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert 0 <= st.st_blocks * 512 <= raw_size  # "used" comes from st_blocks: never above the size
    assert m.head("images/100/vm-100-disk-0.raw")["ContentLength"] == raw_size
    assert int(m.meta("images/100/vm-100-disk-0.raw")["mode"]) == stat.S_IFREG | 0o640

    # every listing: glob images/[0-9][0-9]*/*, then qemu-img info on each
    def listing():
        found = sorted(glob.glob(os.path.join(m.mp, "images", "[0-9][0-9]*", "*")))
        infos = {}
        for path in found:
            if have_qemu_img:
                infos[os.path.basename(path)] = json.loads(
                    sh(f"qemu-img info --output=json {path}", timeout=60).stdout)
        return [os.path.relpath(p, m.mp) for p in found], infos

    names, infos = listing()
    expected = ["images/100/vm-100-disk-0.raw"] + (["images/100/vm-100-disk-1.qcow2"] if have_qemu_img else [])
    assert names == sorted(expected)
    if have_qemu_img:
        assert infos["vm-100-disk-0.raw"]["format"] == "raw"
        assert infos["vm-100-disk-0.raw"]["virtual-size"] == raw_size
        assert infos["vm-100-disk-1.qcow2"]["format"] == "qcow2"
        assert infos["vm-100-disk-1.qcow2"]["virtual-size"] == qcow2_size
        assert stat.S_IMODE(os.stat(qcow2).st_mode) == 0o640
        sh(f"qemu-img check {qcow2}")
    assert all(volume_kind(n) == "images" for n in names)

    # the same after a remount (pvestatd lists again and again)
    m.remount()
    names2, infos2 = listing()
    assert names2 == names
    if have_qemu_img:
        for n in infos:
            assert infos2[n]["virtual-size"] == infos[n]["virtual-size"], n
            assert infos2[n]["format"] == infos[n]["format"], n
    assert stat.S_IMODE(os.stat(raw).st_mode) == 0o640
    # the raw image reads back as zeros
    sh(f"cmp -n {raw_size} {raw} /dev/zero")

    # free_image: unlink, then rmdir of the VM's directory (ENOTEMPTY expected and ignored)
    if have_qemu_img:
        os.unlink(qcow2)
        with pytest.raises(OSError) as e:
            os.rmdir(vmdir)
        assert e.value.errno == errno.ENOTEMPTY
        assert os.listdir(vmdir) == ["vm-100-disk-0.raw"]
    os.unlink(raw)
    os.rmdir(vmdir)  # the last image gone: the directory goes too
    assert not os.path.exists(vmdir)
    assert m.key("images/100/") not in m.keys() and m.key("images/") in m.keys()
    assert glob.glob(os.path.join(m.mp, "images", "[0-9][0-9]*", "*")) == []
    assert_pve_names(m)
    assert_no_uploads(m)
    assert_log_clean(m)


def _aside_keys(m) -> list[str]:
    return sorted(k for k in m.keys() if k.startswith(m.key(".s3pvefs-open/")))


def _read_rest(fd: int, offset: int) -> bytes:
    got = []
    while chunk := os.pread(fd, 4 * MiB, offset):
        got.append(chunk)
        offset += len(chunk)
    return b"".join(got)


def test_rsync_replacing_an_iso_a_vm_reads_leaves_the_reader_on_the_old_bytes(mount, tmp_path):
    """A VM keeps its ISO open while an admin replaces the file with `rsync` (a temporary
    name, then a rename over it). As on a local disk, the open handle reads the old bytes
    to the end, the name gives the new ones, and the copy kept for the reader (hidden from
    the mount) goes at its close. With the daemon killed (-9) while it is open, the next
    mount deletes that copy."""
    m = mount()
    make_layout(m)
    iso = m.path("template", "iso", "debian-12.iso")
    old, new, newer = (random.Random(seed).randbytes(24 * MiB + 1234) for seed in (1, 2, 3))
    with open(iso, "wb") as f:  # streamed: a multipart object, whose copy gets another ETag
        f.write(old)
    m.remount()  # the reader starts from a HEAD: its GETs carry the old ETag (If-Match)
    fd = os.open(iso, os.O_RDONLY)
    try:
        head = os.pread(fd, MiB, 0)
        (tmp_path / "debian-12.iso").write_bytes(new)
        sh(f"rsync {tmp_path / 'debian-12.iso'} {m.path('template', 'iso')}/")
        assert len(_aside_keys(m)) == 1
        assert sorted(os.listdir(m.mp)) == sorted({p.split("/")[0] for p in PVE_DIRS})  # the copy is hidden
        assert os.fstat(fd).st_nlink == 0 and os.fstat(fd).st_size == len(old)
        assert hashlib.sha256(head + _read_rest(fd, MiB)).hexdigest() == hashlib.sha256(old).hexdigest()
        assert sha256_file(iso) == hashlib.sha256(new).hexdigest()
    finally:
        os.close(fd)
    deadline = time.monotonic() + 10  # FUSE's release runs after close() returned
    while _aside_keys(m):
        assert time.monotonic() < deadline, f"kept aside after the last close: {_aside_keys(m)}"
        time.sleep(0.1)
    assert m.sha256("template/iso/debian-12.iso") == hashlib.sha256(new).hexdigest()

    fd = os.open(iso, os.O_RDONLY)
    os.pread(fd, MiB, 0)
    (tmp_path / "debian-12.iso").write_bytes(newer)
    sh(f"rsync {tmp_path / 'debian-12.iso'} {m.path('template', 'iso')}/")
    aside = _aside_keys(m)
    assert len(aside) == 1
    os.kill(daemon_pid(m), signal.SIGKILL)
    with contextlib.suppress(OSError):  # ECONNABORTED: the daemon is gone
        os.close(fd)
    subprocess.run(["fusermount3", "-uz", m.mp], capture_output=True)
    assert _aside_keys(m) == aside  # nobody deleted it
    m.do_mount()
    assert _aside_keys(m) == []
    assert f"deleted {aside[0]}" in m.log_text()
    assert sha256_file(iso) == hashlib.sha256(newer).hexdigest()


@pytest.mark.parametrize("replace", ["rm; cp", "mv"])
def test_a_file_replaced_while_open_stays_its_own(mount, tmp_path, replace):
    """`rm` then `cp` of a new version, or `mv` of one over it, while a reader and a
    writer still have the old file open: as on a local disk, both go on with the old file
    (its object is copied aside as the name is taken), the name holds the new one, and
    the copy goes with the last close."""
    m = mount()
    make_layout(m)
    snippet = m.path("snippets", "hook.pl")
    old, new = random.Random(4).randbytes(3 * MiB), random.Random(5).randbytes(2 * MiB)
    with open(snippet, "wb") as f:
        f.write(old)
    m.remount()
    reader, writer = os.open(snippet, os.O_RDONLY), os.open(snippet, os.O_RDWR)
    try:
        assert os.pread(reader, 100, 0) == old[:100]
        (tmp_path / "hook.pl").write_bytes(new)
        if replace == "mv":
            sh(f"cp {tmp_path / 'hook.pl'} {snippet}.new && mv {snippet}.new {snippet}")
        else:
            sh(f"rm {snippet} && cp {tmp_path / 'hook.pl'} {snippet}")
        assert sha256_file(snippet) == hashlib.sha256(new).hexdigest()
        assert len(_aside_keys(m)) == 1
        assert os.pwrite(writer, b"patched", 10) == 7
        assert os.fstat(writer).st_nlink == 0
        want = old[:10] + b"patched" + old[17:]
        assert os.pread(writer, len(old) + 1, 0) == want
        assert os.pread(reader, len(old), 100) == want[100:]  # one file: the writer's bytes
    finally:
        os.close(reader)
        os.close(writer)
    deadline = time.monotonic() + 10  # FUSE's release runs after close() returned
    while _aside_keys(m):
        assert time.monotonic() < deadline, f"kept aside after the last close: {_aside_keys(m)}"
        time.sleep(0.1)
    assert m.get("snippets/hook.pl") == new
    assert sorted(os.listdir(m.path("snippets"))) == ["hook.pl"]
