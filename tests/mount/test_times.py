"""Times as a local filesystem keeps them (SEMANTICS.md says what persists): rename
sets the file's ctime; creating, removing or renaming a name sets its directory's mtime
and ctime, kept in the directory's marker across a remount. Directory markers keep the
headers other tools wrote on them; prefix-only directories show dir_mode. And, over
random operations beside a local directory, each sets the same mtimes and ctimes."""

from __future__ import annotations

import errno
import os
import random
import stat
import time

import pytest

from tests.mount.test_namespace_ops import FRESH
from tests.mount.test_streaming import sh

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


def test_rename_keeps_the_mtime_of_streamed_and_foreign_objects(mount):
    """A streamed file's multipart upload completes with no time headers (its
    LastModified is its mtime), and other tools' objects may have none: renaming the
    file or its directory keeps the mtime, across a remount, and the Content-Type."""
    m = mount()
    os.mkdir(m.path("d"))
    with open(m.path("d", "big.vma"), "wb") as f:
        for _ in range(20):
            f.write(os.urandom(1 << 20))
    assert "mtime" not in m.meta("d/big.vma")  # as streamed
    m.put("d/foreign.iso", b"iso", ContentType="application/x-iso9660-image")
    m.remount()  # mtimes as the bucket says: LastModified
    before = {n: times(m.path("d", n))[0] for n in ("big.vma", "foreign.iso")}
    time.sleep(1.1)  # LastModified has whole seconds
    os.rename(m.path("d", "big.vma"), m.path("d", "big2.vma"))
    os.rename(m.path("d"), m.path("e"))
    m.remount()
    after = {n: times(m.path("e", n))[0] for n in ("big2.vma", "foreign.iso")}
    assert after == {"big2.vma": before["big.vma"], "foreign.iso": before["foreign.iso"]}
    assert m.head("e/foreign.iso")["ContentType"] == "application/x-iso9660-image"


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


def test_new_directory_times_show_when_its_attributes_were_not_cached(mount):
    """The change's time shows at once even where the mount reads the directory's
    attributes from S3 again before its marker holds it (stat_ttl shorter than the
    marker's delay here; with the defaults, a change that takes longer than stat_ttl)."""
    m = mount(["stat_ttl=0.1", "negative_ttl=0.1", "listing_ttl=0.1",
               "kernel_entry_timeout=0.1", "kernel_attr_timeout=0.1"])
    os.mkdir(m.path("d"))
    os.utime(m.path("d"), (1_600_000_000, 1_600_000_000))
    time.sleep(0.3)
    t0 = time.time()
    open(m.path("d", "new"), "wb").close()
    for _ in range(5):  # past stat_ttl, before the marker's rewrite (2 s)
        time.sleep(0.3)
        mtime, ctime = times(m.path("d"))
        assert mtime >= t0 - 0.01 and ctime >= t0 - 0.01, (mtime, ctime, t0)


@pytest.mark.parametrize("how", ["utime", "chmod", "rsync", "tar"])
def test_directory_attributes_set_right_after_its_entries_changed_last(mount, tmp_path, how):
    """`tar -x` and `rsync -a` set a directory's mtime after filling it: the marker's
    pending rewrite for the new entries must not undo it, now or after a remount."""
    m = mount()
    src = tmp_path / "src"
    (src / "d" / "sub").mkdir(parents=True)
    for name in ("a", "b", "sub/c"):
        (src / "d" / name).write_bytes(name.encode())
    os.utime(src / "d" / "sub", (1_500_000_000, 1_500_000_000))
    os.utime(src / "d", (1_600_000_000, 1_600_000_000))
    if how == "rsync":
        sh(f"rsync -a {src}/ {m.mp}/")
    elif how == "tar":
        sh(f"tar -C {src} -cf {tmp_path}/t.tar d && tar -C {m.mp} -xf {tmp_path}/t.tar")
    else:
        os.mkdir(m.path("d"))
        open(m.path("d", "a"), "wb").close()
        if how == "utime":
            os.utime(m.path("d"), (1_600_000_000, 1_600_000_000))
        else:
            t0 = time.time()
            os.chmod(m.path("d"), 0o700)
    want = {"d": 1_600_000_000, "d/sub": 1_500_000_000} if how in ("rsync", "tar") else {}
    if how == "utime":
        want = {"d": 1_600_000_000}
    time.sleep(3)  # past the marker's rewrite (2 s)
    for when in ("mounted", "remounted"):
        for d, mtime in want.items():
            assert times(m.path(d))[0] == mtime, (when, d)
        if how == "chmod":
            s = os.stat(m.path("d"))
            assert stat.S_IMODE(s.st_mode) == 0o700 and s.st_mtime >= t0 - 1.5, (when, s)
        m.remount()


def test_a_directory_utime_on_one_node_is_not_undone_by_the_other_nodes_earlier_change(mount):
    """Node A creates a name in d, node B sets d's mtime at once (as `rsync -a` from another
    node would): A's marker rewrite, due 2 s later, is for an older change and must not
    write over B's mtime."""
    a = mount(FRESH)
    b = mount(FRESH, bucket=a.bucket)
    os.mkdir(a.path("d"))
    time.sleep(0.3)  # past b's negative entry
    open(a.path("d", "f"), "wb").close()
    os.utime(b.path("d"), (1_600_000_000, 1_600_000_000))
    time.sleep(3)  # past a's rewrite
    assert a.meta("d/")["mtime"] == "1600000000"
    for node in (a, b):
        assert times(node.path("d"))[0] == 1_600_000_000, node.mp


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


# ------------------------------------------------------------ which times each operation sets

def _stamps(root: str) -> dict[str, tuple]:
    """(mtime_ns, ctime_ns, type) of root and everything under it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            s = os.lstat(full)
            out[os.path.relpath(full, root)] = (s.st_mtime_ns, s.st_ctime_ns, stat.S_IFMT(s.st_mode))
    s = os.lstat(root)
    out["."] = (s.st_mtime_ns, s.st_ctime_ns, stat.S_IFMT(s.st_mode))
    return out


def _times_set(before: dict, after: dict, since_ns: int) -> set[tuple[str, str]]:
    """Which (path, "mtime"/"ctime") an operation set: changed, and to a time not before
    its start (whole seconds: times read back from S3 headers have whole-second ctimes).
    A path new or of another type counts as set where its time is recent."""
    since = since_ns // 10**9 * 10**9
    out = set()
    for path, now in after.items():
        old = before.get(path)
        for i, field in ((0, "mtime"), (1, "ctime")):
            renewed = now[i] >= since and (old is None or old[2] != now[2] or now[i] != old[i])
            if renewed:
                out.add((path, field))
    return out


def _times_op(root: str, op: str, rel: str, other: str):
    """An operation of the draw below that test_namespace_ops has not: its value or errno."""
    p = os.path.join(root, rel)
    try:
        if op == "rename_existing":
            os.rename(p, os.path.join(root, other))
        elif op == "utime_now":
            os.utime(p)
        elif op == "utime_past":
            os.utime(p, (1_500_000_000, 1_500_000_000))
        elif op == "chown_unchanged":
            os.chown(p, -1, -1)
        elif op == "chown_root":
            os.chown(p, 0, 0)
        elif op == "chmod_unchanged":
            os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode))
        elif op == "ftruncate_same_size":
            fd = os.open(p, os.O_WRONLY)
            try:
                os.ftruncate(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        elif op in ("write_nothing", "append_byte"):
            fd = os.open(p, os.O_WRONLY | (os.O_APPEND if op == "append_byte" else 0))
            try:
                os.write(fd, b"x" if op == "append_byte" else b"")
            finally:
                os.close(fd)
        elif op == "open_trunc_rdonly":
            os.close(os.open(p, os.O_RDONLY | os.O_TRUNC))
        elif op == "open_trunc":
            os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
        elif op == "open_close":
            os.close(os.open(p, os.O_WRONLY))
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


TIMES_OPS = ["rename_existing", "utime_now", "utime_past", "chown_unchanged", "chown_root", "chmod_unchanged", "ftruncate_same_size",
             "write_nothing", "append_byte", "open_trunc_rdonly", "open_trunc", "open_close"]


def test_each_operation_sets_the_times_a_local_filesystem_sets(mount, tmp_path):
    """Random operations (test_namespace_ops's, and ones aimed at times: utime, chown and
    chmod to the same values, ftruncate to the same size, empty writes, O_TRUNC opens)
    on the mount and on a local directory: after each, the set of (path, mtime/ctime)
    it set must be the same on both. Times not compared: atime (relatime), and the
    ctime of the entries below a renamed directory (each is an object copied to its new
    key, which is a change of it on S3; SEMANTICS.md)."""
    from tests.mount.test_namespace_ops import Draw, apply, shown
    m = mount()
    ours, local = m.path("t"), str(tmp_path / "local")
    os.mkdir(ours)
    os.mkdir(local)
    draw, rnd, log, kinds, k = Draw(7), random.Random(107), [], set(), 0
    for i in range(80):
        there = _stamps(local)
        files = sorted(p for p, v in there.items() if v[2] == stat.S_IFREG)
        if rnd.random() < 0.45 and files:  # aimed at times, on a file there (mostly)
            op = TIMES_OPS[k % len(TIMES_OPS)]
            k += 1
            target = rnd.choice(files if rnd.random() < 0.8 else sorted(there))
            args = (target, rnd.choice(["a", "b", "c", "c/b"]))
            run = lambda root: _times_op(root, op, *args)  # noqa: E731
        else:
            op, args = draw()
            while op == "write_rename_write":  # through a symlink it can replace its own writer's
                op, args = draw()  # file: ESTALE by design on the mount (SEMANTICS.md)
            run = lambda root: apply(root, op, args)  # noqa: E731
        time.sleep(1.05)  # each operation in a second of its own
        t0 = time.time_ns()
        before = {"ours": _stamps(ours), "local": there}
        got, want = run(ours), run(local)
        log.append(f"{i} {shown(op, args)}: {want}")
        assert got == want, (f"operation {i} {shown(op, args)}: the mount answered {got!r}, locally {want!r}"
                             "\nlast operations:\n" + "\n".join(log[-8:]))
        ours_set = _times_set(before["ours"], _stamps(ours), t0)
        local_set = _times_set(before["local"], _stamps(local), t0)
        if op in ("rename", "read_after_rename", "rename_existing") and os.path.isdir(os.path.join(local, args[1])):
            moved = args[1] + "/"
            ours_set = {(p, f) for p, f in ours_set if not (p.startswith(moved) and f == "ctime")}
        assert ours_set == local_set, (f"operation {i} {shown(op, args)}: times set only on the mount "
                                       f"{sorted(ours_set - local_set)}, only locally {sorted(local_set - ours_set)}"
                                       "\nlast operations:\n" + "\n".join(log[-8:]))
        if (want == "ok" or not isinstance(want, str)) and local_set:
            kinds.add(op)
    # the draw reached the operations whose times a local filesystem sets
    assert {"open_trunc", "open_trunc_rdonly", "utime_now", "chown_unchanged", "append_byte", "rename_existing",
            "unlink"} <= kinds, sorted(kinds)
