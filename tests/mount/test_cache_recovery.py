"""The write-back cache through a real mount: kill -9 with changes not yet committed
(the next mount commits them before serving, or keeps them aside by name), and a
cache directory that fills up (ENOSPC to the writer, nothing corrupted)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time

import pytest

from tests.mount.test_images import status
from tests.mount.test_streaming import MiB, PyProc, daemon_pid, pattern, sh

pytestmark = pytest.mark.mount


def test_kill_9_with_cached_changes_commits_them_at_the_next_mount(mount):
    m = mount()
    base = bytearray(pattern(12 * MiB, 3))
    m.put("images/100/vm-100-disk-0.raw", bytes(base))
    writer = PyProc("""
        fd = os.open(sys.argv[1], os.O_RDWR)
        for off in (0, 5 * 1024 * 1024 + 7, 12 * 1024 * 1024 - 3):
            os.pwrite(fd, b"changed-before-the-kill", off)
        new = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(new, 8 * 1024 * 1024)
        os.pwrite(new, b"only-in-the-cache", 4 * 1024 * 1024)
        pause("written")
    """, m.path("images/100/vm-100-disk-0.raw"), m.path("images/100/vm-100-disk-1.raw"))
    writer.wait_pause("written")
    for off in (0, 5 * MiB + 7, 12 * MiB - 3):
        base[off:off + 23] = b"changed-before-the-kill"
    os.kill(daemon_pid(m), signal.SIGKILL)
    writer.proc.kill()
    subprocess.run(["fusermount3", "-uz", m.mp], capture_output=True)
    assert m.get("images/100/vm-100-disk-0.raw") != bytes(base)  # not committed: the daemon died
    assert m.key("images/100/vm-100-disk-1.raw") not in m.keys()

    m.do_mount()  # recovery runs before the mount is served
    assert m.get("images/100/vm-100-disk-0.raw") == bytes(base)
    created = m.get("images/100/vm-100-disk-1.raw")
    assert len(created) == 8 * MiB and created[4 * MiB:4 * MiB + 17] == b"only-in-the-cache"
    assert created.count(0) == 8 * MiB - 17
    with open(m.path("images/100/vm-100-disk-0.raw"), "rb") as f:
        assert f.read() == bytes(base)
    log = m.log_text()
    assert "recovered images/100/vm-100-disk-0.raw" in log and "recovered images/100/vm-100-disk-1.raw" in log
    staging = os.path.join(m.cache_dir, "staging")
    left = [f for d in os.listdir(staging) for f in os.listdir(os.path.join(staging, d)) if f != ".lock"]
    assert left == []
    print(f"\nkill -9 with 2 files changed in the cache: both committed at the next mount; cache left: {left}")


def test_fsync_is_local_then_s3_within_sync_interval_and_survives_kill_9(mount):
    """A guest flush (fsync) of a disk image: durable in the local cache at once, in
    S3 sync_interval later (status shows when), and a kill -9 in between loses
    nothing (the next mount commits it)."""
    m = mount(["sync_interval=3"])
    base = bytearray(pattern(24 * MiB, 5))
    m.put("images/100/vm-100-disk-0.raw", bytes(base))
    writer = PyProc("""
        fd = os.open(sys.argv[1], os.O_RDWR)
        os.pwrite(fd, b"first-flush", 3 * 1024 * 1024)
        os.fsync(fd)
        pause("first")
        os.pwrite(fd, b"second-flush", 17 * 1024 * 1024)
        os.fsync(fd)
        pause("second")
    """, m.path("images/100/vm-100-disk-0.raw"))
    writer.wait_pause("first")
    files = status(m)["files"]
    assert [(f["path"], f["kind"]) for f in files] == [("images/100/vm-100-disk-0.raw", "cached")]
    assert 0 < files[0]["commit_in"] <= 3
    assert m.get("images/100/vm-100-disk-0.raw") == bytes(base)  # not yet in S3
    base[3 * MiB:3 * MiB + 11] = b"first-flush"
    deadline = time.monotonic() + 20
    while m.get("images/100/vm-100-disk-0.raw") != bytes(base):  # the put-off commit
        assert time.monotonic() < deadline, "fsynced data not in S3 within sync_interval"
        time.sleep(0.5)
    writer.resume()
    writer.wait_pause("second")
    base[17 * MiB:17 * MiB + 12] = b"second-flush"
    os.kill(daemon_pid(m), signal.SIGKILL)  # before the second put-off commit
    writer.proc.kill()
    subprocess.run(["fusermount3", "-uz", m.mp], capture_output=True)
    assert m.get("images/100/vm-100-disk-0.raw") != bytes(base)
    m.do_mount()
    assert m.get("images/100/vm-100-disk-0.raw") == bytes(base)
    assert "recovered images/100/vm-100-disk-0.raw" in m.log_text()


def test_kill_9_then_someone_else_writes_the_object_keeps_the_data_aside(mount):
    m = mount()
    m.put("images/100/old.raw", pattern(2 * MiB, 4))
    writer = PyProc("""
        fd = os.open(sys.argv[1], os.O_RDWR)
        os.pwrite(fd, b"mine" * 1024, 8192)
        pause("written")
    """, m.path("images/100/old.raw"))
    writer.wait_pause("written")
    os.kill(daemon_pid(m), signal.SIGKILL)
    writer.proc.kill()
    subprocess.run(["fusermount3", "-uz", m.mp], capture_output=True)
    m.put("images/100/old.raw", b"another node replaced it")
    m.do_mount()
    assert m.get("images/100/old.raw") == b"another node replaced it"  # not overwritten
    log = m.log_text()
    assert "data of images/100/old.raw written before the daemon stopped was NOT committed" in log
    kept = os.path.join(m.cache_dir, "recovered", "images_100_old.raw")
    with open(kept, "rb") as f:
        assert f.read()[8192:12288] == b"mine" * 1024
    assert f"kept as {kept}" in log


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(d)], check=True)
    yield str(d)
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_a_full_cache_disk_is_enospc_to_the_writer_and_corrupts_nothing(mount, small_disk):
    # the budget (64M) is larger than the disk (6M): the disk fills first
    m = mount(["disk_budget=64M"])
    m.cache_dir = small_disk  # for remounts too
    m.remount()
    original = pattern(16 * MiB, 5)
    m.put("images/100/full.raw", original)
    out = PyProc("""
        import random
        fd = os.open(sys.argv[1], os.O_RDWR)
        rng = random.Random(9)
        done = []
        for i in range(400):
            off = rng.randrange(0, 16 * 1024 * 1024 - 65536) // 4096 * 4096
            try:
                os.pwrite(fd, bytes([i % 250 + 1]) * 65536, off)
            except OSError as e:
                print("ERR", e.errno, off, i, flush=True)
                break
            done.append((off, i))
        print("DONE", repr(done), flush=True)
        try:
            os.close(fd)
            print("CLOSED ok", flush=True)
        except OSError as e:
            print("CLOSED", e.errno, flush=True)
    """, m.path("images/100/full.raw")).finish(300)
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    err, failed_off, failed_i = (int(x) for x in lines["ERR"].split())
    assert err == errno.ENOSPC
    done = eval(lines["DONE"])
    print(f"\ncache on a 6 MiB disk: ENOSPC after {len(done)} writes of 64 KiB; close: {lines['CLOSED']}")
    expect = bytearray(original)
    for off, i in done:
        expect[off:off + 65536] = bytes([i % 250 + 1]) * 65536
    got = m.get("images/100/full.raw")
    assert len(got) == len(expect)
    # every byte outside the failed write is as the successful writes left it
    assert got[:failed_off] == bytes(expect[:failed_off])
    assert got[failed_off + 65536:] == bytes(expect[failed_off + 65536:])
    # and the mount goes on working once the writer is gone
    sh(f"echo still-fine > {m.path('after.txt')} && cat {m.path('after.txt')}")
    assert m.get("after.txt") == b"still-fine\n"
