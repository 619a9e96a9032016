"""kill -9 of the daemon in the middle of a streamed write: no object (partial or whole)
at the file's key, files committed before intact, and the next mount aborts the
upload the dead daemon left at once (its own, recorded in cache_dir; another node's
waits for stale_upload_idle). 23 MiB on moto in the default tier;
2 GiB on Ceph RGW, killed once 1 GiB is stored, in the slow tier
(`./scripts/test.sh -m slow -k kill_9`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import botocore.exceptions
import pytest

from tests.mount.conftest import run_cli, sha256_file
from tests.mount.test_ceph import _GENERATOR
from tests.mount.test_streaming import PyProc, daemon_pid, pattern, sha, uploads

pytestmark = pytest.mark.mount


def test_kill_9_mid_write_leaves_no_object_and_the_next_mount_aborts_the_upload(mount):
    m = mount(["min_part_size=5M", "max_part_size=5M"])
    before = pattern(3 << 20, 1)
    with open(m.path("committed.iso"), "wb") as f:
        f.write(before)
    writer = PyProc("""
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        write_all(fd, pattern(23 << 20, 2))
        pause("written")
        os.close(fd)
    """, m.path("vzdump-qemu-100-2026_11_24-01_00_00.vma.dat"))
    writer.wait_pause("written")
    deadline = time.monotonic() + 30
    while not uploads(m):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(daemon_pid(m), signal.SIGKILL)
    writer.proc.kill()
    subprocess.run(["fusermount3", "-uz", m.mp], capture_output=True)
    assert m.key("vzdump-qemu-100-2026_11_24-01_00_00.vma.dat") not in m.keys()
    assert m.get("committed.iso") == before
    left = uploads(m)
    print(f"\nafter kill -9: {len(left)} unfinished upload(s) in the bucket")
    assert [u["Key"] for u in left] == [m.key("vzdump-qemu-100-2026_11_24-01_00_00.vma.dat")]

    other = m.s3.create_multipart_upload(Bucket=m.bucket, Key=m.key("dump/another-node.vma.dat"))["UploadId"]
    m.s3.upload_part(Bucket=m.bucket, Key=m.key("dump/another-node.vma.dat"), UploadId=other, PartNumber=1,
                     Body=b"busy")  # another node's backup, getting parts (not idle)
    m.do_mount()  # stale_upload_idle is 1 h: only this node's own upload goes, at once
    left = uploads(m)
    print(f"after the next mount: {len(left)} unfinished upload(s) (another node's)")
    assert [(u["Key"], u["UploadId"]) for u in left] == [(m.key("dump/another-node.vma.dat"), other)]
    assert "aborted the unfinished upload of pve/vzdump-qemu-100" in m.log_text()
    m.s3.abort_multipart_upload(Bucket=m.bucket, Key=m.key("dump/another-node.vma.dat"), UploadId=other)
    assert sha(m.get("committed.iso")) == sha(before)
    with open(m.path("committed.iso"), "rb") as f:
        assert f.read() == before
    assert m.key("vzdump-qemu-100-2026_11_24-01_00_00.vma.dat") not in m.keys()
    assert not os.path.exists(m.path("vzdump-qemu-100-2026_11_24-01_00_00.vma.dat"))


# ---------------------------------------------------------------------------- 2 GiB on Ceph (slow tier)

GiB = 1 << 30
MiB = 1 << 20


# Copies stdin into the file in 1 MiB writes through one descriptor, opened once and
# closed once. (dd of= and a shell's `>` open the file, move the descriptor to 1 and
# close the first one: that close is a FUSE flush, which commits the file while still
# empty, as a local disk would show it; a write killed after that leaves the empty
# object, never any of its bytes.)
_WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
while chunk := sys.stdin.buffer.read(1 << 20):
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view):]
os.close(fd)
"""


def _stream(m, name: str, size: int, seed: int) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The deterministic generator piped into a writer of the mount's `name`."""
    gen = subprocess.Popen([sys.executable, "-c", _GENERATOR, str(size), str(seed)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, m.path(name)], stdin=gen.stdout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    gen.stdout.close()
    return gen, writer


@pytest.mark.slow
def test_kill_9_during_a_2_gib_write_on_ceph(ceph_mount):
    """A 2 GiB streamed write, killed (-9) once 1 GiB is stored with parts in flight:
    no object at its key, partial or whole; the upload is in the bucket until the next
    mount aborts it at once (this node's own), leaving none; files committed before the
    kill are byte for byte what they were."""
    m = ceph_mount()
    os.mkdir(m.path("dump"))
    small = pattern(1000, 3)
    with open(m.path("dump", "vzdump-qemu-100.log"), "wb") as f:  # one PUT
        f.write(small)
    gen, writer = _stream(m, "dump/vzdump-qemu-100.vma.zst", 96 * MiB, 4)  # multipart, committed
    assert writer.wait(300) == 0, writer.stderr.read()
    big_digest = gen.stderr.read().decode().strip()
    assert gen.wait() == 0

    name = "dump/vzdump-qemu-101-2026_11_24-02_00_00.vma.dat"
    t0 = time.monotonic()
    gen, writer = _stream(m, name, 2 * GiB, 5)
    pid = daemon_pid(m)
    at_kill = None
    try:
        while time.monotonic() - t0 < 600:
            assert writer.poll() is None, f"the writer ended before the kill: {writer.stderr.read()}"
            snap = json.loads(run_cli("status", m.mp, "--json").stdout)
            entry = next((f for f in snap["files"] if (f["path"] or "").lstrip("/") == name), None)
            if entry and entry["stored"] >= GiB and entry["parts_in_flight"] > 0:
                os.kill(pid, signal.SIGKILL)
                at_kill = entry
                break
            time.sleep(0.05)
        assert at_kill is not None, "1 GiB was not stored within 10 minutes"
    finally:
        writer.kill()
        gen.kill()
        writer.wait()
        gen.wait()
    killed_after = time.monotonic() - t0
    subprocess.run(["fusermount3", "-uz", m.mp], capture_output=True)

    # No object at the key, partial or whole; the parts sit in the dead daemon's upload.
    assert m.key(name) not in m.keys()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        m.head(name)
    assert e.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    left = uploads(m)
    assert [u["Key"] for u in left] == [m.key(name)]
    parts = m.s3.get_paginator("list_parts").paginate(Bucket=m.bucket, Key=left[0]["Key"],
                                                      UploadId=left[0]["UploadId"])
    stored = [p for page in parts for p in page.get("Parts", [])]
    stored_bytes = sum(p["Size"] for p in stored)
    assert stored_bytes >= GiB
    # Committed before the kill: intact.
    assert m.get("dump/vzdump-qemu-100.log") == small
    assert m.sha256("dump/vzdump-qemu-100.vma.zst") == big_digest

    m.do_mount()  # its own upload: aborted before the mount is served (stale_upload_idle is 1 h)
    after = uploads(m)
    aborted = m.log_text().count(f"aborted the unfinished upload of {m.key(name)}")
    print(f"\nkill -9 {killed_after:.1f} s into a 2 GiB write, with {at_kill['stored'] / MiB:.0f} MiB stored, "
          f"{at_kill['written'] / MiB:.0f} MiB written, {at_kill['parts_in_flight']} parts in flight: "
          f"uploads found after the kill {len(left)} ({len(stored)} parts, {stored_bytes / MiB:.0f} MiB); "
          f"aborted at the next mount {aborted}; left after {len(after)}")
    assert after == [], "the stale upload was not aborted"
    assert aborted == 1
    assert m.key(name) not in m.keys()
    assert not os.path.exists(m.path(name))
    assert sorted(os.listdir(m.path("dump"))) == ["vzdump-qemu-100.log", "vzdump-qemu-100.vma.zst"]
    with open(m.path("dump", "vzdump-qemu-100.log"), "rb") as f:
        assert f.read() == small
    assert sha256_file(m.path("dump", "vzdump-qemu-100.vma.zst")) == big_digest
    assert m.sha256("dump/vzdump-qemu-100.vma.zst") == big_digest


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_file_unlinked_while_open_stays_deleted_after_the_daemon_stops(mount, how):
    """Its object is kept (hidden) for the open handle until the last close; a daemon
    stopped before that (systemd stop: SIGTERM; or killed) must not bring the file back.
    SIGTERM deletes it on the way out, the next mount after a kill -9 (recorded in
    cache_dir); an object written at that name by someone else since is left alone."""
    m = mount()
    for name in ("held.txt", "rewritten.txt"):
        with open(m.path(name), "wb") as f:
            f.write(name.encode() * 1000)
    fds = [os.open(m.path(name), os.O_RDONLY) for name in ("held.txt", "rewritten.txt")]
    for name in ("held.txt", "rewritten.txt"):
        os.unlink(m.path(name))
    assert {m.key("held.txt"), m.key("rewritten.txt")} <= m.keys()  # kept for the open handles
    m.put("rewritten.txt", b"another node's file")  # written at the name by another writer
    pid = daemon_pid(m)
    os.kill(pid, getattr(signal, how))
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, f"the daemon did not exit after {how}"
        time.sleep(0.1)
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass  # ENOTCONN/ECONNABORTED: the daemon is gone
    subprocess.run(["fusermount3", "-uz", m.mp], capture_output=True)
    assert (m.key("held.txt") in m.keys()) == (how == "SIGKILL")
    m.do_mount()
    assert m.key("held.txt") not in m.keys()
    assert sorted(os.listdir(m.mp)) == ["rewritten.txt"]
    assert m.get("rewritten.txt") == b"another node's file"
