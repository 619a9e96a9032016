"""The README's first quick-start command, scripts/demo.sh, as a newcomer runs it: it
works, cleans up after itself, and with KEEP=1 says how to stop what it left running."""

from __future__ import annotations

import glob
import os
import re
import socket
import subprocess

import pytest

from tests.mount.conftest import free_port

pytestmark = pytest.mark.mount

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def demo(tmp_path, keep: bool) -> tuple[subprocess.CompletedProcess, str, int]:
    mp, port = str(tmp_path / "demo-mnt"), free_port()
    env = {**os.environ, "MP": mp, "PORT": str(port), "KEEP": "1" if keep else "0"}
    r = subprocess.run(["./scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "restore: identical" in r.stdout
    return r, mp, port


def test_demo_cleans_up_after_itself(tmp_path):
    before = set(glob.glob("/tmp/s3pvefs-demo.*"))
    _, mp, port = demo(tmp_path, keep=False)
    assert not os.path.ismount(mp)
    assert not port_open(port), "the demo's S3 server is still running"
    assert set(glob.glob("/tmp/s3pvefs-demo.*")) == before, "temporary files left behind"


def test_demo_keep_prints_how_to_stop_it(tmp_path):
    before = set(glob.glob("/tmp/s3pvefs-demo.*"))
    r, mp, port = demo(tmp_path, keep=True)
    try:
        assert os.path.ismount(mp) and port_open(port)
        left = set(glob.glob("/tmp/s3pvefs-demo.*")) - before
        assert len(left) == 1 and not os.path.exists(os.path.join(left.pop(), "disk.img"))
        stop = re.search(r"stop both with:\s+(.*)$", r.stdout, re.M)
        assert stop, r.stdout
        s = subprocess.run(stop.group(1), shell=True, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert s.returncode == 0, s.stderr
        assert not os.path.ismount(mp)
        assert set(glob.glob("/tmp/s3pvefs-demo.*")) == before
        for _ in range(50):
            if not port_open(port):
                break
            subprocess.run(["sleep", "0.1"])
        assert not port_open(port), "the S3 server still runs after the printed commands"
    finally:
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-uz", mp])
