"""Times as a local filesystem keeps them (SEMANTICS.md says what persists): rename
sets the file's ctime; creating, removing or renaming a name sets its directory's mtime
and ctime, kept in the directory's marker across a remount. Directory markers keep the
headers other tools wrote on them; prefix-only directories show dir_mode."""

from __future__ import annotations

import os
import stat
import time

import pytest

pytestmark = pytest.mark.mount


def times(path: str) -> tuple[float, float]:
    s = os.lstat(path)
    return s.st_mtime, s.st_ctime


def test_rename_sets_ctime_and_keeps_mtime(mount):
    m = mount()
    with open(m.path("a"), "wb") as f:
        f.write(b"data")
    os.utime(m.path("a"), (1_600_000_000, 1_600_000_000))
    mtime, ctime = times(m.path("a"))
    time.sleep(1.1)  # LastModified has whole seconds
    t0 = time.time()
    os.rename(m.path("a"), m.path("b"))
    mtime2, ctime2 = times(m.path("b"))
    assert mtime2 == mtime == 1_600_000_000 and ctime2 >= t0 - 0.01 and ctime2 > ctime
    m.remount()
    mtime3, ctime3 = times(m.path("b"))
    assert mtime3 == mtime and ctime3 >= int(t0)


@pytest.mark.parametrize("size", [0, 5])
@pytest.mark.parametrize("access", [os.O_WRONLY, os.O_RDONLY])
def test_o_trunc_empties_and_sets_the_times_as_linux_does(mount, tmp_path, size, access):
    """As on a local filesystem: O_TRUNC with any access mode empties the file, and sets
    mtime and ctime even where it was empty already (`: > stamp`); after a remount too."""
    m = mount()
    for root in (str(tmp_path), m.mp):
        with open(os.path.join(root, "f"), "wb") as f:
            f.write(b"x" * size)
        os.utime(os.path.join(root, "f"), (1_600_000_000, 1_600_000_000))
    time.sleep(1.1)  # LastModified has whole seconds
    t0 = time.time()
    for root in (str(tmp_path), m.mp):
        os.close(os.open(os.path.join(root, "f"), access | os.O_TRUNC))
        s = os.stat(os.path.join(root, "f"))
        assert s.st_size == 0 and s.st_mtime >= t0 - 0.01 and s.st_ctime >= t0 - 0.01, (root, s)
    m.remount()
    s = os.stat(m.path("f"))
    assert s.st_size == 0 and s.st_mtime >= int(t0), s
    assert float(m.meta("f")["mtime"]) >= int(t0)


@pytest.mark.parametrize("change", ["create", "unlink", "mkdir", "rmdir", "rename", "symlink", "mkfifo"])
def test_entries_changing_set_the_directory_times_and_they_persist(mount, change):
    m = mount()
    d = m.path("d")
    os.mkdir(d)
    for name in ("old", "gone"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"x")
    os.mkdir(os.path.join(d, "sub"))
    os.utime(d, (1_600_000_000, 1_600_000_000))
    assert times(d)[0] == 1_600_000_000
    t0 = time.time()
    {"create": lambda: open(os.path.join(d, "new"), "wb").close(),
     "unlink": lambda: os.unlink(os.path.join(d, "gone")),
     "mkdir": lambda: os.mkdir(os.path.join(d, "newdir")),
     "rmdir": lambda: os.rmdir(os.path.join(d, "sub")),
     "rename": lambda: os.rename(os.path.join(d, "old"), os.path.join(d, "renamed")),
     "symlink": lambda: os.symlink("old", os.path.join(d, "link")),
     "mkfifo": lambda: os.mkfifo(os.path.join(d, "fifo"))}[change]()
    mtime, ctime = times(d)
    assert mtime >= t0 - 0.01 and ctime >= t0 - 0.01, (change, mtime, t0)
    m.umount()  # pending marker times are written at unmount at the latest
    stored = float(m.meta("d/")["mtime"])
    assert stored >= t0 - 0.01
    m.do_mount()
    assert times(d)[0] == pytest.approx(stored, abs=1e-6)


def test_directory_times_reach_the_marker_without_unmount(mount):
    m = mount()
    os.mkdir(m.path("d"))
    t0 = time.time()
    for i in range(50):  # many changes: one rewrite of the marker
        open(m.path("d", f"f{i}"), "wb").close()
    deadline = time.time() + 15
    while float(m.meta("d/")["mtime"]) < t0 - 0.01:
        assert time.time() < deadline, "directory times never reached the marker"
        time.sleep(0.2)
    assert stat.S_IMODE(int(m.meta("d/")["mode"])) == 0o755


def test_chmod_of_a_directory_keeps_the_headers_other_tools_wrote(mount):
    m = mount()
    m.put("d/", b"", ContentType="application/x-directory",
          Metadata={"mode": str(stat.S_IFDIR | 0o755), "owner-app": "backup-gui", "color": "blue"})
    os.chmod(m.path("d"), 0o700)
    meta = m.meta("d/")
    assert meta["owner-app"] == "backup-gui" and meta["color"] == "blue"
    assert int(meta["mode"]) == stat.S_IFDIR | 0o700
    assert m.head("d/")["ContentType"] == "application/x-directory"
    m.remount()
    assert stat.S_IMODE(os.stat(m.path("d")).st_mode) == 0o700


def test_prefix_only_directory_shows_dir_mode(mount):
    m = mount(["dir_mode=0750", "file_mode=0640"])
    m.put("only/a/prefix/file.txt", b"x")  # no markers anywhere
    for d in ("only", "only/a", "only/a/prefix"):
        assert stat.S_IMODE(os.stat(m.path(d)).st_mode) == 0o750, d
    assert stat.S_IMODE(os.stat(m.path("only/a/prefix/file.txt")).st_mode) == 0o640
    out = os.popen(f"ls -ld {m.path('only')}").read()
    assert out.startswith("drwxr-x---"), out


def test_old_style_directory_object_without_a_slash_is_a_directory(mount):
    """A zero-byte `name` of Content-Type application/x-directory (older s3fs, some GUIs)."""
    m = mount()
    m.put("legacy", b"", ContentType="application/x-directory", Metadata={"mode": str(stat.S_IFDIR | 0o750)})
    m.put("legacy2", b"", ContentType="httpd/unix-directory")
    m.put("plainfile", b"")  # a zero-byte file is still a file
    assert os.path.isdir(m.path("legacy")) and os.path.isdir(m.path("legacy2"))
    assert stat.S_IMODE(os.stat(m.path("legacy")).st_mode) == 0o750
    assert os.path.isfile(m.path("plainfile"))
    assert sorted(os.listdir(m.mp)) == ["legacy", "legacy2", "plainfile"]
    assert os.listdir(m.path("legacy")) == []
    with open(m.path("legacy", "inside"), "wb") as f:
        f.write(b"x")
    assert os.listdir(m.path("legacy")) == ["inside"]
    m.remount()  # listed first, then stat'ed: the listing's "file" turns out a directory
    out = os.popen(f"ls -l {m.mp}").read()
    assert [ln[0] for ln in out.splitlines()[1:]] == ["d", "d", "-"], out
    os.unlink(m.path("legacy", "inside"))
    os.rmdir(m.path("legacy"))  # its object goes too, or it would come back
    os.rename(m.path("legacy2"), m.path("moved"))
    assert "pve/legacy" not in m.keys() and "pve/legacy2" not in m.keys()
    m.remount()
    assert sorted(os.listdir(m.mp)) == ["moved", "plainfile"] and os.path.isdir(m.path("moved"))
