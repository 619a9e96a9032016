"""The slow tier: Ceph RGW (a real S3 implementation with its own checks) and a file
past 5 GiB through the mount with default settings.

Run with `./scripts/test.sh -m slow` (starts a throwaway Ceph under
/tmp/s3pvefs-test-ceph, installing the packages if needed; a few minutes).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import trio

from s3pvefs.config import StoreConfig
from s3pvefs.errors import StoreError
from s3pvefs.store import s3 as s3mod
from s3pvefs.write.parts import stream_part_size
from s3pvefs.fs.filesystem import GROWTH_WAIT
from tests.mount.conftest import ACCESS_KEY, SECRET_KEY, run_cli
from tests.mount.test_streaming import (assert_no_uploads, daemon_pid, disk_write_bytes, parts_count,
                                        proc_status_kib, streamed_parts)

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB, GiB = 1 << 20, 1 << 30


def test_ceph_refuses_a_body_that_does_not_match_its_md5(ceph_server, ceph_s3, monkeypatch):
    bucket = "md5-check"
    ceph_s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)

    async def corrupted(data: bytes) -> str:  # as if a byte flipped after hashing
        return s3mod._md5_b64(data[:-1] + bytes([data[-1] ^ 1]))

    async def main():
        async with s3mod.S3Store.open(StoreConfig(bucket=bucket, endpoint_url=ceph_server, max_attempts=1)) as st:
            await st.put("good", b"payload", {})
            monkeypatch.setattr(s3mod, "_content_md5", corrupted)
            with pytest.raises(StoreError) as e:
                await st.put("bad", b"payload", {})
            upload = await st.create_multipart("badpart", {})
            with pytest.raises(StoreError) as e2:
                await st.upload_part("badpart", upload, 1, os.urandom(5 * MiB))
            await st.abort_multipart("badpart", upload)
            return e.value, e2.value

    err, err2 = trio.run(main)
    assert err.code == err2.code == "BadDigest", (err, err2)
    keys = {o["Key"] for o in ceph_s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == {"good"}


# A deterministic stream that is cheap to make: 64 MiB of random bytes, each copy
# xored with its index in the first 8 bytes of every MiB so no two parts are equal.
_GENERATOR = textwrap.dedent("""
    import hashlib, os, random, sys
    size, seed = int(sys.argv[1]), int(sys.argv[2])
    block = bytearray(random.Random(seed).randbytes(64 << 20))
    h, out, left, i = hashlib.sha256(), sys.stdout.buffer, size, 0
    while left:
        for mib in range(0, len(block), 1 << 20):
            block[mib:mib + 8] = (i * 1000 + mib).to_bytes(8, "little")
        chunk = memoryview(block)[:min(left, len(block))]
        out.write(chunk)
        h.update(chunk)
        left -= len(chunk)
        i += 1
    out.flush()
    print(h.hexdigest(), file=sys.stderr)
""")


def test_6_gib_file_streamed_renamed_server_side_and_read_back(ceph_mount, tmp_path):
    """Default settings: streamed in 8 MiB parts with no local disk and RSS under 300 MiB,
    renamed past the 5 GiB CopyObject limit (parallel UploadPartCopy, no data through the
    client) with its full size at once, and read back byte for byte."""
    m = ceph_mount()
    size = 6 * GiB + 123_457
    os.mkdir(m.path("dump"))
    pid = daemon_pid(m)
    base_kib = proc_status_kib(pid, "VmRSS")
    disk_before = disk_write_bytes(pid)

    t0 = time.monotonic()
    gen = subprocess.Popen([sys.executable, "-c", _GENERATOR, str(size), "7"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    dd = subprocess.run(["dd", f"of={m.path('dump', 'vzdump-qemu-100.vma.dat')}", "bs=1M", "iflag=fullblock",
                         "status=none"], stdin=gen.stdout, capture_output=True, text=True, timeout=1800)
    gen.stdout.close()
    digest = gen.stderr.read().decode().strip()
    assert gen.wait() == 0 and dd.returncode == 0, dd.stderr
    write_s = time.monotonic() - t0

    peak_kib = proc_status_kib(pid, "VmHWM")
    disk_written = disk_write_bytes(pid) - disk_before
    head = m.head("dump/vzdump-qemu-100.vma.dat")
    assert head["ContentLength"] == size
    assert parts_count(head) == len(streamed_parts(size, 8 * MiB, 64 * MiB, 1000)) == \
        -(-size // stream_part_size(1, 8 * MiB, 64 * MiB))  # all 8 MiB parts below 1,000 of them
    assert disk_written < 2 * MiB, f"the daemon wrote {disk_written} bytes to local disk"
    assert peak_kib < 300 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    assert_no_uploads(m)

    t0 = time.monotonic()
    os.rename(m.path("dump", "vzdump-qemu-100.vma.dat"), m.path("dump", "vzdump-qemu-100.vma.zst"))
    rename_s = time.monotonic() - t0
    assert os.stat(m.path("dump", "vzdump-qemu-100.vma.zst")).st_size == size
    assert m.keys() >= {m.key("dump/vzdump-qemu-100.vma.zst")}
    assert m.key("dump/vzdump-qemu-100.vma.dat") not in m.keys()
    head = m.head("dump/vzdump-qemu-100.vma.zst")
    assert head["ContentLength"] == size and parts_count(head) > 1  # UploadPartCopy, not CopyObject
    assert disk_write_bytes(pid) - disk_before < 2 * MiB

    t0 = time.monotonic()
    h = hashlib.sha256()
    with open(m.path("dump", "vzdump-qemu-100.vma.zst"), "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    read_s = time.monotonic() - t0
    assert h.hexdigest() == digest
    print(f"\n6 GiB on Ceph RGW: write {size / MiB / write_s:.0f} MiB/s, peak RSS {peak_kib / 1024:.0f} MiB "
          f"(at mount {base_kib / 1024:.0f}), local disk {disk_written} B; rename {rename_s:.1f} s; "
          f"read {size / MiB / read_s:.0f} MiB/s")


def test_rm_or_mv_of_a_file_whose_growth_is_still_being_copied(ceph_mount):
    """`truncate -s 4G` then at once `rm` (or `mv`) of the file while Ceph still copies
    its zeros in the background: neither waits for the copies, the removed file does not
    come back when they would have ended, and the moved one is stored under its new name."""
    m = ceph_mount()
    pending = lambda: [f["path"] for f in json.loads(run_cli("status", m.mp, "--json", "--once").stdout)["files"]]
    took = []
    for name, then in (("gone.raw", lambda: os.unlink(m.path("gone.raw"))),
                       ("moved.raw", lambda: os.rename(m.path("moved.raw"), m.path("there.raw")))):
        with open(m.path(name), "wb") as f:
            f.write(b"hello\n")
        subprocess.run(["truncate", "-s", "4G", m.path(name)], check=True, timeout=600)
        assert name in pending(), "the growth should still be under way (~18 s of copies)"
        t0 = time.monotonic()
        then()
        took.append(time.monotonic() - t0)
        assert took[-1] < 5, f"{name}: waited {took[-1]:.1f} s for the copies"
    t1 = time.monotonic()
    while pending() and time.monotonic() - t1 < 600:
        time.sleep(1)
    time.sleep(2)
    assert m.keys() >= {m.key("there.raw")} and not {m.key("gone.raw"), m.key("moved.raw")} & m.keys()
    assert m.head("there.raw")["ContentLength"] == 4 * GiB
    body = m.s3.get_object(Bucket=m.bucket, Key=m.key("there.raw"), Range="bytes=0-9")["Body"].read()
    assert body == b"hello\n" + bytes(4)
    assert_no_uploads(m)
    print(f"\nrm and mv during a 4 GiB growth on Ceph RGW: {took[0]:.2f} s and {took[1]:.2f} s; moved file stored "
          f"{time.monotonic() - t1:.1f} s later")
    os.unlink(m.path("there.raw"))


def test_a_far_growth_returns_within_its_wait_and_is_stored_in_the_background(ceph_mount):
    """`truncate -s 4G` of a small file: Ceph copies the zeros physically (~230 MiB/s on
    loopback), longer than the caller may wait where nothing can interrupt it. The call
    returns after GROWTH_WAIT at most, the size shows at once, `status` lists the file
    until it is stored, and the object then holds the bytes and the zeros."""
    m = ceph_mount()
    with open(m.path("vm-100-disk-0.raw"), "wb") as f:
        f.write(b"hello\n")
    t0 = time.monotonic()
    subprocess.run(["truncate", "-s", "4G", m.path("vm-100-disk-0.raw")], check=True, timeout=600)
    took = time.monotonic() - t0
    assert os.stat(m.path("vm-100-disk-0.raw")).st_size == 4 * GiB
    assert took < GROWTH_WAIT + 5, f"truncate -s 4G held its caller {took:.1f} s"
    listed, t1 = False, time.monotonic()
    while time.monotonic() - t1 < 600:
        r = run_cli("status", m.mp, "--json", "--once")
        assert r.returncode == 0, r.stderr
        pending = [f["path"] for f in json.loads(r.stdout)["files"]]
        if "vm-100-disk-0.raw" in pending:
            listed = True
        elif m.head("vm-100-disk-0.raw")["ContentLength"] == 4 * GiB:
            break
        time.sleep(1)
    stored = time.monotonic() - t0
    assert m.head("vm-100-disk-0.raw")["ContentLength"] == 4 * GiB
    assert listed or stored < GROWTH_WAIT + 5, "a commit past the wait was not listed by status"
    body = m.s3.get_object(Bucket=m.bucket, Key=m.key("vm-100-disk-0.raw"), Range="bytes=0-1048575")["Body"].read()
    assert body == b"hello\n" + bytes(MiB - 6)
    tail = m.s3.get_object(Bucket=m.bucket, Key=m.key("vm-100-disk-0.raw"),
                           Range=f"bytes={4 * GiB - MiB}-{4 * GiB - 1}")["Body"].read()
    assert tail == bytes(MiB)
    print(f"\ntruncate -s 4G on Ceph RGW: returned in {took:.1f} s, stored after {stored:.1f} s "
          f"(listed by status meanwhile: {listed})")
    os.unlink(m.path("vm-100-disk-0.raw"))
