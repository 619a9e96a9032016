"""Random operations on one file through a real mount, checked against a model of its
bytes after every read (in the manner of fsx): pwrite anywhere (holes included), pread,
ftruncate up and down, reads and writes through a shared mmap, close and reopen, fsync,
fstat/lseek sizes, and a second read-only descriptor reading beside the writer. The
kernel's page cache, keep_cache between opens, the write-back cache's fills and its
commits at close all take part; at the end the object in the bucket must be the model.
The seeds are fixed: a failure prints the last operations, and runs again the same way."""

from __future__ import annotations

import hashlib
import mmap
import os
import random

import pytest

pytestmark = pytest.mark.mount

MiB = 1 << 20
OPS = ["write", "read", "truncate", "map_read", "map_write", "reopen", "fsync", "size"]
WEIGHTS = [30, 25, 8, 8, 8, 6, 3, 5]


class Run:
    def __init__(self, path: str, seed: int, max_size: int):
        self.path, self.rnd, self.max_size = path, random.Random(seed), max_size
        self.model = bytearray()
        self.log: list[str] = []
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.reader = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self.reader)
        os.close(self.fd)

    def check(self, offset: int, got: bytes, what: str) -> None:
        want = bytes(self.model[offset:offset + len(got)])
        if got != want:
            bad = next(i for i in range(len(got)) if got[i] != want[i])
            tail = "\n".join(self.log[-20:])
            pytest.fail(f"{what}: wrong byte at {offset + bad:#x} of a {len(got):#x}-byte read; last ops:\n{tail}")

    def span(self, limit: int) -> tuple[int, int]:
        offset = self.rnd.randrange(0, len(self.model))
        return offset, self.rnd.randrange(1, min(limit, len(self.model) - offset) + 1)

    def step(self, i: int) -> None:
        op = self.rnd.choices(OPS, WEIGHTS)[0]
        size = len(self.model)
        if op == "write":
            offset = self.rnd.randrange(0, size) if size and self.rnd.random() < 0.5 \
                else self.rnd.randrange(0, self.max_size - 1)
            data = self.rnd.randbytes(min(self.rnd.randrange(1, 256 << 10), self.max_size - offset))
            self.log.append(f"{i} write {offset:#x}+{len(data):#x} (size {size:#x})")
            assert os.pwrite(self.fd, data, offset) == len(data)
            self.model.extend(bytes(max(0, offset - size)))
            self.model[offset:offset + len(data)] = data
        elif op == "read" and size:
            offset, n = self.span(256 << 10)
            fd = self.reader if self.rnd.random() < 0.5 else self.fd
            self.log.append(f"{i} read {offset:#x}+{n:#x} ({'reader' if fd == self.reader else 'writer'})")
            got = os.pread(fd, n, offset)
            assert len(got) == n, f"short read: {len(got)} of {n} at {offset:#x}"
            self.check(offset, got, "read")
        elif op == "truncate":
            new = self.rnd.randrange(0, self.max_size)
            self.log.append(f"{i} truncate {size:#x} -> {new:#x}")
            os.ftruncate(self.fd, new)
            del self.model[new:]
            self.model.extend(bytes(new - len(self.model)))
        elif op in ("map_read", "map_write") and size:
            offset, n = self.span(128 << 10)
            page = offset - offset % mmap.PAGESIZE
            self.log.append(f"{i} {op} {offset:#x}+{n:#x}")
            with mmap.mmap(self.fd, offset + n - page, offset=page) as m:
                if op == "map_read":
                    self.check(offset, m[offset - page:offset - page + n], "read through mmap")
                else:
                    data = self.rnd.randbytes(n)
                    m[offset - page:offset - page + n] = data
                    m.flush()
                    self.model[offset:offset + n] = data
        elif op == "reopen":
            self.log.append(f"{i} close and open again")
            self.close()
            self.fd = os.open(self.path, os.O_RDWR)
            self.reader = os.open(self.path, os.O_RDONLY)
        elif op == "fsync":
            self.log.append(f"{i} fsync")
            os.fsync(self.fd)
        elif op == "size":
            self.log.append(f"{i} size")
            assert (os.fstat(self.fd).st_size, os.lseek(self.fd, 0, os.SEEK_END)) == (size, size)


@pytest.mark.parametrize("seed, ops, max_size", [(1, 700, 4 * MiB), (2, 700, 4 * MiB), (3, 300, 24 * MiB)])
def test_random_operations_match_a_model_of_the_file(mount, seed, ops, max_size):
    """24 MiB: past the cache's fill windows and a streamed file's first parts."""
    m = mount()
    run = Run(m.path("f"), seed, max_size)
    try:
        for i in range(ops):
            run.step(i)
    finally:
        run.close()
    want = hashlib.sha256(run.model).hexdigest()
    with open(m.path("f"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == want
    assert hashlib.sha256(m.get("f")).hexdigest() == want  # what other S3 tools see
    m.remount()
    with open(m.path("f"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == want
