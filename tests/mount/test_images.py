"""VM disk images on the mount (images/<vmid>/): qemu-img, dd conv=sparse, fio with
O_DIRECT, each followed by unmount, mount again and a check of what S3 holds.

Images are changed in place through the sparse write-back cache (write/sparse.py):
the daemon's local disk holds only what was written or read, and a commit sends
the changed windows and copies the rest server-side."""

from __future__ import annotations

import json
import mmap
import os
import subprocess

import pytest

from tests.mount.conftest import run_cli
from tests.mount.test_streaming import MiB, daemon_pid, disk_write_bytes, sh

pytestmark = pytest.mark.mount
GiB = 1 << 30

# moto (default tier) is slow to take bytes; Ceph RGW (slow tier) gets disk-sized images.
SIZES = {"moto": {"qcow2": "256M", "raw": 128 * MiB, "rewrite": 256 * MiB},
         "ceph": {"qcow2": "1G", "raw": 1 * GiB, "rewrite": 4 * GiB}}  # the test OSD has 24G


def status(m) -> dict:
    r = run_cli("status", m.mp, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def qemu_img(*args: str, cwd: str | None = None) -> str:
    r = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert r.returncode == 0, f"qemu-img {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def info(path: str, *extra: str) -> dict:
    return json.loads(qemu_img("info", "--output=json", *extra, path))


def check_clean(path: str) -> None:
    out = json.loads(qemu_img("check", "--output=json", path))
    assert out.get("check-errors", 0) == 0 and not out.get("corruptions") and not out.get("leaks"), out


def _images(request, server: str):
    m = request.getfixturevalue("mount" if server == "moto" else "ceph_mount")()
    for vmid in ("100", "101"):
        os.makedirs(m.path("images", vmid))
    m.sizes = SIZES[server]
    return m


@pytest.fixture(params=["moto", pytest.param("ceph", marks=pytest.mark.slow)])
def images(request):
    return _images(request, request.param)


def test_rewriting_1_mib_in_the_middle_sends_a_part_not_the_object(images):
    m = images
    size = m.sizes["rewrite"]
    disk = m.path("images/100/vm-100-disk-9.raw")
    sh(f"head -c {size} /dev/zero > {disk}")  # streamed in: no cache involved
    m.remount()
    before = status(m)
    patch = os.urandom(MiB)
    at = size // 2 + 12345
    fd = os.open(disk, os.O_RDWR)
    try:
        assert os.pwrite(fd, patch, at) == MiB
    finally:
        os.close(fd)  # the commit: changed windows sent, the rest copied
    after = status(m)
    sent = after["bytes"]["sent"] - before["bytes"]["sent"]
    received = after["bytes"]["received"] - before["bytes"]["received"]
    requests = {k: v - before["requests"].get(k, 0) for k, v in after["requests"].items()
                if v != before["requests"].get(k, 0)}
    print(f"\n1 MiB rewritten at {at} of a {size / GiB:.2f} GiB object: client sent {sent / MiB:.1f} MiB, "
          f"received {received / MiB:.1f} MiB, requests {requests}")
    assert sent <= 16 * MiB + 4096, "more than two windows sent"
    assert received <= 16 * MiB + 4096
    assert requests.get("upload_part_copy", 0) >= 1
    body = m.s3.get_object(Bucket=m.bucket, Key=m.key("images/100/vm-100-disk-9.raw"),
                           Range=f"bytes={at - 4096}-{at + MiB + 4095}")["Body"].read()
    assert body == bytes(4096) + patch + bytes(4096)
    assert m.head("images/100/vm-100-disk-9.raw")["ContentLength"] == size


def test_qcow2_create_resize_snapshot_and_check(images):
    m = images
    disk = m.path("images/100/vm-100-disk-0.qcow2")
    vsize = int(m.sizes["qcow2"][:-1]) << (30 if m.sizes["qcow2"].endswith("G") else 20)
    qemu_img("create", "-f", "qcow2", "-o", "preallocation=metadata", disk, m.sizes["qcow2"])
    m.remount()
    assert info(disk)["virtual-size"] == vsize
    assert m.head("images/100/vm-100-disk-0.qcow2")["ContentLength"] == os.path.getsize(disk)
    check_clean(disk)
    # data written into the image in place (qemu-io: random 64k clusters)
    sh(f"qemu-io -f qcow2 -c 'write -P 0xab 30M 1M' -c 'write -P 0xcd 200M 64k' {disk}")
    m.remount()
    sh(f"qemu-io -f qcow2 -c 'read -P 0xab 30M 1M' -c 'read -P 0xcd 200M 64k' -c 'read -P 0 0 1M' {disk}")
    qemu_img("resize", disk, "+128M")
    m.remount()
    assert info(disk)["virtual-size"] == vsize + (128 << 20)
    qemu_img("snapshot", "-c", "before-upgrade", disk)
    m.remount()
    assert "before-upgrade" in qemu_img("snapshot", "-l", disk)
    sh(f"qemu-io -f qcow2 -c 'write -P 0xee 30M 1M' {disk}")  # after the snapshot
    qemu_img("snapshot", "-d", "before-upgrade", disk)
    m.remount()
    assert "before-upgrade" not in qemu_img("snapshot", "-l", disk)
    sh(f"qemu-io -f qcow2 -c 'read -P 0xee 30M 1M' -c 'read -P 0xcd 200M 64k' {disk}")
    check_clean(disk)
    assert not [k for k in m.keys() if "upload" in k]


def test_raw_create_uses_no_local_disk_and_convert_compares_equal(images, tmp_path):
    m = images
    pid = daemon_pid(m)
    before = disk_write_bytes(pid)
    raw = m.path("images/100/vm-100-disk-1.raw")
    qemu_img("create", "-f", "raw", raw, str(m.sizes["raw"]))
    written = disk_write_bytes(pid) - before
    print(f"\nqemu-img create -f raw {m.sizes['raw'] / MiB:.0f} MiB: the daemon wrote {written} bytes "
          f"to local disk")
    assert written < 1 * MiB
    m.remount()
    assert m.head("images/100/vm-100-disk-1.raw")["ContentLength"] == m.sizes["raw"]
    st = os.stat(raw)
    assert st.st_blocks * 512 >= st.st_size  # honest: S3 stores every byte, zeros too

    # a sparse local source with data at a few places, converted into the mount
    src = tmp_path / "src.raw"
    with open(src, "wb") as f:
        f.truncate(200 * MiB)
        for at in (0, 37 * MiB + 4096, 150 * MiB, 200 * MiB - 65536):
            f.seek(at)
            f.write(os.urandom(65536))
    qcow = m.path("images/100/vm-100-disk-2.qcow2")
    qemu_img("convert", "-O", "qcow2", str(src), qcow)
    rawcopy = m.path("images/100/vm-100-disk-3.raw")
    qemu_img("convert", "-O", "raw", str(src), rawcopy)
    m.remount()
    qemu_img("compare", str(src), qcow)
    qemu_img("compare", "-f", "raw", "-F", "raw", str(src), rawcopy)
    check_clean(qcow)


def test_linked_clone_with_a_relative_backing_file(images):
    m = images
    base = m.path("images/100/base-100-disk-0.qcow2")
    qemu_img("create", "-f", "qcow2", base, "256M")
    sh(f"qemu-io -f qcow2 -c 'write -P 0x11 0 4M' -c 'write -P 0x22 100M 1M' {base}")
    clone_dir = m.path("images/101")
    qemu_img("create", "-f", "qcow2", "-b", "../100/base-100-disk-0.qcow2", "-F", "qcow2",
             "vm-101-disk-0.qcow2", cwd=clone_dir)
    m.remount()
    clone = m.path("images/101/vm-101-disk-0.qcow2")
    chain = info(clone, "--backing-chain")
    assert chain[0]["backing-filename"] == "../100/base-100-disk-0.qcow2"
    qemu_img("compare", base, clone)  # nothing written to the clone yet
    sh(f"qemu-io -f qcow2 -c 'write -P 0x33 100M 64k' {clone}")
    m.remount()
    sh(f"qemu-io -f qcow2 -c 'read -P 0x33 100M 64k' -c 'read -P 0x22 102464k 512k' -c 'read -P 0x11 0 4M' {clone}")
    sh(f"qemu-io -f qcow2 -c 'read -P 0x22 100M 1M' {base}")  # the base is untouched
    check_clean(clone)


def test_dd_conv_sparse_and_o_direct(images, tmp_path):
    m = images
    src = tmp_path / "sparse.img"
    with open(src, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(5 * MiB)
        f.write(os.urandom(300_000))
        f.seek(40 * MiB)
        f.write(os.urandom(65536))
    dst = m.path("images/100/dd.raw")
    sh(f"dd if={src} of={dst} bs=64k conv=sparse status=none")
    m.remount()
    sh(f"cmp {src} {dst}")
    # O_DIRECT, as QEMU's cache=none opens: aligned 4 KiB writes and reads in place
    buf = mmap.mmap(-1, 8192)
    buf.write(b"D" * 8192)
    fd = os.open(dst, os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pwrite(fd, buf, 20 * MiB) == 8192
        back = mmap.mmap(-1, 8192)
        assert os.preadv(fd, [back], 20 * MiB) == 8192
        assert back[:] == b"D" * 8192
        os.fsync(fd)
    finally:
        os.close(fd)
    m.remount()
    with open(dst, "rb") as f:
        f.seek(20 * MiB)
        assert f.read(8192) == b"D" * 8192
        f.seek(5 * MiB)
    with open(src, "rb") as f:
        f.seek(5 * MiB)
        expect = f.read(300_000)
    assert m.get("images/100/dd.raw")[5 * MiB:5 * MiB + 300_000] == expect


def test_fio_random_writes_with_crc32c_verify_direct(images, tmp_path):
    m = images
    target = m.path("images/100/fio.raw")
    sh(f"truncate -s 64M {target}")  # an image of its full size (else fio lays it out again)
    job = ["fio", "--name=randwrite", f"--filename={target}", "--size=64M", "--rw=randwrite", "--bs=4k",
           "--direct=1", "--ioengine=psync", "--verify=crc32c", "--verify_fatal=1", "--number_ios=4096",
           "--randseed=42", "--output-format=json"]
    r = subprocess.run(job, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its state files
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
    print(f"\nfio 4k randwrite direct=1 verify=crc32c through the mount: "
          f"{result['write']['iops']:.0f} write IOPS, {result['write']['total_ios']} writes, "
          f"verify read {result['read']['io_bytes'] / MiB:.1f} MiB")
    assert result["error"] == 0 and result["write"]["total_ios"] == 4096
    m.remount()
    # the same job's blocks read back and checked after the remount: what S3 holds
    r = subprocess.run(job + ["--verify_only"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    again = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
    assert again["error"] == 0 and again["read"]["io_bytes"] == 4096 * 4096, again["read"]
    assert m.head("images/100/fio.raw")["ContentLength"] == 64 * MiB
