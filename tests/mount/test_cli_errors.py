"""`s3pvefs mount` mistakes: a distinct exit code, one line on stderr, no traceback,
nothing left mounted; and the secret key never shows in logs or on stderr."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.mount.conftest import SECRET_KEY, env, free_port, run_cli, s3pvefs_cmd

pytestmark = pytest.mark.mount


def one_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr, r.stderr
    assert len(err.splitlines()) == 1, r.stderr
    assert err.startswith("s3pvefs: "), r.stderr
    return err


def mount_cli(endpoint: str, spec: str, mp, tmp_path, *options: str, timeout: float = 120):
    opts = ",".join([f"cache_dir={tmp_path / 'cache'}", *options])
    return run_cli("mount", spec, str(mp), "--endpoint-url", endpoint, "--log-file", str(tmp_path / "log"),
                   "-o", opts, timeout=timeout)


@pytest.fixture
def mp(tmp_path):
    p = tmp_path / "mnt"
    p.mkdir()
    yield p
    if os.path.ismount(p):
        subprocess.run(["fusermount3", "-uz", str(p)], capture_output=True)


def test_missing_bucket_is_exit_4(s3_server, mp, tmp_path):
    r = mount_cli(s3_server, "no-such-bucket-s3pvefs/pve", mp, tmp_path)
    assert r.returncode == 4, r.stderr
    err = one_line(r)
    assert "no-such-bucket-s3pvefs" in err and "does not exist" in err
    assert not os.path.ismount(mp)


def test_unreachable_endpoint_is_exit_5(mp, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    r = mount_cli(endpoint, "bucket/pve", mp, tmp_path, "max_attempts=1", "connect_timeout=2", timeout=60)
    assert time.monotonic() - t0 < 20
    assert r.returncode == 5, r.stderr
    err = one_line(r)
    assert "cannot reach" in err and endpoint in err
    assert not os.path.ismount(mp)


def test_busy_mountpoint_is_exit_6(mount, tmp_path):
    m = mount()
    r = run_cli(*m.mount_args())
    assert r.returncode == 6, r.stderr
    err = one_line(r)
    assert "busy" in err
    assert os.path.ismount(m.mp)  # the first mount is untouched
    with open(m.path("still-works"), "wb") as f:
        f.write(b"ok")
    assert m.get("still-works") == b"ok"


def test_missing_mountpoint_is_exit_6(s3_server, s3, tmp_path):
    s3.create_bucket(Bucket="cli-missing-mp")
    r = mount_cli(s3_server, "cli-missing-mp/pve", tmp_path / "nowhere", tmp_path)
    assert r.returncode == 6, r.stderr
    assert "does not exist" in one_line(r)


@pytest.mark.parametrize("option, words", [
    ("no_such_option=1", ["no_such_option", "unknown"]),
    ("bogus", ["bogus", "unknown"]),
    ("file_mode=rwx", ["file_mode", "octal"]),
    ("max_attempts=many", ["max_attempts"]),
])
def test_bad_option_is_exit_2(s3_server, mp, tmp_path, option, words):
    r = mount_cli(s3_server, "bucket/pve", mp, tmp_path, option)
    assert r.returncode == 2, r.stderr
    err = one_line(r)
    for w in words:
        assert w in err
    assert not os.path.ismount(mp)


def test_bad_bucket_name_is_exit_2(s3_server, mp, tmp_path):
    r = mount_cli(s3_server, "bad bucket!/pve", mp, tmp_path)
    assert r.returncode == 2, r.stderr
    one_line(r)


def test_umount_of_something_not_mounted(tmp_path):
    r = run_cli("umount", str(tmp_path))
    assert r.returncode != 0
    assert "not mounted" in one_line(r)


def test_secret_never_in_log_or_stderr(s3_server, s3, tmp_path):
    """A full mount / write / read / umount with --debug: the secret appears nowhere."""
    bucket = "cli-secret"
    s3.create_bucket(Bucket=bucket)
    mp = tmp_path / "mnt"
    mp.mkdir()
    log = tmp_path / "debug.log"
    out = tmp_path / "cli.out"
    with open(out, "wb") as f:  # a file, not a pipe: with --debug the daemon keeps stderr open
        r = subprocess.run(s3pvefs_cmd() + ["mount", f"{bucket}/pve", str(mp), "--endpoint-url", s3_server,
                                            "--log-file", str(log), "--debug",
                                            "-o", f"cache_dir={tmp_path / 'cache'}"],
                           env=env(), stdout=f, stderr=f, timeout=120)
    try:
        assert r.returncode == 0, out.read_text()
        (mp / "d").mkdir()
        (mp / "d" / "f.bin").write_bytes(os.urandom(200_000))
        assert len((mp / "d" / "f.bin").read_bytes()) == 200_000
        os.rename(mp / "d" / "f.bin", mp / "d" / "g.bin")
        os.listdir(mp / "d")
        with pytest.raises(FileNotFoundError):
            (mp / "missing").read_bytes()
    finally:
        u = run_cli("umount", str(mp))
    assert u.returncode == 0, u.stderr
    assert not os.path.ismount(mp)
    texts = {"log": log.read_text(errors="replace"), "cli output": out.read_text(errors="replace"),
             "umount stderr": u.stderr + u.stdout}
    assert texts["log"], "the log file is empty"
    for what, text in texts.items():
        assert SECRET_KEY not in text, f"the secret key appears in the {what}"


@pytest.mark.parametrize("case", ["no-profile", "no-credentials", "partial-credentials", "bad-endpoint-url"])
def test_client_setup_mistakes_are_one_line(s3_server, mp, tmp_path, case):
    """Errors botocore raises while making the client (the credential chain, the
    profile, the endpoint URL) are a one-line message and the right exit code."""
    e = env()
    args = ["mount", "bucket/pve", str(mp), "--log-file", str(tmp_path / "log"),
            "-o", f"cache_dir={tmp_path / 'cache'}", "--endpoint-url", s3_server]
    if case == "no-profile":
        args += ["--profile", "no-such-profile-s3pvefs"]
        e["AWS_CONFIG_FILE"] = e["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    elif case == "no-credentials":
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            e.pop(k)
        e["AWS_CONFIG_FILE"] = e["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    elif case == "partial-credentials":
        e.pop("AWS_SECRET_ACCESS_KEY")
    else:
        args[args.index(s3_server)] = "http://[::1"
    r = subprocess.run(s3pvefs_cmd() + args, env=e, capture_output=True, text=True, timeout=120)
    err = one_line(r)
    expected = {"no-profile": (2, "no-such-profile-s3pvefs"), "no-credentials": (3, "no credentials"),
                "partial-credentials": (3, "credentials"), "bad-endpoint-url": (2, "endpoint_url")}[case]
    assert (r.returncode, expected[1] in err) == (expected[0], True), err
    assert SECRET_KEY not in r.stderr
    assert not os.path.ismount(mp)
