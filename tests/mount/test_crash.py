"""kill -9 of the daemon in the middle of a streamed write: no object (partial or whole)
at the file's key, files committed before intact, and the next mount aborts the
upload the dead daemon left (stale_upload_idle)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

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

    time.sleep(1.5)  # idle longer than the remount's stale_upload_idle
    m.options = m.options + ["stale_upload_idle=1"]
    m.do_mount()
    deadline = time.monotonic() + 30
    while uploads(m):
        assert time.monotonic() < deadline, "the stale upload was not aborted"
        time.sleep(0.1)
    print("after the next mount: 0 unfinished uploads")
    assert "aborted an unfinished upload of pve/vzdump-qemu-100" in m.log_text()
    assert sha(m.get("committed.iso")) == sha(before)
    with open(m.path("committed.iso"), "rb") as f:
        assert f.read() == before
    assert m.key("vzdump-qemu-100-2026_11_24-01_00_00.vma.dat") not in m.keys()
    assert not os.path.exists(m.path("vzdump-qemu-100-2026_11_24-01_00_00.vma.dat"))
