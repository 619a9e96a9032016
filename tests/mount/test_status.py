"""`s3pvefs status`: a running upload seen from outside (bytes written and stored,
parts in flight, rate), memory and request counts; and SIGHUP reopens the log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.mount.conftest import run_cli
from tests.mount.test_streaming import PyProc, daemon_pid

pytestmark = pytest.mark.mount


def test_status_shows_a_running_upload(mount, tmp_path):
    m = mount(["min_part_size=5M", "max_part_size=5M"])
    writer = PyProc("""
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        write_all(fd, pattern(23 << 20, 1))
        pause("written")
        os.close(fd)
    """, m.path("vzdump-qemu-100-2026_11_24-01_00_00.vma.dat"))
    writer.wait_pause("written")
    r = run_cli("status", m.mp, "--json")
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    assert snap["schema"] == "s3pvefs-status/1"
    (f,) = snap["files"]
    assert f["path"] == "vzdump-qemu-100-2026_11_24-01_00_00.vma.dat" and f["kind"] == "streamed"
    assert f["written"] == 23 << 20
    assert f["sent"] >= 15 << 20 and 0 < f["stored"] <= f["sent"], f
    assert snap["requests"]["upload_part"] >= 3 and snap["requests"]["create_multipart_upload"] == 1
    assert snap["memory"]["write_used"] > 0 and snap["memory"]["write_limit"] == 160 << 20
    text = run_cli("status", m.mp, "--once").stdout
    assert "vzdump-qemu-100-2026_11_24-01_00_00.vma.dat" in text and "streamed" in text and "23.0 MiB" in text
    writer.resume()
    writer.finish()
    r = run_cli("status", m.mp, "--json")
    assert json.loads(r.stdout)["files"] == []  # committed
    assert "no uploads pending" in run_cli("status", m.mp, "--once").stdout


def test_status_of_something_not_mounted(tmp_path):
    r = run_cli("status", str(tmp_path))
    assert r.returncode == 1 and "no s3pvefs daemon answers" in r.stderr and "Traceback" not in r.stderr


def test_sighup_reopens_the_log_file(mount):
    m = mount()
    pid = daemon_pid(m)
    os.rename(m.log, m.log + ".1")  # logrotate
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not (os.path.exists(m.log) and "log file reopened" in open(m.log).read()):
        assert time.monotonic() < deadline, "no new log file after SIGHUP"
        time.sleep(0.1)
    assert os.path.ismount(m.mp)
    subprocess.run(["ls", m.mp], check=True)


def test_prometheus_metrics_on_localhost(mount):
    import urllib.error
    import urllib.request

    from tests.mount.conftest import free_port
    port = free_port()
    m = mount([f"metrics_port={port}"])
    with open(m.path("a.txt"), "w") as f:
        f.write("x" * 1000)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 's3pvefs_s3_requests_total{operation="put_object"} 1.0' in body, body
    assert "s3pvefs_pending_files 0.0" in body
    assert 's3pvefs_memory_bytes{budget="write",what="limit"} 1.6777216e+08' in body
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert e.value.code == 404
