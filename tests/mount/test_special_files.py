"""FIFOs, sockets and device nodes (mkfifo, mknod, bind of a unix socket), stored as
s3fs stores them: an empty object whose x-amz-meta-mode says the type, and
x-amz-meta-rdev the device. `rsync -a` and `tar -x` of trees holding them work, the
kernel gives a local filesystem's errors on them, and s3fs reads them back (and we
read s3fs's)."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess

import pytest

from tests.mount.test_streaming import sh

pytestmark = pytest.mark.mount

DEV_C, DEV_B = os.makedev(1, 3), os.makedev(8, 17)


def make_specials(root: str, plain: bool = True) -> None:
    os.mkfifo(os.path.join(root, "fifo"), 0o640)
    os.mknod(os.path.join(root, "null"), 0o666 | stat.S_IFCHR, DEV_C)
    os.mknod(os.path.join(root, "sdb1"), 0o660 | stat.S_IFBLK, DEV_B)
    os.mknod(os.path.join(root, "pipe2"), 0o600 | stat.S_IFIFO)
    if plain:
        os.mknod(os.path.join(root, "plain"), 0o644 | stat.S_IFREG)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.path.join(root, "sock"))


def types(root: str) -> dict[str, tuple[int, int, int]]:
    """name -> (file type bits, permission bits, rdev)"""
    out = {}
    for name in sorted(os.listdir(root)):
        s = os.lstat(os.path.join(root, name))
        out[name] = (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_rdev)
    return out


EXPECTED = {"fifo": (stat.S_IFIFO, 0o640, 0), "null": (stat.S_IFCHR, 0o666, DEV_C),
            "sdb1": (stat.S_IFBLK, 0o660, DEV_B), "pipe2": (stat.S_IFIFO, 0o600, 0),
            "plain": (stat.S_IFREG, 0o644, 0), "sock": (stat.S_IFSOCK, 0o755 & ~0o022, 0)}


def test_mkfifo_mknod_and_sockets_persist_as_s3fs_stores_them(mount):
    m = mount()
    os.umask(0o022)
    make_specials(m.mp)
    got = types(m.mp)
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in EXPECTED.items()}
    assert got["null"][2] == DEV_C and got["sdb1"][2] == DEV_B and got["fifo"][1] == 0o640
    for name, (kind, perm, rdev) in got.items():  # the bucket's side
        meta = m.meta(name)
        assert int(meta["mode"]) == kind | perm and m.head(name)["ContentLength"] == 0
        if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            assert int(meta["rdev"]) == rdev
    m.remount()
    assert types(m.mp) == got
    # readdir's d_type after the headers were read (find -type uses it)
    assert sh(f"cd {m.mp} && find . -type p | sort").stdout.split() == ["./fifo", "./pipe2"]
    assert sh(f"cd {m.mp} && find . -type s").stdout.split() == ["./sock"]
    assert sh(f"cd {m.mp} && find . -type c -o -type b | sort").stdout.split() == ["./null", "./sdb1"]


def test_posix_errors_on_special_files(mount):
    m = mount()
    fifo = m.path("fifo")
    os.mkfifo(fifo)
    with pytest.raises(OSError) as e:  # a FIFO with no reader
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert e.value.errno == errno.ENXIO
    with pytest.raises(NotADirectoryError):
        os.stat(m.path("fifo", "x"))
    with pytest.raises(FileExistsError):
        os.mkfifo(fifo)
    with pytest.raises(FileExistsError):
        os.mkdir(fifo)
    with pytest.raises(OSError) as e:
        os.rmdir(fifo)
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        os.link(fifo, m.path("hard"))  # hard links stay refused
    assert e.value.errno in (errno.ENOSYS, errno.EPERM, errno.ENOTSUP)
    # the FIFO carries data between two processes, locally, as on any filesystem
    reader = subprocess.Popen(["cat", fifo], stdout=subprocess.PIPE)
    with open(fifo, "wb") as f:
        f.write(b"through the pipe\n")
    assert reader.communicate(timeout=30)[0] == b"through the pipe\n"
    assert m.head("fifo")["ContentLength"] == 0  # nothing of it went to S3
    # rename and remove like any name
    os.rename(fifo, m.path("fifo2"))
    assert stat.S_ISFIFO(os.stat(m.path("fifo2")).st_mode)
    assert stat.S_ISFIFO(int(m.meta("fifo2")["mode"]))
    os.chmod(m.path("fifo2"), 0o600)
    assert int(m.meta("fifo2")["mode"]) == stat.S_IFIFO | 0o600
    os.unlink(m.path("fifo2"))
    assert not os.path.exists(m.path("fifo2")) and "pve/fifo2" not in m.keys()


def tree_with_specials(root: str) -> None:
    os.makedirs(os.path.join(root, "etc", "sub"))
    with open(os.path.join(root, "etc", "hosts"), "w") as f:
        f.write("127.0.0.1 localhost\n")
    os.symlink("hosts", os.path.join(root, "etc", "hosts.link"))
    make_specials(os.path.join(root, "etc", "sub"))


def listing(root: str) -> list[tuple]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            out.append((os.path.relpath(p, root), stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_rdev,
                        s.st_size if stat.S_ISREG(s.st_mode) else 0))
    return sorted(out)


def test_rsync_and_tar_round_trip_trees_with_special_files(mount, tmp_path):
    m = mount()
    src = tmp_path / "src"
    tree_with_specials(str(src))
    sh(f"rsync -a {src}/ {m.mp}/rsynced/")
    sh(f"tar -C {src} -cf {tmp_path}/t.tar . && mkdir {m.mp}/untarred && tar -C {m.mp}/untarred -xf {tmp_path}/t.tar")
    want = listing(str(src))
    assert listing(m.path("rsynced")) == want
    assert listing(m.path("untarred")) == [e for e in want if e[1] != stat.S_IFSOCK]  # tar skips sockets
    # a second rsync finds nothing to do; back out again, identical
    out = sh(f"rsync -ai {src}/ {m.mp}/rsynced/").stdout
    assert out.strip() == "", out
    m.remount()
    back = tmp_path / "back"
    sh(f"rsync -a {m.mp}/rsynced/ {back}/")
    assert listing(str(back)) == want


def test_s3fs_reads_ours_and_we_read_s3fs(mount, s3fs_mount):
    """Type and permissions agree both ways. s3fs 1.90 (Debian 12) keeps no device
    number (its own mknod shows 0, 0; it neither writes nor shows x-amz-meta-rdev), so
    device numbers round-trip through s3pvefs only."""
    def no_rdev(t):
        return {k: v[:2] for k, v in t.items()}

    m = mount()
    os.mkdir(m.path("ours"))
    make_specials(m.path("ours"))
    ours = types(m.path("ours"))
    other = s3fs_mount(m.bucket, m.prefix)
    assert no_rdev(types(os.path.join(other, "ours"))) == no_rdev(ours)
    os.mkdir(os.path.join(other, "theirs"))
    make_specials(os.path.join(other, "theirs"), plain=False)  # s3fs 1.90 stores no mknod'ed regular file
    theirs = types(os.path.join(other, "theirs"))
    m.remount()
    assert types(m.path("theirs")) == theirs
    assert no_rdev(theirs) == {k: v for k, v in no_rdev(ours).items() if k != "plain"}
