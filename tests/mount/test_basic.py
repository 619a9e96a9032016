"""Everyday tools and POSIX calls on a real mount, checked from outside with boto3."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.mount.conftest import run_cli, sha256_file

pytestmark = pytest.mark.mount

REG, DIR, LNK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK


@pytest.fixture(autouse=True)
def _umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def sh(script: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-c", "set -euo pipefail; umask 022; " + script], capture_output=True,
                       text=True, timeout=timeout, **kwargs)
    assert r.returncode == 0, f"{script!r} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_local(path, data: bytes, mode: int | None = None) -> None:
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def wait_for(cond, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


def mode_header(m, rel: str) -> int:
    return int(m.meta(rel)["mode"])


# ----------------------------------------------------------------------------- tools


def test_cp_dd_mv_rm(mount, tmp_path):
    m = mount()
    src = tmp_path / "src.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    write_local(src, data, 0o640)

    sh(f"cp {src} {m.path('a.bin')}")
    assert m.sha256("a.bin") == sha(data)
    assert mode_header(m, "a.bin") == REG | 0o640
    assert os.stat(m.path("a.bin")).st_size == len(data)

    sh(f"dd if={src} of={m.path('dd.bin')} bs=64k status=none")
    assert m.sha256("dd.bin") == sha(data)
    assert sha256_file(m.path("dd.bin")) == sha(data)
    assert mode_header(m, "dd.bin") == REG | 0o644

    sh(f"mkdir -p {m.path('sub')} && mv {m.path('a.bin')} {m.path('sub', 'b.bin')}")
    assert m.keys() == {"pve/sub/", "pve/sub/b.bin", "pve/dd.bin"}
    assert m.sha256("sub/b.bin") == sha(data)
    assert mode_header(m, "sub/b.bin") == REG | 0o640
    assert not os.path.exists(m.path("a.bin"))
    assert sha256_file(m.path("sub", "b.bin")) == sha(data)

    sh(f"rm {m.path('dd.bin')}")
    assert m.keys() == {"pve/sub/", "pve/sub/b.bin"}
    assert sorted(os.listdir(m.mp)) == ["sub"]

    sh(f"rm -r {m.path('sub')}")
    assert m.keys() == set()
    assert os.listdir(m.mp) == []


def test_mkdir_p_ls_stat(mount):
    m = mount()
    sh(f"cd {m.mp} && mkdir -p a/b/c a/d && echo hi > a/b/f.txt")
    assert m.keys() == {"pve/a/", "pve/a/b/", "pve/a/b/c/", "pve/a/d/", "pve/a/b/f.txt"}
    for d in ("a", "a/b", "a/b/c", "a/d"):
        assert mode_header(m, d + "/") == DIR | 0o755
        assert m.head(d + "/")["ContentLength"] == 0
    out = sh(f"ls {m.path('a')}").stdout.split()
    assert out == ["b", "d"]
    out = sh(f"ls -la {m.path('a', 'b')}").stdout
    assert "f.txt" in out and "c" in out
    # "." and ".." as on a local disk, with the inode numbers stat gives
    assert sh(f"ls -a {m.path('a', 'b')}").stdout.split() == [".", "..", "c", "f.txt"]
    inos = sh(f"ls -ai {m.path('a', 'b')}").stdout.split()
    assert inos[0] == str(os.stat(m.path("a", "b")).st_ino) and inos[2] == str(os.stat(m.path("a")).st_ino)
    assert sh(f"ls -a {m.mp}").stdout.split()[:2] == [".", ".."]
    assert sh(f"find {m.path('a')} -maxdepth 1 | sort").stdout.split() == [m.path("a"), m.path("a", "b"),
                                                                           m.path("a", "d")]
    out = sh(f"stat -c '%s %a %F' {m.path('a', 'b', 'f.txt')} {m.path('a', 'b', 'c')}").stdout.splitlines()
    assert out == ["3 644 regular file", "0 755 directory"]
    # mkdir -p of what exists is fine; mkdir of it is EEXIST
    sh(f"mkdir -p {m.path('a', 'b', 'c')}")
    with pytest.raises(FileExistsError):
        os.mkdir(m.path("a", "b"))
    # an empty directory persists across a remount
    m.remount()
    assert sorted(os.listdir(m.path("a"))) == ["b", "d"]
    assert os.listdir(m.path("a", "b", "c")) == []
    assert stat.S_IMODE(os.stat(m.path("a", "d")).st_mode) == 0o755


def _make_tree(root: str) -> dict[str, bytes]:
    files = {
        "top.txt": b"top level\n",
        "empty": b"",
        "d1/small.bin": os.urandom(5000),
        "d1/d2/big.bin": os.urandom(2 * 1024 * 1024 + 3),
        "d1/d2/d3/zeros": bytes(300_000),
        "other/x.cfg": b"a=1\n" * 100,
    }
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_local(path, data)
    os.makedirs(os.path.join(root, "emptydir"))
    os.chmod(os.path.join(root, "other/x.cfg"), 0o600)
    os.utime(os.path.join(root, "top.txt"), (1_600_000_000, 1_600_000_000))
    return files


def test_tar_create_and_extract_on_mount(mount):
    m = mount()
    files = _make_tree(m.path("tree"))
    os.symlink("top.txt", m.path("tree", "link"))
    sh(f"cd {m.mp} && tar -cf archive.tar tree && tar -czf archive.tgz tree")
    sh(f"cd {m.mp} && mkdir out outz && tar -xf archive.tar -C out && tar -xzf archive.tgz -C outz")
    assert sh(f"cd {m.mp} && tar -tf archive.tar | sort").stdout == sh(
        f"cd {m.mp} && tar -tzf archive.tgz | sort").stdout
    assert m.sha256("archive.tar") == sha256_file(m.path("archive.tar"))

    expected = {"pve/archive.tar", "pve/archive.tgz", "pve/out/", "pve/outz/"}
    for top in ("tree", "out/tree", "outz/tree"):
        expected |= {f"pve/{top}/", f"pve/{top}/d1/", f"pve/{top}/d1/d2/", f"pve/{top}/d1/d2/d3/",
                     f"pve/{top}/other/", f"pve/{top}/emptydir/", f"pve/{top}/link"}
        for rel, data in files.items():
            expected.add(f"pve/{top}/{rel}")
            assert m.sha256(f"{top}/{rel}") == sha(data), f"{top}/{rel}"
            assert sha256_file(m.path(top, rel)) == sha(data)
        assert mode_header(m, f"{top}/other/x.cfg") == REG | 0o600
        assert mode_header(m, f"{top}/top.txt") == REG | 0o644
        assert os.readlink(m.path(top, "link")) == "top.txt"
    assert m.keys() == expected
    # tar restores the mtime; it is in the header and survives a remount
    assert float(m.meta("out/tree/top.txt")["mtime"]) == 1_600_000_000
    m.remount()
    assert os.stat(m.path("out", "tree", "top.txt")).st_mtime == 1_600_000_000
    assert stat.S_IMODE(os.stat(m.path("outz", "tree", "other", "x.cfg")).st_mode) == 0o600


def test_rsync_twice(mount, tmp_path):
    m = mount()
    src = tmp_path / "src"
    files = _make_tree(str(src))
    write_local(src / "hook.pl", b"#!/usr/bin/perl\nexit 0;\n", 0o755)
    files["hook.pl"] = b"#!/usr/bin/perl\nexit 0;\n"
    sh(f"rsync -a {src}/ {m.path('dst')}/")

    expected = {"pve/dst/", "pve/dst/d1/", "pve/dst/d1/d2/", "pve/dst/d1/d2/d3/", "pve/dst/other/",
                "pve/dst/emptydir/"} | {f"pve/dst/{rel}" for rel in files}
    assert m.keys() == expected  # no leftover rsync temp files
    for rel, data in files.items():
        assert m.sha256(f"dst/{rel}") == sha(data), rel
    assert mode_header(m, "dst/hook.pl") == REG | 0o755
    assert mode_header(m, "dst/other/x.cfg") == REG | 0o600
    assert float(m.meta("dst/top.txt")["mtime"]) == 1_600_000_000

    def second_run() -> str:
        return sh(f"rsync -a --stats --itemize-changes {src}/ {m.path('dst')}/").stdout

    out = second_run()
    assert "Number of regular files transferred: 0" in out, out
    # The same after the caches are cold (remount): attributes come from the headers.
    m.remount()
    out = second_run()
    assert "Number of regular files transferred: 0" in out, out
    assert m.keys() == expected


def _rsync_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        write_local(src / f"f{i}", b"x" * i, 0o600)
        os.utime(src / f"f{i}", (1_600_000_000, 1_600_000_000))
    return src


def test_big_directory_listing_shows_real_attributes_when_asked(mount, tmp_path):
    """A directory with more than listing_heads_below (0 here, so 5 files count as big)
    unread files is listed with LISTs only, but the kernel is never given the listing's
    defaults to show or to check access against: `ls -l` reads each name's headers
    (SECURITY.md, "Attributes the kernel checks")."""
    m = mount(options=["listing_ttl=2", "listing_heads_below=0"])
    src = _rsync_source(tmp_path)
    sh(f"rsync -a {src}/ {m.path('dst')}/")
    m.remount()
    out = sh(f"ls -ln --time-style=+%s {m.path('dst')}").stdout
    assert out.count("-rw------- 1 0 0") == 5 and out.count(" 1600000000 ") == 5, out
    time.sleep(2.5)
    st = os.stat(m.path("dst/f3"))
    assert stat.S_IMODE(st.st_mode) == 0o600 and int(st.st_mtime) == 1_600_000_000


def test_small_directory_listing_shows_real_attributes(mount, tmp_path):
    """At most listing_heads_below (64) unread files: opendir reads their headers."""
    m = mount()
    src = _rsync_source(tmp_path)
    sh(f"rsync -a {src}/ {m.path('dst')}/")
    m.remount()
    out = sh(f"ls -ln --time-style=+%s {m.path('dst')}").stdout
    assert out.count("-rw------- 1 0 0") == 5 and out.count(" 1600000000 ") == 5, out


def test_rsync_delete_after_remount_transfers_nothing_with_listing_heads(mount, tmp_path):
    m = mount(options=["listing_heads=true", "listing_heads_below=0"])
    src = _rsync_source(tmp_path)
    sh(f"rsync -a {src}/ {m.path('dst')}/")
    m.remount()
    out = sh(f"ls -ln --time-style=+%s {m.path('dst')}").stdout
    assert out.count("-rw------- 1 0 0") == 5 and out.count(" 1600000000 ") == 5, out
    out = sh(f"rsync -a --delete --stats {src}/ {m.path('dst')}/").stdout
    assert "Number of regular files transferred: 0" in out, out


# ----------------------------------------------------------------------------- attributes


def test_chmod_chown_touch_persist(mount):
    m = mount()
    f = m.path("f.txt")
    write_local(f, b"data")
    os.mkdir(m.path("d"))
    os.chmod(f, 0o750)
    os.chown(f, 1234, 5678)
    sh(f"touch -d '2021-02-03 04:05:06 UTC' {f}")
    os.chmod(m.path("d"), 0o700)
    os.chown(m.path("d"), 42, 43)
    os.utime(m.path("d"), ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))

    meta = m.meta("f.txt")
    assert int(meta["mode"]) == REG | 0o750
    assert (meta["uid"], meta["gid"]) == ("1234", "5678")
    assert float(meta["mtime"]) == 1_612_325_106
    meta = m.meta("d/")
    assert int(meta["mode"]) == DIR | 0o700
    assert (meta["uid"], meta["gid"]) == ("42", "43")
    assert m.get("f.txt") == b"data"
    assert m.keys() == {"pve/f.txt", "pve/d/"}

    m.remount()
    s = os.stat(f)
    assert (s.st_mode, s.st_uid, s.st_gid, s.st_mtime, s.st_size) == (REG | 0o750, 1234, 5678, 1_612_325_106, 4)
    s = os.stat(m.path("d"))
    assert (s.st_mode, s.st_uid, s.st_gid, s.st_mtime_ns) == (DIR | 0o700, 42, 43, 1_500_000_000_123_456_789)
    with open(f, "rb") as fh:
        assert fh.read() == b"data"


def test_truncate_shrink_and_extend(mount):
    m = mount()
    data = os.urandom(100_000)
    f = m.path("t.bin")
    write_local(f, data)
    os.truncate(f, 10_000)  # no open handle: committed at once
    assert m.get("t.bin") == data[:10_000]
    assert os.stat(f).st_size == 10_000
    os.truncate(f, 1 << 20)
    assert m.head("t.bin")["ContentLength"] == 1 << 20
    assert m.get("t.bin") == data[:10_000] + bytes((1 << 20) - 10_000)
    sh(f"truncate -s 5000 {f}")
    assert m.get("t.bin") == data[:5000]
    # ftruncate through an open handle: committed at close
    with open(f, "r+b") as fh:
        fh.truncate(100)
        fh.seek(0, os.SEEK_END)
        fh.write(b"end")
    assert m.get("t.bin") == data[:100] + b"end"
    assert mode_header(m, "t.bin") == REG | 0o644
    m.remount()
    with open(f, "rb") as fh:
        assert fh.read() == data[:100] + b"end"


def test_symlink_readlink(mount):
    m = mount()
    os.mkdir(m.path("d"))
    write_local(m.path("d", "target.txt"), b"pointed at")
    os.symlink("d/target.txt", m.path("link"))
    os.symlink("../../elsewhere/none", m.path("d", "dangling"))
    assert os.readlink(m.path("link")) == "d/target.txt"
    assert stat.S_ISLNK(os.lstat(m.path("link")).st_mode)
    with open(m.path("link"), "rb") as fh:
        assert fh.read() == b"pointed at"
    assert m.get("link") == b"d/target.txt"
    assert mode_header(m, "link") == LNK | 0o777
    assert m.keys() == {"pve/d/", "pve/d/target.txt", "pve/link", "pve/d/dangling"}
    m.remount()
    assert os.readlink(m.path("link")) == "d/target.txt"
    assert os.readlink(m.path("d", "dangling")) == "../../elsewhere/none"
    assert stat.S_ISLNK(os.lstat(m.path("d", "dangling")).st_mode)
    assert not os.path.exists(m.path("d", "dangling"))
    os.unlink(m.path("link"))
    assert m.keys() == {"pve/d/", "pve/d/target.txt", "pve/d/dangling"}


# ----------------------------------------------------------------------------- open modes


def test_unlinked_open_file_stays_readable(mount):
    m = mount()
    data = os.urandom(3 * 1024 * 1024)
    write_local(m.path("f"), data)
    m.remount()  # the data is only in S3 now
    with open(m.path("f"), "rb") as fh:
        head = fh.read(1000)
        os.unlink(m.path("f"))
        assert not os.path.exists(m.path("f"))
        assert "f" not in os.listdir(m.mp)
        rest = fh.read()
        st = os.fstat(fh.fileno())
        assert (st.st_size, st.st_nlink) == (len(data), 0)  # as on a local disk (pjdfstest unlink/14)
    assert head + rest == data
    # the kernel sends RELEASE asynchronously after close() returns
    wait_for(lambda: m.keys() == set(), "the unlinked object is deleted at the last close")

    # a file written here and still open (data staged locally)
    fd = os.open(m.path("g"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"staged data")
        os.unlink(m.path("g"))
        assert os.pread(fd, 100, 0) == b"staged data"
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    assert m.keys() == set()
    assert os.listdir(m.mp) == []

    # replaced by a rename while open: the open file has no name left either
    write_local(m.path("old"), b"old")
    write_local(m.path("new"), b"new")
    fd = os.open(m.path("old"), os.O_RDONLY)
    try:
        assert os.fstat(fd).st_nlink == 1
        os.rename(m.path("new"), m.path("old"))
        assert os.fstat(fd).st_nlink == 0
        assert os.stat(m.path("old")).st_nlink == 1
    finally:
        os.close(fd)


def test_a_name_reused_right_after_the_last_close_of_its_unlinked_file_keeps_the_new_file(mount):
    """close(2) returns before the kernel's RELEASE is handled: the last close of an
    unlinked file may still be deleting its object when a script writes a new file
    under the same name. The new file stays (before, its object was deleted: the next
    write got ESTALE and the file was gone from the bucket)."""
    m = mount()
    for i in range(5):
        write_local(m.path("b"), os.urandom(300_000))
        fd = os.open(m.path("b"), os.O_RDONLY)
        os.unlink(m.path("b"))
        os.pread(fd, 1 << 20, 0)
        os.close(fd)
        write_local(m.path("b"), b"x" * 10)
        with open(m.path("b"), "r+b") as f:  # opened again for writing, not truncated
            f.write(b"y" * 5)
        assert m.get("b") == b"y" * 5 + b"x" * 5, f"round {i}"
    assert m.keys() == {m.key("b")}


def test_o_append(mount):
    m = mount()
    f = m.path("log.txt")
    write_local(f, b"line1\n")
    with open(f, "ab") as fh:
        fh.write(b"line2\n")
    assert m.get("log.txt") == b"line1\nline2\n"
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"line3\n")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"line4\n")  # O_APPEND: still at the end
    finally:
        os.close(fd)
    assert m.get("log.txt") == b"line1\nline2\nline3\nline4\n"
    sh(f"echo line5 >> {f}")
    with open(f, "rb") as fh:
        assert fh.read() == b"line1\nline2\nline3\nline4\nline5\n"
    assert m.get("log.txt") == b"line1\nline2\nline3\nline4\nline5\n"


def test_o_direct_accepted(mount):
    m = mount()
    f = m.path("direct.raw")
    size = 16 * 4096
    buf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT wants
    payload = os.urandom(size)
    buf.write(payload)
    fd = os.open(f, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o640)
    try:
        assert os.write(fd, buf) == size
    finally:
        os.close(fd)
    assert m.get("direct.raw") == payload
    assert mode_header(m, "direct.raw") == REG | 0o640

    rbuf = mmap.mmap(-1, size)
    fd = os.open(f, os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.readv(fd, [rbuf]) == size
    finally:
        os.close(fd)
    assert rbuf[:] == payload
    # open + close in read-write mode, as QEMU does for a disk image
    fd = os.open(f, os.O_RDWR | os.O_DIRECT)
    os.close(fd)
    assert m.get("direct.raw") == payload


# ----------------------------------------------------------------------------- directories, statfs


def test_rmdir_not_empty(mount):
    m = mount()
    os.makedirs(m.path("d", "sub"))
    write_local(m.path("d", "f"), b"x")
    with pytest.raises(OSError) as e:
        os.rmdir(m.path("d"))
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(m.path("d", "f"))
    with pytest.raises(OSError) as e:  # the subdirectory is still there
        os.rmdir(m.path("d"))
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(m.path("d", "sub"))
    os.rmdir(m.path("d"))
    assert m.keys() == set()
    # an implicit directory (objects put from outside, no marker)
    m.put("x/y/z.bin", b"data")
    time.sleep(1.2)  # the kernel's negative entry for x, if any
    with pytest.raises(OSError) as e:
        os.rmdir(m.path("x"))
    assert e.value.errno == errno.ENOTEMPTY
    # a file still open (not committed) in a directory keeps it non-empty
    os.mkdir(m.path("e"))
    with open(m.path("e", "open.txt"), "wb") as fh:
        fh.write(b"not yet")
        with pytest.raises(OSError) as e:
            os.rmdir(m.path("e"))
        assert e.value.errno == errno.ENOTEMPTY
    assert m.get("e/open.txt") == b"not yet"


def test_statfs(mount):
    m = mount()
    v = os.statvfs(m.mp)
    assert v.f_blocks > 0 and v.f_frsize > 0 and v.f_bsize > 0
    assert v.f_bavail > 0 and v.f_bfree >= v.f_bavail
    assert v.f_blocks * v.f_frsize >= 1 << 40  # the default capacity, 1 PiB
    out = sh(f"df -P {m.mp}").stdout.splitlines()
    assert len(out) == 2 and m.mp in out[1]


def test_capacity_option(mount):
    m = mount(["capacity=2T"])
    v = os.statvfs(m.mp)
    assert v.f_blocks * v.f_frsize == 2 << 40


# ----------------------------------------------------------------------------- foreign objects


def status_requests(m) -> dict[str, int]:
    r = run_cli("status", m.mp, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["requests"]


def requests_since(m, before: dict[str, int]) -> dict[str, int]:
    now = status_requests(m)
    return {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}


def test_readdir_10000_foreign_objects(mount):
    """A listing is 10 LISTs; `ls -l` of a big directory reads each name's headers once
    (one HEAD each, or a GET for a small file, read ahead in parallel: the kernel gets no
    attributes unread). TTLs long enough that nothing expires on a slow machine; no
    usage count in the figures."""
    m = mount(["stat_ttl=120", "listing_ttl=120", "negative_ttl=120", "usage_interval=0"])
    n = 10_000
    names = [f"obj-{i:05d}.dat" for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: m.put(f"big/{name}", b"x" * 10), names))
        list(pool.map(lambda name: m.put(f"some/{name}", b"y" * 5), names[:1500]))
    m.put("big/sub/inner.dat", b"inner")
    before = status_requests(m)
    listed = os.listdir(m.path("big"))
    assert len(listed) == n + 1
    assert set(listed) == set(names) | {"sub"}
    listing = requests_since(m, before)
    # the lookup of "big" (HEAD, HEAD marker, LIST), then 11 pages
    assert listing.get("list_objects_v2", 0) <= 12 and listing.get("head_object", 0) <= 2, listing
    before = status_requests(m)
    t0 = time.monotonic()
    out = sh(f"ls -l {m.path('some')}").stdout.splitlines()  # 1,500: one GET each (moto: ~200 a second)
    took = time.monotonic() - t0
    assert out[0].startswith("total")
    assert len(out) == 1500 + 1
    assert sum(1 for line in out if line.startswith("-rw-r--r--")) == 1500
    used = requests_since(m, before)
    print(f"\nls -l of 1,500 foreign objects: {took:.1f} s, requests {used}")
    assert used.get("head_object", 0) + used.get("get_object", 0) <= 1500 + 2, used
    assert used.get("list_objects_v2", 0) <= 4, used
    s = os.stat(m.path("big", names[1234]))
    assert (s.st_mode, s.st_size, s.st_uid, s.st_gid) == (REG | 0o644, 10, 0, 0)
    assert stat.S_ISDIR(os.stat(m.path("big", "sub")).st_mode)
    with open(m.path("big", names[9999]), "rb") as fh:
        assert fh.read() == b"x" * 10


def test_foreign_object_default_mode(mount):
    m = mount(["file_mode=0600,dir_mode=0700,uid=1000,gid=1001"])
    m.put("foreign.bin", b"hello")
    m.put("fdir/inner", b"i")
    s = os.stat(m.path("foreign.bin"))
    assert (s.st_mode, s.st_uid, s.st_gid, s.st_size) == (REG | 0o600, 1000, 1001, 5)
    s = os.stat(m.path("fdir"))
    assert (s.st_mode, s.st_uid, s.st_gid) == (DIR | 0o700, 1000, 1001)
    out = sh(f"ls -ln {m.mp}").stdout
    assert "-rw------- 1 1000 1001 5 " in out, out
    assert "drwx------ 2 1000 1001 0 " in out, out
    # the object's LastModified is its mtime
    lm = m.head("foreign.bin")["LastModified"].timestamp()
    assert abs(os.stat(m.path("foreign.bin")).st_mtime - lm) < 1


def test_foreign_object_default_mode_is_0644(mount):
    m = mount()
    m.put("foreign.bin", b"hello")
    assert os.stat(m.path("foreign.bin")).st_mode == REG | 0o644
    with open(m.path("foreign.bin"), "rb") as fh:
        assert fh.read() == b"hello"


def test_foreign_object_appears_after_ttl(mount):
    m = mount()
    os.mkdir(m.path("d"))
    assert os.listdir(m.path("d")) == []
    assert not os.path.exists(m.path("d", "late.txt"))  # cached negative too
    m.put("d/late.txt", b"late")
    t0 = time.monotonic()
    while "late.txt" not in os.listdir(m.path("d")):
        assert time.monotonic() - t0 < 15, "object put from outside not listed after the TTL"
        time.sleep(0.5)
    while not os.path.exists(m.path("d", "late.txt")):
        assert time.monotonic() - t0 < 15, "object put from outside not found after the TTL"
        time.sleep(0.5)
    with open(m.path("d", "late.txt"), "rb") as fh:
        assert fh.read() == b"late"
    # and a deletion from outside disappears the same way
    m.s3.delete_object(Bucket=m.bucket, Key="pve/d/late.txt")
    t0 = time.monotonic()
    while "late.txt" in os.listdir(m.path("d")) or os.path.exists(m.path("d", "late.txt")):
        assert time.monotonic() - t0 < 15, "object deleted from outside still there after the TTL"
        time.sleep(0.5)
