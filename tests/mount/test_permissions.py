"""Who may do what on the mount (SECURITY.md): the kernel checks access against
attributes the mount read from the objects' headers, never a listing's defaults;
foreign headers cannot break a directory, nor make a setuid program; the daemon runs
the installed code; its log file and settings cannot be turned against it.

Another user (nobody) reaches the mount through an inherited descriptor of its root:
the test's temporary directories above it are root's alone.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3pvefs.cli import _pidfile
from tests.mount.conftest import env, run_cli, s3pvefs_cmd
from tests.mount.faultproxy import FaultProxy

pytestmark = pytest.mark.mount

NOBODY = 65534
SECRET = "the private key, root's alone\n"
TTLS = ["stat_ttl=2", "negative_ttl=2", "listing_ttl=2"]


class Nobody:
    """Runs Python code or a program as uid/gid 65534 in the mount (path 'd' = its root)."""

    def __init__(self, mp: str):
        self.fd = os.open(mp, os.O_RDONLY | os.O_DIRECTORY)
        self.root = f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        os.close(self.fd)

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        argv = tuple(a.replace("@", self.root + "/") for a in argv)
        return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                              pass_fds=(self.fd,), capture_output=True, text=True, timeout=60)

    def python(self, code: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-c", f"import os, sys; d = '{self.root}'; {code}")


def build_tree(m, others: int) -> None:
    """dump/ with `others` ordinary files, a 0600 file and a 0700 directory, written
    through the mount (so their headers hold the modes)."""
    os.mkdir(m.path("dump"))
    for i in range(others):
        Path(m.path("dump", f"vzdump-qemu-{100 + i}-2026_11_24-01_00_00.vma.zst")).write_bytes(b"x" * 10)
    fd = os.open(m.path("dump", "private.key"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, SECRET.encode())
    os.close(fd)
    os.mkdir(m.path("dump", "privdir"), 0o700)
    Path(m.path("dump", "privdir", "f")).write_text("inside a 0700 directory\n")
    assert stat.S_IMODE(os.stat(m.path("dump", "private.key")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(m.path("dump", "privdir")).st_mode) == 0o700


def check_denied(m, nobody: Nobody, when: str) -> None:
    """As Proxmox does first: `ls -la dump` as root; then nobody tries the private names."""
    r = subprocess.run(["ls", "-la", m.path("dump")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[-1]: line for line in r.stdout.splitlines() if line.split()}
    assert lines["private.key"].startswith("-rw------- "), (when, lines["private.key"])
    assert lines["privdir"].startswith("drwx------ "), (when, lines["privdir"])
    assert lines["vzdump-qemu-100-2026_11_24-01_00_00.vma.zst"].startswith("-rw-r--r-- "), when

    r = nobody.run("cat", "@dump/private.key")
    assert r.returncode != 0 and "Permission denied" in r.stderr and SECRET not in r.stdout, (when, r)
    r = nobody.run("ls", "@dump/privdir")
    assert r.returncode != 0 and "Permission denied" in r.stderr, (when, r)
    r = nobody.run("cat", "@dump/privdir/f")
    assert r.returncode != 0 and "Permission denied" in r.stderr and "inside" not in r.stdout, (when, r)
    r = nobody.run("ls", "-la", "@dump")  # nobody's own listing: the modes as stored
    assert r.returncode == 0, (when, r.stderr)
    theirs = {line.split()[-1]: line for line in r.stdout.splitlines() if line.split()}
    assert theirs["private.key"].startswith("-rw------- "), (when, theirs["private.key"])
    r = nobody.run("cat", "@dump/private.key")  # and again right after that listing
    assert r.returncode != 0 and SECRET not in r.stdout, (when, r)
    r = nobody.run("cat", "@dump/vzdump-qemu-100-2026_11_24-01_00_00.vma.zst")  # what is 0644 stays readable
    assert r.returncode == 0 and r.stdout == "x" * 10, (when, r)


@pytest.mark.parametrize("others", [70, 5], ids=["above-listing_heads_below", "below"])
def test_listings_never_grant_what_the_stored_modes_deny(mount, s3_server, others):
    proxy = FaultProxy(s3_server)
    try:
        m = mount(["allow_other", "stale_answer_after=0.3", *TTLS])
        build_tree(m, others)
        m.remount_through(proxy.url)  # through a proxy that can play an outage
        nobody = Nobody(m.mp)
        try:
            check_denied(m, nobody, "after a remount")
            time.sleep(3.5)  # the mount's TTLs (2 s) and the kernel's (1 s) expire
            check_denied(m, nobody, "after the caches expired")
            proxy.stall = True  # S3 stops answering: stale answers must deny as well
            time.sleep(3.5)
            for path in ("@dump/private.key", "@dump/privdir/f"):
                r = nobody.run("cat", path)
                assert r.returncode != 0 and SECRET not in r.stdout and "inside" not in r.stdout, r
            r = nobody.python("print(oct(os.stat(d + '/dump/private.key').st_mode))")
            assert r.returncode != 0 or r.stdout.strip() == oct(stat.S_IFREG | 0o600), r
            proxy.stall = False
        finally:
            nobody.close()
    finally:
        proxy.stall = False
        proxy.close()


BAD_HEADERS = {
    "uid-negative": {"uid": "-1"},
    "uid-too-big": {"uid": "4294967296"},
    "gid-negative": {"gid": "-5", "uid": "4294967295"},
    "mode-negative": {"mode": "-5"},
    "mode-too-big": {"mode": "99999999"},
    "mtime-negative": {"mtime": "-100"},
    "mtime-far-future": {"mtime": "99999999999999", "ctime": "nan", "atime": "1e300"},
    "everything": {"uid": "x", "gid": "", "mode": "0x1ff", "mtime": "99999999999999.5", "ctime": "-1.5"},
}


def test_foreign_headers_never_take_a_directory_down(mount):
    m = mount()
    os.mkdir(m.path("dump"))
    Path(m.path("dump", "good.vma.zst")).write_bytes(b"good")
    t0 = time.time()
    for name, meta in BAD_HEADERS.items():
        m.put(f"dump/{name}", b"foreign", Metadata=meta)
    m.remount()
    r = subprocess.run(["ls", "-la", m.path("dump")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert all(name in r.stdout for name in BAD_HEADERS) and "good.vma.zst" in r.stdout, r.stdout
    for name, meta in BAD_HEADERS.items():
        s = os.lstat(m.path("dump", name))
        assert (s.st_uid, s.st_gid) == (0, 0), (name, s)  # the mount's defaults
        assert stat.S_IMODE(s.st_mode) == 0o644 and stat.S_ISREG(s.st_mode), (name, oct(s.st_mode))
        # times: LastModified (now-ish), never 1969 or the year 3170843
        assert t0 - 120 < s.st_mtime < time.time() + 120, (name, s.st_mtime)
        assert t0 - 120 < s.st_ctime < time.time() + 120, (name, s.st_ctime)
        assert Path(m.path("dump", name)).read_bytes() == b"foreign"
    log = m.log_text()
    assert "Traceback" not in log and "OverflowError" not in log, log[-3000:]


def test_no_setuid_programs_or_devices_from_the_bucket(mount):
    """Anyone with keys can write an object whose headers say 'setuid root': the mount
    is nosuid (and nodev), so running it as another user gains nothing."""
    m = mount(["allow_other"])
    options = next(line.split()[3].split(",") for line in Path("/proc/mounts").read_text().splitlines()
                   if line.split()[1] == m.mp)
    assert {"nosuid", "nodev", "default_permissions"} <= set(options), options
    m.put("id-suid", Path(shutil.which("id")).read_bytes(),
          Metadata={"mode": str(stat.S_IFREG | stat.S_ISUID | 0o755), "uid": "0", "gid": "0"})
    m.remount()
    assert os.stat(m.path("id-suid")).st_mode & stat.S_ISUID  # the header is shown as stored
    nobody = Nobody(m.mp)
    try:
        r = nobody.run("@id-suid", "-u")
        assert r.returncode == 0 and r.stdout.strip() == str(NOBODY), r  # not 0: the bit does nothing
    finally:
        nobody.close()


@pytest.mark.parametrize("option,named", [
    ("uid=-1", "uid"), ("gid=4294967295", "gid"), ("uid=99999999999", "uid"), ("stat_ttl=nan", "stat_ttl"),
    ("listing_ttl=inf", "listing_ttl"), ("sync_interval=-1", "sync_interval"), ("max_attempts=0", "max_attempts"),
    ("metrics_port=70000", "metrics_port"), ("cache_dir=relative/cache", "cache_dir"),
    ("credentials_file=creds", "credentials_file"), ("multipart_threshold=6G", "multipart_threshold"),
])
def test_settings_that_would_break_a_mount_are_refused(option, named, tmp_path):
    """One line naming the setting, exit 2, nothing mounted."""
    mp = tmp_path / "mp"
    mp.mkdir()
    r = run_cli("mount", "bucket/pve", str(mp), "--endpoint-url", "http://127.0.0.1:9", "-o", option)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not os.path.ismount(mp)


def test_log_file_is_private(mount, tmp_path):
    m = mount()
    assert stat.S_IMODE(os.stat(m.log).st_mode) == 0o600  # created by the mount
    m.umount()
    os.chmod(m.log, 0o644)  # left readable by an older version, or by hand
    m.do_mount()
    assert stat.S_IMODE(os.stat(m.log).st_mode) == 0o640  # others lose it; a group an admin gave keeps it


def _mount_from(m, cwd: Path, extra_env: dict[str, str]) -> int:
    e = {**env(), **extra_env}
    r = subprocess.run(s3pvefs_cmd() + m.mount_args(), cwd=cwd, env=e, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"mount from {cwd} failed ({r.returncode}): {r.stderr}\n{m.log_text()[-3000:]}"
    return int(Path(_pidfile(m.mp)).read_text())


def test_daemon_runs_the_installed_code_whatever_the_directory_and_environment(mount, tmp_path):
    m = mount()
    m.umount()
    marker = tmp_path / "ran"
    plant = f"import os\nopen({str(marker)!r}, 'a').write(f'{{os.getpid()}} {{os.getuid()}}\\n')\n"

    # 1. typed in a directory holding an s3pvefs package of someone else's
    hostile = tmp_path / "hostile"
    (hostile / "s3pvefs").mkdir(parents=True)
    (hostile / "s3pvefs" / "__init__.py").write_text(plant)
    (hostile / "s3pvefs" / "__main__.py").write_text(plant)
    _mount_from(m, hostile, {})
    assert not marker.exists(), f"code from {hostile} ran: {marker.read_text()}"
    Path(m.path("one")).write_text("1")
    m.umount()

    # 2. typed in the directory that holds a checkout named s3pvefs (a namespace package
    #    there would shadow the installed one: "cannot import name '__version__'")
    above = tmp_path / "above"
    (above / "s3pvefs" / "tests").mkdir(parents=True)
    (above / "s3pvefs" / "pyproject.toml").write_text("[project]\nname = 's3pvefs'\n")
    _mount_from(m, above, {})
    assert Path(m.path("one")).read_text() == "1"
    m.umount()

    # 3. PYTHONPATH holding a sitecustomize (which Python imports at start-up): the
    #    command typed is Python like any other, the daemon (root, long-lived) is not
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "sitecustomize.py").write_text(plant)
    daemon = _mount_from(m, tmp_path, {"PYTHONPATH": str(planted), "PYTHONSTARTUP": str(planted / "x.py")})
    pids = {int(line.split()[0]) for line in marker.read_text().splitlines()} if marker.exists() else set()
    assert daemon not in pids, f"the daemon (pid {daemon}) ran {planted}/sitecustomize.py"
    assert Path(m.path("one")).read_text() == "1"
    assert os.readlink(f"/proc/{daemon}/cwd") == "/"  # keeps no directory busy
