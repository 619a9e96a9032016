"""Soak: 16 workers (threads of one child process, each in its own directory) write
and read back files through one mount for a bounded time, over mixed sizes (a few
KiB to tens of MiB): new files streamed sequentially in writes of 4 KiB to 1 MiB,
files rewritten in place with os.pwrite at random offsets (some past the end:
holes), truncated (shorter, longer), appended to, replaced (O_TRUNC), renamed
(across to a subdirectory and back), deleted, listed and read back (whole, or
preads at random offsets); now and then an fsync in the middle of a stream.
Each worker keeps a model of its files (their bytes, or a running sha256 for the
biggest) and checks after every
operation: the bytes read back through the mount, and after every close of a
written file the object in the bucket (its size; small ones byte for byte).
At the end every file is read through the mount once more, and the bucket (boto3)
must hold exactly the model's files with their sha256, and no incomplete upload.

The daemon is watched from /proc: RSS and open descriptors after a warm-up (all
files closed), peak RSS while the soak runs, and both again after the workers
ended. The descriptors must come back (within a few sockets of the connection
pool); the peak must stay within the memory the mount is allowed (write budget +
read-ahead budget) plus 64 MiB and one block of the CRT's buffer pool; and once every
file is closed the RSS outside that pool's blocks must be back within 64 MiB of where
it started (or of the level it held in the soak's first half, if higher: glibc keeps or
returns freed heap by chance), so a leak of buffers or handles shows however long the
soak runs. The warm-up writes and reads back a 24 MiB file per worker at once first, so
that pools the daemon keeps after their first use are in the baseline (see CRT_BLOCK).

Default: 90 s of soak against moto (about 2 minutes in all on the 2-core test
machine). Longer by hand: S3PVEFS_SOAK_SECONDS=1800 ./scripts/test.sh tests/mount/test_soak.py -s
"""

from __future__ import annotations

import collections
import json
import os
import select
import subprocess
import sys
import threading
import time

import pytest

from tests.mount.conftest import ACCESS_KEY, SECRET_KEY, env, run_cli
from tests.mount.test_streaming import assert_no_uploads, daemon_pid, proc_status_kib, uploads

pytestmark = pytest.mark.mount

KiB, MiB = 1 << 10, 1 << 20
WORKERS = 16
SECONDS = float(os.environ.get("S3PVEFS_SOAK_SECONDS", "90"))
WRITE_BUDGET, READ_BUDGET = 64 * MiB, 64 * MiB
# Beyond the two budgets: parts are copied once when cut from the buffer, the HTTP
# stack holds pieces of every request in flight, Content-MD5 hashing works on a
# copy, and the Python heap of 16 files' handles, caches and listings. The 4-writer
# test in test_streaming.py measured 47 MiB of growth over a 32 MiB budget, i.e.
# 15 MiB beyond it; 64 MiB leaves room for 16 writers at once and still fails for a
# leak of a buffer per operation (thousands of operations of 4 KiB to 48 MiB).
SLACK = 64 * MiB
# Files rewritten in place above this are committed in parts, the unchanged ones
# copied server-side (UploadPartCopy): that path too, not only single PUTs. It also
# bounds what such a commit holds in memory, which neither budget covers (see
# test_concurrent_commits_of_rewritten_files_stay_within_the_memory_budget below):
# one PUT of at most 8 MiB, or upload_concurrency parts of 5 MiB.
THRESHOLD = 8 * MiB
FD_SLACK = 8  # descriptors at the end vs after the warm-up (both with every file closed)
# The CRT (which carries near servers' ranged GETs and every part) takes its buffers from
# a pool that maps memory in blocks of 16 buffers of 8 MiB (128 MiB + 8 KiB), keeps a
# block while any of its buffers is in use, and unmaps it after: the daemon's RSS jumps
# by up to 128 MiB between two samples with nothing leaked (baselines of 134-136 or
# 246-262 MiB by chance). The leak checks compare the RSS outside those blocks; the pool itself
# may hold one block.
CRT_BLOCK = 128 * MiB

_CHILD = r'''
import collections, hashlib, json, os, random, sys, threading, time, traceback
import boto3

root, seconds, endpoint, bucket, prefix, nworkers = (sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4],
                                                     sys.argv[5], int(sys.argv[6]))
KiB, MiB = 1 << 10, 1 << 20
KEEP = 64 * MiB     # files up to this size are modelled byte for byte (random rewrites need it)
MAX_FILES = 10      # per worker
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


class Failure(Exception):
    pass


class File:
    """What a file must hold: its bytes (small and medium files), or its size and a
    running sha256 (big streamed ones)."""
    def __init__(self, data=None, size=0, h=None):
        self.data, self.size, self.h = data, size, h

    def digest(self):
        return hashlib.sha256(self.data).hexdigest() if self.data is not None else self.h.hexdigest()

    def length(self):
        return len(self.data) if self.data is not None else self.size


class Worker:
    def __init__(self, i):
        self.i = i
        self.rng = random.Random(7000 + i)
        self.dir = f"w{i:02d}"
        os.makedirs(os.path.join(root, self.dir, "sub"))
        self.files = {}
        self.n = 0
        self.ops = collections.Counter()
        self.written = self.read = 0
        self.error = None
        self.history = collections.deque(maxlen=16)  # (op, file, size before) of the last operations

    # ---------------------------------------------------------------- helpers
    def path(self, rel):
        return os.path.join(root, self.dir, rel)

    def new_name(self):
        self.n += 1
        return f"{'sub/' if self.rng.random() < 0.3 else ''}f{self.n:05d}.{self.rng.choice(['vma', 'iso', 'log', 'raw'])}"

    def pick_size(self):
        r = self.rng.random()
        if r < 0.45:
            return self.rng.randint(1 * KiB, 64 * KiB)
        if r < 0.80:
            return self.rng.randint(64 * KiB, 4 * MiB)
        if r < 0.95:
            return self.rng.randint(4 * MiB, 16 * MiB)
        return self.rng.randint(16 * MiB, 48 * MiB)

    def write_all(self, fd, data):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        self.written += len(data)

    def check(self, rel, bucket_too=False):
        """Read back through the mount (and the object from the bucket)."""
        f = self.files[rel]
        h, size = hashlib.sha256(), 0
        with open(self.path(rel), "rb") as fh:
            while chunk := fh.read(self.rng.choice((64 * KiB, 1 * MiB, 4 * MiB))):
                h.update(chunk)
                size += len(chunk)
        self.read += size
        if size != f.length() or h.hexdigest() != f.digest():
            raise Failure(f"{rel}: read back {size} bytes sha {h.hexdigest()[:16]}, "
                          f"expected {f.length()} sha {f.digest()[:16]}")
        if os.stat(self.path(rel)).st_size != f.length():
            raise Failure(f"{rel}: st_size {os.stat(self.path(rel)).st_size}, expected {f.length()}")
        if bucket_too:
            key = f"{prefix}/{self.dir}/{rel}"
            head = s3.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] != f.length():
                raise Failure(f"{rel}: object of {head['ContentLength']} bytes after close, expected {f.length()}")
            if f.length() <= 1 * MiB:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                if hashlib.sha256(body).hexdigest() != f.digest():
                    raise Failure(f"{rel}: object bytes differ after close")

    # ---------------------------------------------------------------- operations
    def op_create(self, rel=None):
        """Streamed: new (or replaced with O_TRUNC), written sequentially."""
        rel = rel or self.new_name()
        size = self.pick_size()
        self.note(rel, f"{rel in self.files and self.files[rel].length()} -> {size}")
        keep = size <= KEEP
        data, h = bytearray(), hashlib.sha256()
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            left = size
            while left:
                chunk = os.urandom(min(left, self.rng.choice((4 * KiB, 64 * KiB, 128 * KiB, 1 * MiB))))
                self.write_all(fd, chunk)
                if self.rng.random() < 0.01:
                    os.fsync(fd)  # mid-stream: every part sent so far is stored
                h.update(chunk)
                if keep:
                    data += chunk
                left -= len(chunk)
        finally:
            os.close(fd)
        self.files[rel] = File(data=data) if keep else File(size=size, h=h)
        self.check(rel, bucket_too=True)

    def op_replace(self):
        self.op_create(self.rng.choice(sorted(self.files)))

    def op_rewrite(self):
        """In place: pwrite at random offsets into an existing file (some past its end)."""
        small = sorted(r for r, f in self.files.items() if f.data is not None)
        if not small:
            return self.op_create()
        rel = self.rng.choice(small)
        data = self.files[rel].data
        self.note(rel, len(data))
        fd = os.open(self.path(rel), os.O_RDWR)
        try:
            for _ in range(self.rng.randint(1, 6)):
                off = self.rng.randint(0, len(data) + (64 * KiB if self.rng.random() < 0.2 else 0))
                chunk = os.urandom(self.rng.randint(1, 256 * KiB))
                self.note(f"pwrite({len(chunk)}, {off})")
                n = os.pwrite(fd, chunk, off)
                if n != len(chunk):
                    raise Failure(f"{rel}: short pwrite {n} of {len(chunk)}")
                self.written += n
                if off > len(data):
                    data += bytes(off - len(data))
                data[off:off + n] = chunk
        finally:
            os.close(fd)
        self.check(rel, bucket_too=True)

    def op_truncate(self):
        """Shrink or extend (zeros) a file through a path truncate."""
        known = sorted(r for r, f in self.files.items() if f.data is not None)
        if not known:
            return self.op_create()
        rel = self.rng.choice(known)
        data = self.files[rel].data
        size = self.rng.choice((0, self.rng.randint(0, len(data)), len(data) + self.rng.randint(1, 256 * KiB)))
        self.note(rel, f"{len(data)} -> {size}")
        os.truncate(self.path(rel), size)
        if size <= len(data):
            del data[size:]
        else:
            data += bytes(size - len(data))
        self.check(rel, bucket_too=True)

    def op_append(self):
        rel = self.rng.choice(sorted(self.files))
        f = self.files[rel]
        chunk = os.urandom(self.rng.randint(1 * KiB, 2 * MiB))
        self.note(rel, f"{f.length()} + {len(chunk)}")
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_APPEND)
        try:
            self.write_all(fd, chunk)
        finally:
            os.close(fd)
        if f.data is not None and len(f.data) + len(chunk) <= KEEP:
            f.data += chunk
        else:
            if f.data is not None:
                f.h, f.size, f.data = hashlib.sha256(f.data), len(f.data), None
            f.h.update(chunk)
            f.size += len(chunk)
        self.check(rel, bucket_too=True)

    def op_rename(self):
        rel = self.rng.choice(sorted(self.files))
        self.n += 1
        base = f"r{self.n:05d}-{rel.rsplit('/', 1)[-1]}"
        new = base if rel.startswith("sub/") else "sub/" + base
        self.note(rel, "->", new, self.files[rel].length())
        os.rename(self.path(rel), self.path(new))
        self.files[new] = self.files.pop(rel)
        if os.path.exists(self.path(rel)):
            raise Failure(f"{rel} still there after its rename to {new}")
        self.check(new)

    def op_delete(self):
        rel = self.rng.choice(sorted(self.files))
        self.note(rel)
        os.unlink(self.path(rel))
        del self.files[rel]
        if os.path.exists(self.path(rel)):
            raise Failure(f"{rel} still there after unlink")

    def op_read(self):
        rel = self.rng.choice(sorted(self.files))
        f = self.files[rel]
        self.note(rel, f.length())
        if f.data is not None and f.data and self.rng.random() < 0.5:  # random reads
            with open(self.path(rel), "rb") as fh:
                for _ in range(8):
                    off = self.rng.randrange(len(f.data))
                    n = self.rng.randint(1, 128 * KiB)
                    got = os.pread(fh.fileno(), n, off)
                    self.read += len(got)
                    if got != bytes(f.data[off:off + n]):
                        raise Failure(f"{rel}: pread({n}, {off}) differs")
        else:
            self.check(rel)

    def op_list(self):
        for d in ("", "sub/"):
            got = sorted(e for e in os.listdir(self.path(d)) if e != "sub")
            want = sorted(r[len(d):] for r in self.files if r.startswith(d) and "/" not in r[len(d):])
            if got != want:
                raise Failure(f"listing of {self.dir}/{d}: {got}, model {want}")

    def step(self):
        if len(self.files) < 2:
            op = "create"
        else:
            op = self.rng.choices(
                ["create", "replace", "rewrite", "truncate", "append", "rename", "delete", "read", "list"],
                [20, 6, 18, 4, 10, 10, 8 if len(self.files) <= MAX_FILES else 60, 20, 6])[0]
        self.current = op
        self.history.append([op])
        getattr(self, "op_" + op)()
        self.ops[op] += 1

    def run(self, until):
        while time.monotonic() < until:
            self.step()

    def note(self, *what):
        """What the current operation is doing, for the history printed with a failure."""
        self.history[-1].extend(what)

    def failure(self, e, where):
        history = "\n".join("  " + " ".join(str(x) for x in h) for h in self.history)
        return f"worker {self.i} in {where}: {e!r}\n{traceback.format_exc()}last operations of {self.dir}:\n{history}"


workers = [Worker(i) for i in range(nworkers)]


def in_every_worker(work):
    """work(w) in a thread per worker, all at once; what one raises is its error."""
    def body(w):
        try:
            work(w)
        except BaseException as e:
            w.error = w.failure(e, getattr(w, "current", "warm-up"))
    threads = [threading.Thread(target=body, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def phase(until=None, steps=None):
    def work(w):
        if steps is not None:
            for _ in range(steps):
                w.step()
        else:
            w.run(until)
    in_every_worker(work)


def warm_reads(w):
    """A 24 MiB file written and read back sequentially by every worker at once: the
    pools the daemon keeps past their first use (the CRT's part and GET buffers, which it
    holds in blocks of 16) reach their size before the RSS baseline is taken, whichever
    operations the random warm-up below happens to draw."""
    data = os.urandom(24 * MiB)
    with open(w.path("warm.raw"), "wb") as f:
        f.write(data)
    with open(w.path("warm.raw"), "rb") as f:
        if f.read() != data:
            raise Failure("warm.raw read back differs")
    os.unlink(w.path("warm.raw"))


in_every_worker(warm_reads)
phase(steps=4)  # warm-up: 4 operations per worker, the daemon's connections and caches in use
print("PAUSE warm", flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit("not resumed")
t0 = time.monotonic()
if not any(w.error for w in workers):
    phase(until=t0 + seconds)
elapsed = time.monotonic() - t0
final = {}
for w in workers:  # every file once more through the mount
    if w.error is None:
        try:
            for rel in sorted(w.files):
                w.check(rel)
        except BaseException as e:
            w.error = w.failure(e, "the final check")
    for rel, f in w.files.items():
        final[f"{w.dir}/{rel}"] = [f.length(), f.digest()]
ops = collections.Counter()
for w in workers:
    ops.update(w.ops)
print("RESULT " + json.dumps({
    "elapsed": elapsed, "ops": ops, "written": sum(w.written for w in workers),
    "read": sum(w.read for w in workers), "files": final,
    "errors": [w.error for w in workers if w.error]}), flush=True)
'''


def _fds(pid: int) -> collections.Counter:
    """The daemon's open descriptors by kind (socket, pipe, anon_inode, file...)."""
    kinds = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds[target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"] += 1
    return kinds


def crt_pool_kib(pid: int) -> int:
    """Resident KiB of the CRT's pool blocks: anonymous mappings of 128 MiB or more (the
    daemon's own buffers are parts and chunks of a few MiB; glibc's arenas are 64 MiB)."""
    total, anonymous, size = 0, False, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            words = line.split()
            if "-" in words[0] and not words[0].endswith(":"):
                anonymous = len(words) < 6  # a mapping's header line: no path
            elif words[0] == "Size:":
                size = int(words[1])
            elif words[0] == "Rss:" and anonymous and size >= CRT_BLOCK // KiB:
                total += int(words[1])
    return total


class _Sampler:
    """The daemon's RSS (MiB) and descriptor count every `period` seconds."""

    def __init__(self, pid: int, period: float = 5.0):
        self.pid, self.period, self.samples = pid, period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.samples.append(((proc_status_kib(self.pid, "VmRSS") - crt_pool_kib(self.pid)) / 1024,
                                     sum(_fds(self.pid).values())))
            except OSError:
                return

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def trajectory(self, points: int = 10) -> str:
        if not self.samples:
            return "no samples"
        step = max(1, len(self.samples) // points)
        return ", ".join(f"{rss:.0f}/{fds}" for rss, fds in self.samples[::step])


def _read_line(proc: subprocess.Popen, prefix: str, timeout: float, buf: list[bytes]) -> str:
    deadline = time.monotonic() + timeout
    while True:
        data = b"".join(buf)
        if b"\n" in data:
            line, _, rest = data.partition(b"\n")
            buf[:] = [rest]
            text = line.decode()
            if text.startswith(prefix):
                return text[len(prefix):]
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            pytest.fail(f"the soak did not print {prefix!r} in time")
        if select.select([proc.stdout], [], [], min(left, 1.0))[0]:
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                proc.wait()
                pytest.fail(f"the soak exited ({proc.returncode}) before {prefix!r}: "
                            f"{proc.stderr.read().decode(errors='replace')[-5000:]}")
            buf.append(chunk)


def test_soak_16_workers_mixed_files(mount):
    m = mount([f"memory_budget={WRITE_BUDGET >> 20}M", f"readahead_budget={READ_BUDGET >> 20}M",
               "min_part_size=5M", "max_part_size=5M", f"multipart_threshold={THRESHOLD >> 20}M"])
    pid = daemon_pid(m)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, m.mp, str(SECONDS), m.endpoint, m.bucket, m.prefix,
                             str(WORKERS)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env(), "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
                            bufsize=0)
    buf: list[bytes] = []
    try:
        _read_line(proc, "PAUSE warm", 300, buf)
        time.sleep(1.0)  # releases of the warm-up's last files
        pool0 = crt_pool_kib(pid)
        rss0, fds0 = proc_status_kib(pid, "VmRSS") - pool0, _fds(pid)
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) from here on
        proc.stdin.write(b"go\n")
        with _Sampler(pid) as sampler:
            result = json.loads(_read_line(proc, "RESULT ", SECONDS + 600, buf))
        assert proc.wait(60) == 0, proc.stderr.read().decode(errors="replace")[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    peak = proc_status_kib(pid, "VmHWM")
    deadline = time.monotonic() + 30  # every file closed: nothing left to commit
    while (files := json.loads(run_cli("status", m.mp, "--json").stdout)["files"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    pool1 = crt_pool_kib(pid)
    rss1, fds1 = proc_status_kib(pid, "VmRSS") - pool1, _fds(pid)
    status = json.loads(run_cli("status", m.mp, "--json").stdout)

    # The bucket holds exactly the model's files, each with its bytes.
    t0 = time.monotonic()
    keys = {k for k in m.keys() if not k.endswith("/")}
    expected = {m.key(rel) for rel in result["files"]}
    mismatched = [rel for rel, (size, digest) in sorted(result["files"].items())
                  if m.head(rel)["ContentLength"] != size or m.sha256(rel) != digest]
    bucket_s = time.monotonic() - t0
    left = uploads(m)

    ops = result["ops"]
    fmt = lambda c: " ".join(f"{k} {v}" for k, v in sorted(c.items()))  # noqa: E731
    print(f"\nsoak: {WORKERS} workers for {result['elapsed']:.0f} s: {sum(ops.values())} operations ({fmt(ops)}); "
          f"{result['written'] / MiB:.0f} MiB written, {result['read'] / MiB:.0f} MiB read through the mount "
          f"({(result['written'] + result['read']) / MiB / result['elapsed']:.1f} MiB/s); "
          f"{len(result['files'])} files at the end, {sum(s for s, _ in result['files'].values()) / MiB:.0f} MiB, "
          f"checked in the bucket in {bucket_s:.1f} s\n"
          f"daemon RSS outside the CRT's pool blocks: after warm-up {rss0 / 1024:.1f} MiB, end {rss1 / 1024:.1f} "
          f"MiB (allowed growth {SLACK / MiB:.0f} MiB); the pool's blocks: {pool0 / 1024:.1f} MiB, then "
          f"{pool1 / 1024:.1f} MiB; peak RSS, all of it: {peak / 1024:.1f} MiB (allowed: the first figure + "
          f"{(WRITE_BUDGET + READ_BUDGET + SLACK + CRT_BLOCK) / MiB:.0f} MiB)\n"
          f"daemon fds: after warm-up {sum(fds0.values())} ({fmt(fds0)}), end {sum(fds1.values())} ({fmt(fds1)})\n"
          f"RSS outside the pool (MiB)/fds during the soak: {sampler.trajectory()}\n"
          f"S3 requests: {sum(status['requests'].values())} ({fmt(status['requests'])}); "
          f"failures: {status['errors'] or 'none'}")
    assert not result["errors"], "\n".join(result["errors"])
    assert sum(ops.values()) >= WORKERS * 10 and all(ops.get(k) for k in
                                                      ("create", "rewrite", "truncate", "append", "rename", "delete"))
    assert files == [], f"files still not committed after the workers ended: {files}"
    assert keys == expected, f"missing {sorted(expected - keys)[:10]}, unexpected {sorted(keys - expected)[:10]}"
    assert mismatched == [], f"objects differing from the model: {mismatched[:10]}"
    assert left == [], f"incomplete uploads left: {[u['Key'] for u in left]}"
    assert_no_uploads(m)
    assert not status["errors"]
    assert sum(fds1.values()) <= sum(fds0.values()) + FD_SLACK, (fds0, fds1)
    assert fds1["file"] <= fds0["file"], f"files the daemon keeps open: {fds0} -> {fds1}"
    limit_kib = (WRITE_BUDGET + READ_BUDGET + SLACK + CRT_BLOCK) // KiB
    assert peak - rss0 < limit_kib, f"peak RSS grew {(peak - rss0) / 1024:.0f} MiB"
    # A leak grows with the operations; the heap a run keeps does not. The level the RSS
    # held in the soak's first half is the baseline when above the warm-up's: glibc gives
    # freed memory back or keeps it by chance (warm-up baselines of 102 and 195 MiB, the
    # same code; a run failed with 177 MiB at the end and 152-226 MiB all along).
    first_half = sorted(mib for mib, _ in sampler.samples[:max(1, len(sampler.samples) // 2)])
    level = max(rss0, int(first_half[len(first_half) // 2] * 1024)) if first_half else rss0
    assert rss1 - level < SLACK // KiB, (f"RSS grew {(rss1 - level) / 1024:.0f} MiB with every file closed, "
                                         f"from {level / 1024:.0f} MiB (the soak's first half)")
    assert pool1 <= CRT_BLOCK // KiB, f"the CRT's pool holds {pool1 / 1024:.0f} MiB with every file closed"
    # every worker's files went through the mount: sizes seen through it match the model
    for rel, (size, _) in result["files"].items():
        assert os.stat(m.path(rel)).st_size == size, rel


def test_concurrent_commits_of_rewritten_files_stay_within_the_memory_budget(mount):
    """Four 48 MiB files, each rewritten by 4 KiB and closed at the same time: the
    windows their commits send are held to memory_budget like streamed parts (plus
    the 64 MiB of slack the soak allows)."""
    m = mount([f"memory_budget={WRITE_BUDGET >> 20}M", f"readahead_budget={READ_BUDGET >> 20}M",
               "max_part_size=8M"])
    size, n = 48 * MiB, 4
    for i in range(n):
        m.put(f"images/vm-10{i}-disk-0.raw", os.urandom(size))
    pid = daemon_pid(m)
    rss0 = proc_status_kib(pid, "VmRSS")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    script = ("import os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
              "os.pwrite(fd, b'x' * 4096, 1 << 20)\nos.close(fd)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, m.path("images", f"vm-10{i}-disk-0.raw")],
                              stderr=subprocess.PIPE) for i in range(n)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    growth = (proc_status_kib(pid, "VmHWM") - rss0) * KiB
    for i in range(n):
        body = m.get(f"images/vm-10{i}-disk-0.raw")
        assert len(body) == size and body[1 << 20:(1 << 20) + 4096] == b"x" * 4096
    print(f"\n{n} concurrent commits of 4 KiB rewrites in {size // MiB} MiB files: peak RSS growth "
          f"{growth / MiB:.0f} MiB (memory_budget {WRITE_BUDGET // MiB} MiB + slack {SLACK // MiB} MiB)")
    assert growth < WRITE_BUDGET + SLACK


def test_rewrite_in_place_after_renaming_a_multipart_file(mount):
    """Found by the soak (a pwrite into a renamed file failed with EIO): a multipart
    object's ETag ("md5-N") changes when CopyObject moves it, so what the mount knew of
    the source must not be taken for the new key's ETag. Then a write into the renamed
    file that needs the rest of its block from the object asks for the old ETag and S3
    answers 412 PreconditionFailed."""
    m = mount(["min_part_size=5M", "max_part_size=5M", "stat_ttl=1", "listing_ttl=1", "negative_ttl=1"])
    data = bytearray(os.urandom(12 * MiB))
    with open(m.path("a.raw"), "wb") as f:
        f.write(data)
    etag = m.head("a.raw")["ETag"]
    assert etag.strip('"').endswith("-3"), etag  # three parts
    time.sleep(2.5)  # the mount's own answers expired: the next lookup reads the ETag from S3
    assert os.stat(m.path("a.raw")).st_size == len(data)
    os.rename(m.path("a.raw"), m.path("b.raw"))
    moved = m.head("b.raw")["ETag"]
    script = ("import os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
              "try:\n    os.pwrite(fd, b'hello', 1000)\nfinally:\n    os.close(fd)\n")
    r = subprocess.run([sys.executable, "-c", script, m.path("b.raw")], capture_output=True, text=True, timeout=120)
    print(f"\nETag {etag} -> {moved} by the rename; pwrite into b.raw: "
          f"{'ok' if r.returncode == 0 else r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    data[1000:1005] = b"hello"
    assert m.get("b.raw") == data
    assert m.key("a.raw") not in m.keys()
