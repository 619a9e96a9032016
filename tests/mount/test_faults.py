"""With 10% of S3 requests faulted (500, 503 SlowDown, connection resets, bodies cut
off halfway, slow answers) a streamed write and a read-back through the mount give
the same sha256: botocore retries requests (standard mode: bounded exponential
backoff with jitter, throttling honoured), the adapter retries bodies that broke
off. The figures are printed (pytest -s). 96 MiB: a 2 GiB run through this Python
proxy in front of moto took over 20 minutes, see the closing note."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.mount.conftest import run_cli
from tests.mount.faultproxy import FaultProxy
from tests.mount.test_streaming import assert_no_uploads, random_file

pytestmark = pytest.mark.mount
MiB = 1 << 20


def faulted_round_trip(mount, s3_server, tmp_path, size: int) -> None:
    proxy = FaultProxy(s3_server)
    try:
        m = mount(["max_attempts=6", "min_part_size=5M", "max_part_size=5M", "chunk_size=1M"])
        m.umount()
        m.endpoint = proxy.url
        m.do_mount()
        src = tmp_path / "src.bin"
        digest = random_file(src, size)
        proxy.fault_rate = 0.10
        subprocess.run(["dd", f"if={src}", f"of={m.path('big.vma')}", "bs=1M", "status=none"], check=True,
                       timeout=3600)
        wrote = dict(proxy.faults)
        m.umount()  # a fresh mount: the read comes from S3, not the page cache
        m.do_mount()
        r = subprocess.run(f"sha256sum < {m.path('big.vma')}", shell=True, capture_output=True, text=True,
                           timeout=3600, check=True)
        assert r.stdout.split()[0] == digest
        status = json.loads(run_cli("status", m.mp, "--json").stdout)
        proxy.fault_rate = 0.0
        total = sum(proxy.faults.values())
        print(f"\n{size / MiB:.0f} MiB through 10% faults: {proxy.requests} requests seen by the proxy, "
              f"{total} faulted ({dict(proxy.faults)}; during the write {wrote}); "
              f"body retries by the adapter on the read-back mount: {status['retries']}; "
              f"failures after retries: {status['errors']}")
        assert total > 0 and not status["errors"]
        assert m.sha256("big.vma") == digest
        # Once more with every fault a body cut off halfway: the adapter's own retries.
        m.umount()
        m.do_mount()
        proxy.fault_kinds, proxy.fault_rate = ("truncated",), 0.10
        r = subprocess.run(f"sha256sum < {m.path('big.vma')}", shell=True, capture_output=True, text=True,
                           timeout=3600, check=True)
        proxy.fault_rate = 0.0
        assert r.stdout.split()[0] == digest
        status = json.loads(run_cli("status", m.mp, "--json").stdout)
        print(f"read-back with 10% of answers cut off: {status['retries']}, failures {status['errors']}")
        assert status["retries"].get("get_object body", 0) > 0 and not status["errors"]
        assert_no_uploads(m)
    finally:
        proxy.fault_rate = 0.0
        proxy.close()


def test_96_mib_round_trip_under_10_percent_faults(mount, s3_server, tmp_path):
    faulted_round_trip(mount, s3_server, tmp_path, 96 * MiB)

