"""No torn reads: an object replaced by another writer (another node, another S3 tool)
while this mount still holds its old attributes is read as the old version whole or
the new one whole, never the new bytes cut to the old size, nor old bytes followed
by new ones. Ranged GETs carry the ETag the size came from (If-Match)."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.mount

# Our attribute cache (stat_ttl) outlives the kernel's (1 s): that window is where a
# replaced object used to be served as its new bytes cut to the old size.
TTL = 5
OPTIONS = [f"stat_ttl={TTL}", f"listing_ttl={TTL}"]


def cat(path: str) -> bytes:
    return subprocess.run(["cat", path], capture_output=True, check=True, timeout=60).stdout


def reads_whole_versions(path: str, versions: set[bytes], seconds: float) -> list[bytes]:
    """Read path with cat again and again for a while; every read must be a whole version."""
    seen = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        got = cat(path)
        assert got in versions, f"torn read: {got[:80]!r} ({len(got)} bytes) is no version of the file"
        seen.append(got)
        time.sleep(0.3)
    return seen


@pytest.mark.parametrize("first", ["stat", "cat"])
@pytest.mark.parametrize("old,new", [(b"old\n", b"new new\n"), (b"a longer old version\n", b"short\n"),
                                     (b"same size A\n", b"same size B\n")])
def test_object_replaced_by_boto3_is_read_whole(mount, old, new, first):
    m = mount(OPTIONS)
    m.put("dump/notes", old)
    # the mount learns the old size and ETag (stat), or the kernel also has its pages (cat)
    if first == "stat":
        assert os.stat(m.path("dump", "notes")).st_size == len(old)
    else:
        assert cat(m.path("dump", "notes")) == old
    m.put("dump/notes", new)  # another tool replaces it
    seen = reads_whole_versions(m.path("dump", "notes"), {old, new}, TTL + 3)
    assert seen[-1] == new, "the new version is never read although the old one is gone"


def test_a_rewrite_on_another_node_is_read_whole(mount):
    a = mount(OPTIONS)
    b = mount(OPTIONS, bucket=a.bucket)
    os.makedirs(a.path("dump"))
    with open(a.path("dump", "vm.log"), "wb") as f:
        f.write(b"INFO: starting\n")
    assert cat(b.path("dump", "vm.log")) == b"INFO: starting\n"
    full = b"INFO: starting\n" + b"INFO: status: 42%\n" * 5000 + b"INFO: finished\n"
    with open(a.path("dump", "vm.log"), "wb") as f:
        f.write(full)
    seen = reads_whole_versions(b.path("dump", "vm.log"), {b"INFO: starting\n", full}, TTL + 3)
    assert seen[-1] == full


def test_a_reader_part_way_through_never_gets_a_mix(mount):
    """A reader that already has old bytes cannot be given the rest of the old version
    once it is gone: it gets ESTALE, never new bytes after old ones."""
    m = mount(OPTIONS + ["chunk_size=1M", "max_readahead_chunks=1"])
    old, new = b"O" * (24 << 20), b"N" * (24 << 20)
    m.put("images/disk.raw", old)
    fd = os.open(m.path("images", "disk.raw"), os.O_RDONLY)
    try:
        got = os.read(fd, 1 << 20)
        assert got == old[: 1 << 20]
        m.put("images/disk.raw", new)
        try:
            while True:
                piece = os.pread(fd, 1 << 20, len(got))
                if not piece:
                    break
                got += piece
        except OSError as e:
            assert e.errno == errno.ESTALE, f"expected ESTALE, got {e}"
        else:
            assert got == old, "old bytes followed by new ones"
    finally:
        os.close(fd)
    assert cat(m.path("images", "disk.raw")) == new  # a new open reads the new version whole
