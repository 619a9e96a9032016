"""upload_limit / download_limit through a real mount: the mount moves at most the
rate, requests that wait longer than request_deadline for their turn still succeed
(the wait is not part of a request), and status and the metrics say so."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request

import pytest

from tests.mount.conftest import run_cli
from tests.mount.test_streaming import sh

pytestmark = pytest.mark.mount

MiB = 1 << 20
SIZE = 40 * MiB
RATE = 8 * MiB
# Parts of 5 MiB, and a deadline far shorter than the last part's wait for its turn (~4 s).
TIGHT = ["min_part_size=5M", "max_part_size=5M", "multipart_threshold=8M", "request_deadline=2",
         "min_transfer_rate=16M"]


def status(m) -> dict:
    r = run_cli("status", m.mp, "--json", "--once")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_upload_and_download_limits_pace_the_mount_within_deadlines(mount, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(SIZE))
    want = hashlib.sha256(src.read_bytes()).hexdigest()

    writer = mount([f"upload_limit={RATE // MiB}M", "metrics_port=19417"] + TIGHT)
    t0 = time.monotonic()
    sh(f"dd if={src} of={writer.path('backup.vma')} bs=1M status=none")
    wrote = time.monotonic() - t0
    assert writer.sha256("backup.vma") == want
    up = status(writer)
    # the first part goes at once; the other 35 MiB at 8 MiB/s
    assert wrote >= 0.9 * (SIZE - 5 * MiB) / RATE, f"{wrote:.1f} s for {SIZE} bytes at {RATE} B/s"
    assert up["bandwidth"]["upload"]["rate_now"] == RATE
    assert up["bandwidth"]["upload"]["waited_seconds"] > 2  # longer than request_deadline
    assert up["bandwidth"]["download"]["limit"] == "off"
    assert not up["errors"], up["errors"]
    text = run_cli("status", writer.mp, "--once").stdout
    assert "bandwidth: upload 8.0 MiB/s now (8M)" in text and "download unlimited" in text
    metrics = urllib.request.urlopen("http://127.0.0.1:19417/metrics", timeout=10).read().decode()
    line = next(x for x in metrics.splitlines()
                if x.startswith('s3pvefs_bandwidth_limit_bytes_per_second{direction="upload"}'))
    assert float(line.split()[-1]) == RATE

    # chunk_size set: left at its default, a server slow to answer HeadBucket gets 16 MiB chunks
    reader = mount([f"download_limit={RATE // MiB}M", "request_deadline=2", "min_transfer_rate=16M",
                    "chunk_size=4M"],
                   bucket=writer.bucket)
    t0 = time.monotonic()
    got = hashlib.sha256(open(reader.path("backup.vma"), "rb").read()).hexdigest()
    read = time.monotonic() - t0
    assert got == want
    down = status(reader)
    chunk = 4 * MiB  # read-ahead's first GET is not held back
    assert read >= 0.9 * (SIZE - chunk) / RATE, f"{read:.1f} s for {SIZE} bytes at {RATE} B/s"
    assert down["bandwidth"]["download"]["waited_seconds"] > 2
    assert not down["errors"], down["errors"]
    print(f"\n{SIZE // MiB} MiB at an {RATE // MiB} MiB/s limit: write {wrote:.1f} s "
          f"({SIZE / wrote / MiB:.1f} MiB/s), read {read:.1f} s ({SIZE / read / MiB:.1f} MiB/s)")

