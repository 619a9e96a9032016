"""SECURITY.md, checked on a whole run: the keys never show anywhere a user or a log
reader could see them, and the local places that hold data or answer questions are
root's alone.

One mount at debug level with a distinctive key pair given by a root-only
credentials_file, doing what a node does (writes streamed and staged, reads, renames,
deletes, chmod, a listing, a failing upload, `s3pvefs status`, a metrics scrape,
SIGHUP for logrotate, `ls` and `check` with the same keys, umount); then every log
file, every command's stdout and stderr, the daemon's /proc cmdline and environment,
the status JSON and the metrics text are searched for the secret key and the access
key id.

Checked elsewhere (not repeated here): staging files are 0600 and unlinked at once
(tests/unit/test_presets_credentials.py::test_staging_directory_and_files_are_private),
a looser credentials_file is refused (tests/unit/test_presets_credentials.py,
tests/mount/test_service.py), a wrong secret is refused without showing it
(tests/mount/test_credentials.py), the redaction of log records
(tests/unit/test_log_redaction.py).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from s3pvefs.cli import _pidfile, _status_socket
from tests.mount.conftest import ACCESS_KEY, SECRET_KEY, free_port, s3pvefs_cmd

pytestmark = pytest.mark.mount


def key_free_env(tmp_path) -> dict[str, str]:
    """No key anywhere but the credentials file: not in the environment, no ~/.aws."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    e.update(AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
             AWS_EC2_METADATA_DISABLED="true")
    return e


def mode_and_owner(path) -> tuple[str, int]:
    st = os.lstat(path)
    return f"{stat.S_IMODE(st.st_mode):04o}", st.st_uid


def test_a_whole_run_never_shows_the_keys(s3_server, s3, tmp_path):
    secret = f"Sec{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"  # 43 characters, like a real one
    access = f"AKIA{uuid.uuid4().hex[:16].upper()}"
    assert secret != SECRET_KEY and access != ACCESS_KEY
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n")
    os.chmod(creds, 0o600)
    bucket = f"sec-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    mp = tmp_path / "mnt"
    mp.mkdir()
    cache = tmp_path / "cache-new"  # not there yet: the daemon makes it
    log = tmp_path / "s3pvefs.log"
    port = free_port()
    e = key_free_env(tmp_path)
    outputs: dict[str, str] = {}

    def cli(name: str, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        r = subprocess.run(s3pvefs_cmd() + list(args), env=e, capture_output=True, text=True, timeout=180, **kw)
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = r.stdout, r.stderr
        if check:
            assert r.returncode == 0, f"{name}: {r.returncode} {r.stderr}"
        return r

    store_opts = f"credentials_file={creds}"
    out = tmp_path / "mount.out"
    with open(out, "wb") as f:  # a file, not a pipe: with --debug the daemon keeps stderr
        r = subprocess.run(s3pvefs_cmd() + [
            "mount", f"{bucket}/pve", str(mp), "--endpoint-url", s3_server, "--log-file", str(log), "--debug",
            "-o", f"{store_opts},cache_dir={cache},metrics_port={port},allow_other,stale_upload_idle=1"],
            env=e, stdout=f, stderr=f, timeout=120)
    assert r.returncode == 0, out.read_text()
    try:
        pid = int(Path(_pidfile(str(mp))).read_text())
        proc = {"daemon cmdline": Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"),
                "daemon environment": Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")}
        assert "mount" in proc["daemon cmdline"] and str(mp) in proc["daemon cmdline"]

        # ---- the local places are root's: SECURITY.md "Who can read what"
        assert mode_and_owner(cache) == ("0700", 0)
        assert mode_and_owner(cache / "staging") == ("0700", 0)
        sock = _status_socket(str(mp))
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):  # served by a task started once the mount is live
            assert time.monotonic() < deadline, "no status socket"
            time.sleep(0.05)
        assert stat.S_ISSOCK(os.lstat(sock).st_mode) and mode_and_owner(sock) == ("0600", 0)
        assert mode_and_owner(os.path.dirname(sock)) == ("0700", 0)
        options = next(line.split()[3].split(",") for line in Path("/proc/mounts").read_text().splitlines()
                       if line.split()[1] == str(mp))
        assert "allow_other" in options and "default_permissions" in options, options

        # ---- what a node does
        (mp / "dump").mkdir()
        data = os.urandom(3 << 20)
        (mp / "dump" / "vzdump-qemu-100.vma.dat").write_bytes(data)  # streamed
        os.rename(mp / "dump" / "vzdump-qemu-100.vma.dat", mp / "dump" / "vzdump-qemu-100.vma.zst")
        assert (mp / "dump" / "vzdump-qemu-100.vma.zst").read_bytes() == data
        os.chmod(mp / "dump" / "vzdump-qemu-100.vma.zst", 0o600)
        with open(mp / "dump" / "vzdump-qemu-100.vma.zst", "r+b") as f:  # a write in the middle: staged
            f.seek(1 << 20)
            f.write(b"patched")
            f.flush()
            staged = [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")
                      if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(cache / "staging") + "/")]
            assert staged, "no staging file open in the daemon"
            for link in staged:  # 0600 root, in directories that are 0700 root down from staging/
                st = os.stat(link)
                assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0), link
                parent = Path(os.readlink(link).removesuffix(" (deleted)")).parent
                while parent != cache:
                    assert mode_and_owner(parent) == ("0700", 0), parent
                    parent = parent.parent
            status_json = cli("status --json", "status", str(mp), "--json").stdout
            assert json.loads(status_json)["schema"] == "s3pvefs-status/1"
        cli("status --once", "status", str(mp), "--once")
        assert sorted(os.listdir(mp / "dump")) == ["vzdump-qemu-100.vma.zst"]
        (mp / "dump" / "vzdump-qemu-100.vma.zst").unlink()
        (mp / "snippets").mkdir()
        (mp / "snippets" / "hook.pl").write_text("#!/usr/bin/perl\n")
        with pytest.raises(FileNotFoundError):
            (mp / "no-such-file").read_bytes()

        # a failing request: the bucket vanishes under the mount, the upload fails (EIO)
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
        s3.delete_bucket(Bucket=bucket)
        with pytest.raises(OSError):
            with open(mp / "doomed.bin", "wb") as f:
                f.write(b"x" * 100_000)
        s3.create_bucket(Bucket=bucket)

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 's3pvefs_s3_failures_total{code="NoSuchBucket"}' in metrics, metrics
        outputs["metrics"] = metrics

        os.rename(log, str(log) + ".1")  # logrotate, then SIGHUP
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not (log.exists() and "log file reopened" in log.read_text()):
            assert time.monotonic() < deadline, "no new log file after SIGHUP"
            time.sleep(0.1)
        (mp / "after-rotate.txt").write_text("x")

        # the other commands with the same keys, at debug level
        cli("ls", "ls", f"{bucket}/pve", "--endpoint-url", s3_server, "--debug", "-o", store_opts)
        cli("check", "check", f"{bucket}/pve", "--endpoint-url", s3_server, "--debug",
            "-o", f"{store_opts},checksums=when_required")
    finally:
        u = cli("umount", "umount", str(mp), check=False)
    assert u.returncode == 0, u.stderr
    assert not os.path.ismount(mp)
    assert not os.path.exists(sock)

    texts = {"log": log.read_text(errors="replace"), "rotated log": Path(str(log) + ".1").read_text(errors="replace"),
             "mount output": out.read_text(errors="replace"), "status json": status_json, **proc, **outputs}
    assert "DEBUG" in texts["rotated log"] and "NoSuchBucket" in texts["rotated log"]  # a full debug log
    assert "log file reopened" in texts["log"] and "unmounted" in texts["log"]
    for what, text in texts.items():
        assert secret not in text, f"the secret key appears in the {what}"
        assert access not in text, f"the access key id appears in the {what}"
    assert secret not in proc["daemon environment"]  # credentials_file: nothing in the environment
    assert "credentials_file=" in proc["daemon cmdline"]  # the keys come by reference
    # and the run did use the file's keys (moto accepts any): the objects are there
    assert s3.get_object(Bucket=bucket, Key="pve/after-rotate.txt")["Body"].read() == b"x"


def test_allow_other_always_comes_with_default_permissions(mount):
    """With allow_other, other users reach the mount: the kernel must check the stored
    modes (default_permissions), or every file would be open to everyone."""
    m = mount(["allow_other"])
    options = next(line.split()[3].split(",") for line in Path("/proc/mounts").read_text().splitlines()
                   if line.split()[1] == m.mp)
    assert "allow_other" in options and "default_permissions" in options, options
    with open(m.path("private"), "w") as f:
        f.write("root only")
    os.chmod(m.path("private"), 0o600)
    with open(m.path("public"), "w") as f:
        f.write("anyone")
    # another user (nobody) reaches the mount through an inherited fd of its root: the
    # test's temporary directories above it are root's alone
    root = os.open(m.mp, os.O_RDONLY | os.O_DIRECTORY)
    try:
        def as_nobody(code: str) -> subprocess.CompletedProcess:
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                   "-c", f"import os; d = '/proc/self/fd/{root}'; {code}"], pass_fds=(root,),
                                  capture_output=True, text=True, timeout=60)
        r = as_nobody("print(sorted(os.listdir(d)))")
        assert r.returncode == 0 and "'private'" in r.stdout, r.stderr  # allow_other lets others in
        assert as_nobody("print(open(d + '/public').read())").stdout.strip() == "anyone"
        r = as_nobody("open(d + '/private').read()")
        assert r.returncode != 0 and "PermissionError" in r.stderr, r.stdout + r.stderr  # the mode decides
    finally:
        os.close(root)
