"""Running as a system service: the systemd unit verifies, the daemon speaks systemd's
notify protocol (READY=1 only once the mount is live; STOPPING=1 on SIGTERM, then the
files still open are committed before it exits), and the fstab helper mounts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mount.conftest import env, s3pvefs_cmd

pytestmark = pytest.mark.mount

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "s3pvefs@.service"


def test_unit_file_verifies(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing (apt-get install systemd)")
    # ExecStart must name an existing executable for verify: the one under test.
    unit = tmp_path / "s3pvefs@test.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/s3pvefs", s3pvefs_cmd()[0]))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    text = UNIT.read_text()
    for line in ("Type=notify", "After=network-online.target", "Before=pve-guests.service pvestatd.service",
                 "--foreground", "TimeoutStopSec=15min"):
        assert line in text, line


class NotifySocket:
    """What systemd listens on for a Type=notify service."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def wait_for(self, field: str, timeout: float = 60) -> float:
        """Time at which a datagram with field arrived."""
        deadline = time.monotonic() + timeout
        while True:
            for t, msg in self.messages:
                if field in msg.split("\n"):
                    return t
            left = deadline - time.monotonic()
            assert left > 0, f"no {field} in {self.messages}"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode()))


def test_notify_ready_when_live_then_stopping_and_drain_on_sigterm(s3, s3_server, tmp_path):
    bucket = "notify-test"
    s3.create_bucket(Bucket=bucket)
    mp = tmp_path / "mnt"
    mp.mkdir()
    ns = NotifySocket(tmp_path / "notify.sock")
    e = env()
    e["NOTIFY_SOCKET"] = ns.path
    proc = subprocess.Popen(s3pvefs_cmd() + ["mount", "--foreground", f"{bucket}/pve", str(mp),
                                             "--endpoint-url", s3_server, "--log-file", str(tmp_path / "log"),
                                             "-o", f"cache_dir={tmp_path / 'cache'}"], env=e)
    writer = None
    try:
        ns.wait_for("READY=1")
        assert os.path.ismount(mp), "READY=1 before the mount was live"
        assert any("STATUS=mounted" in m for _, m in ns.messages)
        # A file still open (being written) when systemd stops the service.
        writer = subprocess.Popen([sys.executable, "-c", (
            "import os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)\n"
            "os.write(fd, b'written before the stop')\n"
            "print('written', flush=True)\n"
            "time.sleep(60)\n"), str(mp / "open.log")], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "written"
        proc.send_signal(signal.SIGTERM)
        ns.wait_for("STOPPING=1")
        assert any("committing 1 files" in m for _, m in ns.messages), ns.messages
        writer.kill()
        assert proc.wait(120) == 0
        assert not os.path.ismount(mp)
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True)
    # The drain committed what was written (a warning names it in the log).
    body = s3.get_object(Bucket=bucket, Key="pve/open.log")["Body"].read()
    assert body == b"written before the stop"
    assert "still open at shutdown" in (tmp_path / "log").read_text()


def test_fstab_helper_mounts_with_mount_words(s3, s3_server, tmp_path):
    """mount(8) runs /sbin/mount.fuse.s3pvefs SPEC DIR -o OPTIONS for fuse.s3pvefs lines."""
    bucket = "fstab-test"
    s3.create_bucket(Bucket=bucket)
    mp = tmp_path / "mnt"
    mp.mkdir()
    helper = REPO / "scripts" / "mount.fuse.s3pvefs"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # The helper calls /usr/bin/s3pvefs; point it at the one under test.
    script = helper.read_text().replace("/usr/bin/s3pvefs", s3pvefs_cmd()[0])
    (bindir / "mount.fuse.s3pvefs").write_text(script)
    (bindir / "mount.fuse.s3pvefs").chmod(0o755)
    opts = f"_netdev,defaults,rw,nofail,endpoint_url={s3_server},cache_dir={tmp_path / 'cache'},capacity=2T"
    r = subprocess.run([str(bindir / "mount.fuse.s3pvefs"), f"{bucket}/pve", str(mp), "-o", opts], env=env(),
                       capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mp)
        (mp / "hello").write_text("from fstab")
        assert s3.get_object(Bucket=bucket, Key="pve/hello")["Body"].read() == b"from fstab"
        assert os.statvfs(mp).f_blocks * os.statvfs(mp).f_frsize == 2 << 40
    finally:
        subprocess.run(s3pvefs_cmd() + ["umount", str(mp)], env=env(), capture_output=True, timeout=120)
    assert not os.path.ismount(mp)
    r = subprocess.run([str(bindir / "mount.fuse.s3pvefs"), "only-one-arg"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_mount_by_name_with_a_root_only_credentials_file(s3, s3_server, tmp_path):
    """`s3pvefs mount NAME` reads /etc/s3pvefs/NAME.toml (here $S3PVEFS_CONFIG_DIR):
    bucket, prefix, mountpoint, settings, and the keys from a credentials file, which
    is refused while group or others can read it."""
    from tests.mount.conftest import ACCESS_KEY, SECRET_KEY
    bucket = "by-name"
    s3.create_bucket(Bucket=bucket)
    mp = tmp_path / "mnt"
    mp.mkdir()
    creds = tmp_path / "creds"
    creds.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    os.chmod(creds, 0o640)
    (tmp_path / "backups.toml").write_text(
        f'[store]\nprovider = "minio"\nbucket = "{bucket}"\nprefix = "pve"\nendpoint_url = "{s3_server}"\n'
        f'credentials_file = "{creds}"\n[cache]\ncache_dir = "{tmp_path / "cache"}"\n'
        f'[mount]\nmountpoint = "{mp}"\ncapacity = "3T"\n')
    e = env()
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        e.pop(k)  # only the file has the keys
    e["S3PVEFS_CONFIG_DIR"] = str(tmp_path)
    r = subprocess.run(s3pvefs_cmd() + ["mount", "backups"], env=e, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not readable by group or others" in r.stderr and "Traceback" not in r.stderr
    assert SECRET_KEY not in r.stderr
    os.chmod(creds, 0o600)
    r = subprocess.run(s3pvefs_cmd() + ["mount", "backups"], env=e, capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mp)
        (mp / "x").write_text("by name")
        assert s3.get_object(Bucket=bucket, Key="pve/x")["Body"].read() == b"by name"
        st = os.statvfs(mp)
        assert st.f_blocks * st.f_frsize == 3 << 40
    finally:
        subprocess.run(s3pvefs_cmd() + ["umount", str(mp)], env=e, capture_output=True, timeout=120)
    assert not os.path.ismount(mp)


def test_check_by_name(s3, s3_server, tmp_path):
    """`s3pvefs check NAME` tests what /etc/s3pvefs/NAME.toml describes."""
    s3.create_bucket(Bucket="check-by-name")
    (tmp_path / "pve1.toml").write_text(f'[store]\nbucket = "check-by-name"\nprefix = "pve"\n'
                                        f'endpoint_url = "{s3_server}"\n[mount]\nmountpoint = "/mnt/x"\n')
    e = {**env(), "S3PVEFS_CONFIG_DIR": str(tmp_path)}
    r = subprocess.run(s3pvefs_cmd() + ["check", "pve1"], env=e, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check-by-name/pve" in r.stdout and "FAIL" not in r.stdout
