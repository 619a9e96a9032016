"""Wrong credentials are refused at mount time with exit code 3 and one line,
and the secret never shows. Uses its own moto server with IAM auth enforced
(INITIAL_NO_AUTH_ACTION_COUNT lets the set-up requests through unauthenticated)."""

import os
import subprocess
import sys

import boto3
import pytest

from tests.mount.conftest import auth_moto

pytestmark = pytest.mark.mount

BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def auth_server():
    with auth_moto({"pve": []}, setup_requests=1) as (endpoint, keys, setup_kw):
        boto3.client("s3", **setup_kw).create_bucket(Bucket="authbucket")
        yield endpoint, *keys["pve"]


def _mount(endpoint, mp, cache, log, key_id, secret):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
    return subprocess.run([os.path.join(BIN, "s3pvefs"), "mount", "authbucket/pve", str(mp),
                           "--endpoint-url", endpoint, "--log-file", str(log), "-o", f"cache_dir={cache}"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_wrong_secret_is_exit_3_with_one_line(auth_server, tmp_path):
    endpoint, key_id, _ = auth_server
    mp = tmp_path / "mnt"
    mp.mkdir()
    wrong = "WrongSecretWrongSecretWrongSecret0123456"
    r = _mount(endpoint, mp, tmp_path / "cache", tmp_path / "log", key_id, wrong)
    assert r.returncode == 3, r.stderr
    assert "denied" in r.stderr and "credentials" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert wrong not in r.stderr + (tmp_path / "log").read_text()
    assert not os.path.ismount(mp)


def test_right_secret_mounts_and_never_logs_it(auth_server, tmp_path):
    endpoint, key_id, secret = auth_server
    mp = tmp_path / "mnt"
    mp.mkdir()
    log = tmp_path / "log"
    r = _mount(endpoint, mp, tmp_path / "cache", log, key_id, secret)
    assert r.returncode == 0, r.stderr
    try:
        (mp / "probe").write_bytes(b"x" * 1000)
        assert (mp / "probe").read_bytes() == b"x" * 1000
        argvs = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argvs.append(open(f"/proc/{pid}/cmdline", "rb").read())
            except OSError:
                pass
        assert any(b"s3pvefs" in a and b"mount" in a for a in argvs)  # the daemon is there
        assert not any(secret.encode() in a for a in argvs)  # and no process shows the secret
    finally:
        subprocess.run([os.path.join(BIN, "s3pvefs"), "umount", str(mp)], check=True, timeout=60)
    assert secret not in log.read_text() + r.stderr
