"""Streamed writes on a real mount: sequential writes go to S3 multipart uploads from
memory while they are written (write/stream.py), under the mount's memory budget;
anything else falls back to the staging path without losing data; failures abort.

Checked from outside: boto3 on the bucket (objects, part counts, incomplete uploads),
and /proc of the daemon (open staging files, bytes written to local disk, peak RSS).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from s3pvefs.cli import _pidfile
from s3pvefs.write.parts import stream_part_size
from tests.mount.conftest import run_cli, sha256_file
from tests.mount.faultproxy import FaultProxy

pytestmark = pytest.mark.mount

KiB, MiB = 1 << 10, 1 << 20
SMALL_PARTS = ["min_part_size=5M", "max_part_size=5M"]  # S3's smallest parts: uploads start early


# ----------------------------------------------------------------------------- helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sh(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-c", "set -euo pipefail; umask 022; " + script], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"{script!r} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def random_file(path, size: int, seed_chunk: int = 4 * MiB) -> str:
    """A file of random bytes; its sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, seed_chunk))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def wait_for(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def uploads(m) -> list[dict]:
    return m.s3.list_multipart_uploads(Bucket=m.bucket).get("Uploads", [])


def assert_no_uploads(m) -> None:
    """No incomplete multipart upload in the bucket (aborts run after close: wait a little)."""
    deadline = time.monotonic() + 20
    while (left := uploads(m)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"incomplete multipart uploads left: {[(u['Key'], u['UploadId']) for u in left]}"


def assert_no_partial_object(m, name: str) -> None:
    """dd opens its output, moves it to fd 1 and closes the first descriptor: that
    close (FUSE flush) commits the new file while it is still empty, as a local disk
    would show it. What a failed upload must never leave is any of its bytes."""
    if m.key(name) in m.keys():
        assert m.head(name)["ContentLength"] == 0, "bytes of a failed upload reached the object"


def parts_count(head: dict) -> int:
    """Number of parts from a multipart ETag ("md5-N"); 0 for a single PUT."""
    etag = head["ETag"].strip('"')
    return int(etag.rsplit("-", 1)[1]) if "-" in etag else 0


def streamed_parts(size: int, min_part: int, max_part: int, step: int, window: int = 1 * MiB) -> list[int]:
    """The parts a sequentially written file of `size` bytes is sent in: a part of the
    plan's size goes out whenever the buffer holds that plus the reorder window; at
    close, parts of the plan's size while more than one is left, then the rest."""
    plan = lambda i: stream_part_size(i, min_part, max_part, step=step)  # noqa: E731
    parts, left = [], size
    while left >= plan(len(parts) + 1) + window:
        parts.append(plan(len(parts) + 1))
        left -= parts[-1]
    while left > plan(len(parts) + 1):
        parts.append(plan(len(parts) + 1))
        left -= parts[-1]
    return parts + ([left] if left else [])


def daemon_pid(m) -> int:
    with open(_pidfile(os.path.realpath(m.mp))) as f:
        pid = int(f.read().strip())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert os.path.realpath(m.mp).encode() in f.read(), "pid file names another process"
    return pid


def staging_fds(pid: int, cache_dir: str) -> set[str]:
    """The daemon's open write-back cache files (the directory's lock is not one)."""
    found = set()
    staging = os.path.join(os.path.realpath(cache_dir), "staging") + "/"
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(staging) and not target.endswith("/.lock"):
            found.add(target)
    return found


def disk_write_bytes(pid: int) -> int:
    """Bytes the daemon dirtied in the page cache of local files (/proc/pid/io write_bytes):
    sockets and /dev/fuse do not count, a staging file does."""
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("write_bytes:")).split()[1])


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1])


class StagingWatch:
    """Samples the daemon's open staging files in a thread while a write runs."""

    def __init__(self, pid: int, cache_dir: str, period: float = 0.01):
        self.pid, self.cache_dir, self.period = pid, cache_dir, period
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= staging_fds(self.pid, self.cache_dir)
            self.samples += 1
            self._stop.wait(self.period)

    def __enter__(self) -> "StagingWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


_PRELUDE = """
import os, random, sys
def pattern(size, seed):  # as pattern() in the tests
    return random.Random(seed).randbytes(size)
def pause(tag):
    print("PAUSE", tag, flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("not resumed")
def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
def pread_all(fd, size, offset):
    out = bytearray()
    while len(out) < size:
        chunk = os.pread(fd, min(1 << 20, size - len(out)), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)
"""


class PyProc:
    """A python script in a subprocess (file I/O on the mount never runs in pytest itself,
    so a hung mount is a timeout, not a hung test run). `pause(tag)` in the script stops
    it until resume()."""

    def __init__(self, script: str, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-c", _PRELUDE + textwrap.dedent(script), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0)
        self._buf = b""

    def wait_pause(self, tag: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                pytest.fail(f"script did not reach pause {tag!r}")
            if select.select([self.proc.stdout], [], [], min(left, 1.0))[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    self.proc.wait()
                    pytest.fail(f"script exited ({self.proc.returncode}) before pause {tag!r}: "
                                f"{self.proc.stderr.read().decode(errors='replace')[-3000:]}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        assert line.decode() == f"PAUSE {tag}", line

    def resume(self) -> None:
        self.proc.stdin.write(b"go\n")

    def finish(self, timeout: float = 180) -> str:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.returncode == 0, f"script failed ({self.proc.returncode}):\n{err.decode()[-3000:]}"
        return (self._buf + out).decode()


def run_py(script: str, *args: str, timeout: float = 180) -> str:
    p = PyProc(script, *args)
    p.proc.stdin.close()
    p.proc.stdin = None  # communicate() would flush it
    return p.finish(timeout)


def pattern(size: int, seed: int) -> bytes:
    """Deterministic random bytes, which the scripts rebuild with the same seed."""
    return random.Random(seed).randbytes(size)


# ----------------------------------------------------------------------------- the plan


def test_plan_of_parts_for_test_sizes():
    """The part plan the tests below rely on (5M doubling every 2 parts up to 20M, 1M window)."""
    size = 90 * MiB + 512 * KiB + 77
    assert streamed_parts(size, 5 * MiB, 20 * MiB, 2) == \
        [5 * MiB, 5 * MiB, 10 * MiB, 10 * MiB, 20 * MiB, 20 * MiB, 20 * MiB, 512 * KiB + 77]
    assert streamed_parts(40 * MiB, 5 * MiB, 5 * MiB, 1000) == [5 * MiB] * 8


# ----------------------------------------------------------------------------- 1. big sequential file


def test_sequential_file_crosses_part_size_steps_without_local_disk(mount, tmp_path):
    opts = ["min_part_size=5M", "max_part_size=20M", "parts_per_step=2"]
    m = mount(opts)
    # 70 MiB in the first six parts, then a remainder between one part (20 MiB) and one
    # part plus the reorder window: sent as a full part and a short last one.
    size = 90 * MiB + 512 * KiB + 77
    src = tmp_path / "src.bin"
    digest = random_file(src, size)
    plan = streamed_parts(size, 5 * MiB, 20 * MiB, 2)

    pid = daemon_pid(m)
    disk_before = disk_write_bytes(pid)
    with StagingWatch(pid, m.cache_dir) as watch:
        sh(f"dd if={src} of={m.path('big.vma')} bs=1M status=none")
    disk_written = disk_write_bytes(pid) - disk_before
    assert watch.samples >= 20, watch.samples
    assert watch.seen == set(), f"staging files opened during a sequential write: {watch.seen}"
    # The log file is the only local file the daemon should write to.
    assert disk_written < 2 * MiB, f"the daemon wrote {disk_written} bytes to local disk"

    head = m.head("big.vma")
    assert head["ContentLength"] == size
    assert parts_count(head) == len(plan), (head["ETag"], plan)
    sizes = [m.s3.head_object(Bucket=m.bucket, Key=m.key("big.vma"), PartNumber=i)["ContentLength"]
             for i in range(1, len(plan) + 1)]
    assert sizes == plan
    assert m.meta("big.vma")["mode"] == str(0o100644)
    assert m.sha256("big.vma") == digest
    assert sha256_file(m.path("big.vma")) == digest
    assert m.keys() == {"pve/big.vma"}
    assert_no_uploads(m)


# ----------------------------------------------------------------------------- 3. four writers, one budget


def test_four_writers_share_the_memory_budget(mount, tmp_path):
    budget = 32 * MiB
    m = mount(["memory_budget=32M"] + SMALL_PARTS)
    size = 40 * MiB + 3 * KiB
    srcs = [tmp_path / f"src{i}" for i in range(4)]
    digests = [random_file(s, size) for s in srcs]

    pid = daemon_pid(m)
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    base_kib = proc_status_kib(pid, "VmRSS")
    t0 = time.monotonic()
    procs = [subprocess.Popen(["dd", f"if={s}", f"of={m.path(f'w{i}.vma')}", "bs=1M", "status=none"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i, s in enumerate(srcs)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()
    elapsed = time.monotonic() - t0
    peak_kib = proc_status_kib(pid, "VmHWM")
    growth = (peak_kib - base_kib) * KiB

    # Measured on the 2-core test machine against moto (4 x 40 MiB, 5 MiB parts, 32 MiB
    # budget). Parts go through the AWS CRT, which sends each from a copy of its own;
    # that copy is charged to the budget too (write/budget.py), but the CRT's threads
    # free it in malloc arenas of their own, trimmed only every few seconds
    # (daemon.give_freed_memory_back): growth 55 MiB alone, 70 MiB while the rest of the
    # suite ran (47 MiB with aiobotocore carrying parts, before issue 17). 48 MiB of
    # slack covers that and still fails if the budget did not bound the buffers
    # (4 files x 40 MiB = 160 MiB written).
    slack = 48 * MiB
    figures = (f"RSS after mount {base_kib / 1024:.1f} MiB, peak {peak_kib / 1024:.1f} MiB, "
               f"growth {growth / MiB:.1f} MiB (budget {budget // MiB} MiB + slack {slack // MiB} MiB), "
               f"4 x {size / MiB:.1f} MiB written in {elapsed:.1f} s")
    print("\n" + figures)
    assert growth < budget + slack, figures

    for i, digest in enumerate(digests):
        assert m.sha256(f"w{i}.vma") == digest, i
        assert sha256_file(m.path(f"w{i}.vma")) == digest, i
        assert parts_count(m.head(f"w{i}.vma")) >= 8  # streamed in parts, none above 5 MiB
    assert_no_uploads(m)


# ----------------------------------------------------------------------------- 4. server errors


@pytest.fixture
def proxied(mount, s3_server):
    """mount(options) through a FaultProxy in front of moto: (Mount, FaultProxy)."""
    proxies = []

    def factory(options):
        proxy = FaultProxy(s3_server)
        proxies.append(proxy)
        m = mount(list(options) + ["max_attempts=2", "outage_patience=2"])
        m.remount_through(proxy.url)
        return m, proxy

    yield factory
    for p in proxies:
        p.close()


def kept_files(m) -> dict[str, dict]:
    r = run_cli("status", m.mp, "--json")
    assert r.returncode == 0, r.stderr
    return {f["path"]: f for f in json.loads(r.stdout)["files"] if f.get("failed_since")}


def test_failed_upload_part_gives_eio_and_keeps_the_data(proxied, tmp_path):
    """A part S3 refuses past outage_patience: the writer gets EIO, nothing partial is
    at the key, the upload is kept (not aborted) with the rest on local disk, and
    `status` lists the file; removing it (vzdump after a failed backup) drops all."""
    m, proxy = proxied(SMALL_PARTS)
    src = tmp_path / "src.bin"
    random_file(src, 30 * MiB)
    proxy.fail_parts_after = 2
    r = subprocess.run(["dd", f"if={src}", f"of={m.path('f.vma')}", "bs=1M", "status=none"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode != 0, "dd succeeded although UploadPart failed"
    assert "Input/output error" in r.stderr, r.stderr
    assert proxy.parts_passed == 2 and proxy.parts_failed >= 1, vars(proxy)
    assert_no_partial_object(m, "f.vma")
    wait_for(lambda: "f.vma" in kept_files(m), "f.vma listed as kept by status")
    assert [u["Key"] for u in uploads(m)] == [m.key("f.vma")]  # kept: its 2 stored parts
    os.unlink(m.path("f.vma"))
    wait_for(lambda: not uploads(m), "the kept upload aborted after rm")
    assert m.key("f.vma") not in m.keys() and kept_files(m) == {}

    # The mount goes on working once the server does.
    proxy.fail_parts_after = None
    sh(f"dd if={src} of={m.path('g.vma')} bs=1M status=none")
    assert m.sha256("g.vma") == sha256_file(src)
    assert_no_partial_object(m, "f.vma")
    assert_no_uploads(m)


def test_failed_complete_gives_eio_at_close_and_completes_when_s3_takes_it(proxied, tmp_path):
    """Every part stored, CompleteMultipartUpload refused: close gets EIO, the upload is
    kept, and the file is completed in the background once S3 takes it (issue 15.2)."""
    m, proxy = proxied(SMALL_PARTS)
    src = tmp_path / "src.bin"
    random_file(src, 12 * MiB + 1)
    proxy.fail_complete = True
    r = subprocess.run(["dd", f"if={src}", f"of={m.path('f.vma')}", "bs=1M", "status=none"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode != 0, "dd succeeded although CompleteMultipartUpload failed"
    assert "closing output file" in r.stderr and "Input/output error" in r.stderr, r.stderr
    assert proxy.completes_failed >= 1 and proxy.parts_failed == 0, vars(proxy)
    assert_no_partial_object(m, "f.vma")
    assert os.lstat(m.path("f.vma")).st_size == 12 * MiB + 1  # this mount still has it
    assert len(uploads(m)) == 1
    proxy.fail_complete = False
    wait_for(lambda: m.key("f.vma") in m.keys(), "the kept upload completed in the background", 60)
    assert m.sha256("f.vma") == sha256_file(src)
    assert_no_uploads(m)
    assert "committed f.vma" in m.log_text()


# ----------------------------------------------------------------------------- 5. leaving the stream


def test_write_behind_sent_parts_falls_back_to_staging(mount):
    m = mount(SMALL_PARTS)
    pid = daemon_pid(m)
    a, b = pattern(30 * MiB, 1), pattern(10 * MiB + 5, 2)
    p = PyProc("""
        path = sys.argv[1]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        write_all(fd, pattern(30 << 20, 1))
        pause("streamed")
        os.lseek(fd, 1000, os.SEEK_SET)
        write_all(fd, b"HELLO")
        pause("rewritten")
        os.lseek(fd, 0, os.SEEK_END)
        write_all(fd, pattern((10 << 20) + 5, 2))
        os.close(fd)
    """, m.path("f.vma"))
    p.wait_pause("streamed")
    assert staging_fds(pid, m.cache_dir) == set()
    assert len(uploads(m)) == 1  # parts on their way: an upload in progress, no object yet
    assert m.key("f.vma") not in m.keys()
    p.resume()
    p.wait_pause("rewritten")
    # What was written so far was committed, and the file continues in a staging file.
    assert m.head("f.vma")["ContentLength"] == 30 * MiB
    assert m.sha256("f.vma") == sha(a)
    assert uploads(m) == []
    assert len(staging_fds(pid, m.cache_dir)) == 1
    p.resume()
    p.finish()

    expected = a[:1000] + b"HELLO" + a[1005:] + b
    assert m.head("f.vma")["ContentLength"] == len(expected)
    assert m.sha256("f.vma") == sha(expected)
    assert sha256_file(m.path("f.vma")) == sha(expected)
    assert_no_uploads(m)


def test_dd_notrunc_into_file_being_written(mount, tmp_path):
    m = mount(SMALL_PARTS)
    a, b = pattern(20 * MiB, 3), pattern(10 * MiB, 4)
    patch = os.urandom(2 * MiB)
    (tmp_path / "patch").write_bytes(patch)
    p = PyProc("""
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        write_all(fd, pattern(20 << 20, 3))
        pause("streamed")
        write_all(fd, pattern(10 << 20, 4))
        os.close(fd)
    """, m.path("f.vma"))
    p.wait_pause("streamed")
    assert len(uploads(m)) == 1
    sh(f"dd if={tmp_path / 'patch'} of={m.path('f.vma')} bs=1M seek=3 conv=notrunc status=none")
    p.resume()
    p.finish()

    expected = a[:3 * MiB] + patch + a[5 * MiB:] + b
    assert m.head("f.vma")["ContentLength"] == len(expected)
    assert m.sha256("f.vma") == sha(expected)
    assert sha256_file(m.path("f.vma")) == sha(expected)
    assert_no_uploads(m)


def test_mixed_write_sizes_and_rewrites_of_the_unsent_tail_are_stored_as_written(mount):
    """What the stream holds as pieces (write/pieces.py): writes of odd sizes that cut
    parts inside a write, 512-byte writes gathered, and pwrites over bytes still in
    memory, inside one piece and across several, while earlier parts are on their way."""
    m = mount(SMALL_PARTS)
    p = PyProc("""
        import hashlib
        def write_all_at(fd, data, offset):
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        rnd = random.Random(7)
        model = bytearray()
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        def put(offset, data):
            write_all_at(fd, data, offset)
            model[offset:offset + len(data)] = data
        while len(model) < 23 * (1 << 20):
            kind = rnd.random()
            size = 1_000_003 if kind < 0.4 else 512 if kind < 0.7 else rnd.randrange(1, 200_000)
            for _ in range(64 if size == 512 else 1):
                put(len(model), rnd.randbytes(size))
            if rnd.random() < 0.3:  # over bytes still in memory (within the last 512 KiB)
                back = rnd.randrange(1, min(len(model), 512 << 10))
                put(len(model) - back, rnd.randbytes(rnd.randrange(1, back + 1)))
        os.close(fd)
        print(hashlib.sha256(model).hexdigest(), len(model))
    """, m.path("mixed.raw"))
    digest, size = p.finish().split()
    assert m.head("mixed.raw")["ContentLength"] == int(size)
    assert m.sha256("mixed.raw") == digest
    assert "-" in m.head("mixed.raw")["ETag"]  # streamed as a multipart upload, not staged
    assert sha256_file(m.path("mixed.raw")) == digest
    assert_no_uploads(m)


def test_sparse_writes_and_extending_truncate(mount, tmp_path):
    m = mount(SMALL_PARTS)
    pid = daemon_pid(m)
    a, b, c = pattern(3 * MiB, 5), pattern(3 * MiB + 11, 6), pattern(1 * MiB, 7)
    p = PyProc("""
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        write_all(fd, pattern(3 << 20, 5))
        os.lseek(fd, 20 << 20, os.SEEK_CUR)  # a 20 MiB hole
        write_all(fd, pattern((3 << 20) + 11, 6))
        pause("sparse")
        os.ftruncate(fd, 40 << 20)  # extends: leaves the stream
        os.lseek(fd, 0, os.SEEK_END)
        write_all(fd, pattern(1 << 20, 7))
        os.close(fd)
    """, m.path("sparse.vma"))
    p.wait_pause("sparse")
    # The hole is streamed like data (zeros): still in memory and in parts, no staging.
    assert staging_fds(pid, m.cache_dir) == set()
    assert len(uploads(m)) == 1
    p.resume()
    p.finish()

    expected = a + bytes(20 * MiB) + b
    expected += bytes(40 * MiB - len(expected)) + c
    assert m.head("sparse.vma")["ContentLength"] == len(expected) == 41 * MiB
    assert m.sha256("sparse.vma") == sha(expected)
    assert sha256_file(m.path("sparse.vma")) == sha(expected)

    # dd seek= on a new file: a hole from offset 0 (dd extends the file first).
    src = tmp_path / "src"
    src.write_bytes(a)
    sh(f"dd if={src} of={m.path('seek.vma')} bs=1M seek=20 status=none")
    expected = bytes(20 * MiB) + a
    assert m.head("seek.vma")["ContentLength"] == len(expected)
    assert m.sha256("seek.vma") == sha(expected)
    assert sha256_file(m.path("seek.vma")) == sha(expected)
    assert_no_uploads(m)


# ----------------------------------------------------------------------------- 6-8. while open


def test_rename_while_open_for_writing(mount):
    m = mount(SMALL_PARTS)
    os.mkdir(m.path("dump"))
    a, b = pattern(20 * MiB, 8), pattern(10 * MiB + 123, 9)
    run_py("""
        d = sys.argv[1]
        fd = os.open(os.path.join(d, "a.dat"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        write_all(fd, pattern(20 << 20, 8))
        os.rename(os.path.join(d, "a.dat"), os.path.join(d, "b.vma.zst"))
        write_all(fd, pattern((10 << 20) + 123, 9))
        os.close(fd)
    """, m.path("dump"))
    expected = a + b
    assert m.keys() == {"pve/dump/", "pve/dump/b.vma.zst"}
    assert m.head("dump/b.vma.zst")["ContentLength"] == len(expected)
    assert m.sha256("dump/b.vma.zst") == sha(expected)
    assert m.meta("dump/b.vma.zst")["mode"] == str(0o100640)
    assert sorted(os.listdir(m.path("dump"))) == ["b.vma.zst"]
    assert sha256_file(m.path("dump", "b.vma.zst")) == sha(expected)
    assert_no_uploads(m)


def test_read_back_while_writing(mount):
    m = mount(SMALL_PARTS)
    a, b = pattern(20 * MiB, 10), pattern(10 * MiB, 11)
    run_py("""
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        a = pattern(20 << 20, 10)
        write_all(fd, a)
        got = pread_all(fd, 20 << 20, 0)
        assert got == a, f"read back {len(got)} bytes, differing from what was written"
        assert pread_all(fd, 4096, (20 << 20) - 100) == a[-100:]
        write_all(fd, pattern(10 << 20, 11))  # at the file position: 20 MiB
        os.close(fd)
    """, m.path("rw.vma"))
    expected = a + b
    assert m.head("rw.vma")["ContentLength"] == len(expected)
    assert m.sha256("rw.vma") == sha(expected)
    assert sha256_file(m.path("rw.vma")) == sha(expected)
    assert_no_uploads(m)


def test_fsync_mid_stream(mount):
    m = mount(SMALL_PARTS)
    a, b = pattern(17 * MiB, 12), pattern(8 * MiB + 1, 13)
    p = PyProc("""
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        write_all(fd, pattern(17 << 20, 12))
        assert os.fsync(fd) is None
        pause("fsynced")
        write_all(fd, pattern((8 << 20) + 1, 13))
        os.fsync(fd)
        os.close(fd)
    """, m.path("fs.vma"))
    p.wait_pause("fsynced")
    # fsync returned: every part sent so far is stored (17 MiB: 3 parts of 5 MiB went out).
    (upload,) = uploads(m)
    parts = m.s3.list_parts(Bucket=m.bucket, Key=upload["Key"], UploadId=upload["UploadId"])["Parts"]
    assert [(q["PartNumber"], q["Size"]) for q in parts] == [(1, 5 * MiB), (2, 5 * MiB), (3, 5 * MiB)]
    assert m.key("fs.vma") not in m.keys()
    p.resume()
    p.finish()
    expected = a + b
    assert m.head("fs.vma")["ContentLength"] == len(expected)
    assert m.sha256("fs.vma") == sha(expected)
    assert sha256_file(m.path("fs.vma")) == sha(expected)
    assert_no_uploads(m)


# ----------------------------------------------------------------------------- 9. vzdump's pipeline


def test_zstd_pipeline_like_vzdump(mount, tmp_path):
    m = mount()
    src = tmp_path / "disk.raw"
    with open(src, "wb") as f:  # compressible and incompressible stretches, like a disk image
        for i in range(12):
            f.write(os.urandom(2 * MiB))
            f.write((b"block %06d of a guest filesystem\n" % i) * 50_000)
            f.write(bytes(1 * MiB))
    sh(f"mkdir -p {m.path('dump')} && zstd -q -c < {src} > {m.path('dump', 'x.vma.dat')} "
       f"&& mv {m.path('dump', 'x.vma.dat')} {m.path('dump', 'x.vma.zst')}")
    sh(f"zstd -q -d -c < {m.path('dump', 'x.vma.zst')} | cmp - {src}")
    local = tmp_path / "x.vma.zst"
    sh(f"zstd -q -c < {src} > {local}")
    assert m.keys() == {"pve/dump/", "pve/dump/x.vma.zst"}
    head = m.head("dump/x.vma.zst")
    assert head["ContentLength"] == os.path.getsize(local) > 24 * MiB
    assert m.sha256("dump/x.vma.zst") == sha256_file(local)
    assert_no_uploads(m)


# ----------------------------------------------------------------------------- request sizes

def test_the_kernel_asks_one_mib_at_a_time(mount):
    """st_blksize 1 MiB (cp sizes its buffer by it: 1 MiB FUSE writes, max_write) and the
    mount's kernel read-ahead 1 MiB (kernel_readahead; the kernel lowers it to its own
    offer at FUSE INIT, so the daemon sets it after): sequential reads come 1 MiB at a
    time, not 128 KiB."""
    from s3pvefs.fuse.bdi import device_of
    m = mount()
    with open(m.path("f"), "wb") as f:
        f.write(b"x" * 4096)
    assert os.stat(m.path("f")).st_blksize == 1 << 20
    dev = device_of(m.mp)
    assert dev is not None
    deadline, kib = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as f:
            kib = f.read().strip()
        if kib == "1024":
            break
        time.sleep(0.2)
    assert kib == "1024"

    m2 = mount(["kernel_readahead=0"])
    with open(f"/sys/class/bdi/{device_of(m2.mp)}/read_ahead_kb") as f:
        assert f.read().strip() == "128"  # left to the kernel
