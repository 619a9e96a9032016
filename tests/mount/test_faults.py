"""With 10% of S3 requests faulted (500, 503 SlowDown, connection resets, bodies cut
off halfway, slow answers, answers that never come) a streamed write and a read-back
through the mount give the same sha256: botocore retries requests (standard mode:
bounded exponential backoff with jitter, throttling honoured), the adapter retries
bodies that broke off. The figures are printed (pytest -s): requests, faults by
kind, retries, elapsed time and MiB/s.

- default tier: 96 MiB against moto, 5 MiB parts and 1 MiB read chunks (many requests);
- slow tier: 2 GiB against Ceph RGW with the default part and chunk sizes
  (`./scripts/test.sh -m slow -k 2_gib`).

Retries are counted from both ends: every attempt passes the proxy, while the daemon
counts each request once however often botocore sent it (`s3pvefs status --json`:
`requests`), so botocore's retries are the difference; the adapter's own retries
(a GET body that broke off) are its `retries` counter.

Answers cut off include those of CreateMultipartUpload and CompleteMultipartUpload that
took effect: the first leaves an upload that the mount aborts (the create had to be sent
again), the second is found committed by a HEAD (write/commitstore.py); the tests below
make each happen once on purpose.
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.mount.conftest import run_cli, sha256_file
from tests.mount.faultproxy import FaultProxy, is_complete_upload, is_create_upload
from tests.mount.test_ceph import _GENERATOR
from tests.mount.test_streaming import assert_no_uploads, uploads

pytestmark = pytest.mark.mount
MiB, GiB = 1 << 20, 1 << 30
KINDS = ("500", "503", "reset", "truncated", "slow", "stall")
# Answers that never come are given up after read_timeout; every attempt may be
# retried 5 times (at 10% faults a request fails for good once in a million).
FAULT_OPTIONS = ["max_attempts=6", "read_timeout=5"]


def status_json(m) -> dict:
    r = run_cli("status", m.mp, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@dataclass
class Phase:
    """One mount's life through the proxy: what it asked S3 for and what it took."""
    name: str
    nbytes: int
    seconds: float
    attempts: int  # requests the proxy received
    requests: int  # requests the daemon made (each counted once, however often sent)
    adapter_retries: dict
    errors: dict
    faults: collections.Counter
    unretried: list  # faulted requests the proxy never saw again (FaultProxy.unretried)

    @property
    def botocore_retries(self) -> int:
        return self.attempts - self.requests

    @property
    def retries(self) -> int:
        return self.botocore_retries + sum(self.adapter_retries.values())

    def line(self) -> str:
        kinds = ", ".join(f"{k} {self.faults[k]}" for k in KINDS if self.faults[k]) or "none"
        return (f"{self.name}: {self.nbytes / MiB:.0f} MiB in {self.seconds:.1f} s "
                f"({self.nbytes / MiB / self.seconds:.1f} MiB/s); {self.attempts} requests through the proxy, "
                f"{sum(self.faults.values())} faulted ({kinds}); retries {self.retries} "
                f"({self.botocore_retries} by botocore, {sum(self.adapter_retries.values())} GET bodies by "
                f"s3pvefs); failures after retries: {self.errors or 'none'}")


def _phase(name, m, proxy, nbytes, run) -> Phase:
    """Mount through the proxy, run(), read the daemon's counters (still mounted)."""
    attempts0, faults0, seen0 = proxy.requests, collections.Counter(proxy.faults), len(proxy.seen)
    m.do_mount()
    t0 = time.monotonic()
    run()
    seconds = time.monotonic() - t0
    status = status_json(m)
    return Phase(name, nbytes, seconds, proxy.requests - attempts0, sum(status["requests"].values()),
                 status["retries"], status["errors"], collections.Counter(proxy.faults) - faults0,
                 proxy.unretried(seen0))


def faulted_round_trip(mount_factory, upstream: str, size: int, options: list[str], label: str):
    """The round trip; (read-back Phase, Mount, FaultProxy) (the proxy closed)."""
    proxy = FaultProxy(upstream)
    try:
        m = mount_factory(FAULT_OPTIONS + options)  # creates the bucket; mounted again through the proxy
        m.umount()
        m.endpoint = proxy.url
        proxy.fault_kinds = KINDS
        proxy.fault_rate = 0.10
        digest = {}

        def write():  # a deterministic stream, never on local disk
            gen = subprocess.Popen([sys.executable, "-c", _GENERATOR, str(size), "11"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
            dd = subprocess.run(["dd", f"of={m.path('big.vma')}", "bs=1M", "iflag=fullblock", "status=none"],
                                stdin=gen.stdout, capture_output=True, text=True, timeout=3600)
            gen.stdout.close()
            digest["written"] = gen.stderr.read().decode().strip()
            assert gen.wait() == 0 and dd.returncode == 0, dd.stderr

        def read():
            r = subprocess.run(f"sha256sum < {m.path('big.vma')}", shell=True, capture_output=True, text=True,
                               timeout=3600)
            assert r.returncode == 0, r.stderr
            digest["read"] = r.stdout.split()[0]

        wrote = _phase("write", m, proxy, size, write)
        proxy.fault_rate = 0.0
        left_after_write = uploads(m)
        assert_no_uploads(m)  # nothing was left by parts or completes that were retried
        assert m.head("big.vma")["ContentLength"] == size
        assert m.sha256("big.vma") == digest["written"]  # straight from the server, no proxy
        m.umount()  # a fresh mount: the read comes from S3, not the page cache
        proxy.fault_rate = 0.10
        read_back = _phase("read-back", m, proxy, size, read)
        proxy.fault_rate = 0.0
        total = wrote.faults + read_back.faults
        print(f"\n{size / MiB:.0f} MiB through 10% faults on {label}: {proxy.summary()}\n  {wrote.line()}\n"
              f"  {read_back.line()}\n  incomplete uploads after the write: {len(left_after_write)}")
        assert read_back.faults and wrote.faults, "no fault was injected"
        assert digest["read"] == digest["written"]
        assert wrote.errors == {} and read_back.errors == {}, "a request failed after its retries"
        # Every faulted write request (but a slow answer) is sent again: seen at the proxy.
        # Reads are not held to that: a faulted read-ahead chunk the reader no longer needs
        # is dropped, not retried; what reads must do is asserted above (same sha256, no
        # request failed after its retries).
        assert wrote.unretried == [], wrote.unretried
        assert set(total) <= set(KINDS) and proxy.upstream_failures == 0
        return read_back, m, proxy
    finally:
        proxy.fault_rate = 0.0
        proxy.close()


def test_96_mib_round_trip_under_10_percent_faults(mount, s3_server):
    _, m, proxy = faulted_round_trip(mount, s3_server, 96 * MiB,
                                     ["min_part_size=5M", "max_part_size=5M", "chunk_size=1M"], "moto")
    # Once more with every fault a body cut off halfway: the adapter's own retries.
    proxy = FaultProxy(s3_server)
    try:
        m.remount_through(proxy.url)
        proxy.fault_kinds, proxy.fault_rate = ("truncated",), 0.10
        r = subprocess.run(f"sha256sum < {m.path('big.vma')}", shell=True, capture_output=True, text=True,
                           timeout=3600, check=True)
        proxy.fault_rate = 0.0
        assert r.stdout.split()[0] == m.sha256("big.vma")
        status = status_json(m)
        print(f"read-back with 10% of answers cut off: {proxy.summary()}; retries {status['retries']}, "
              f"failures {status['errors'] or 'none'}")
        # Retried by the adapter (aiobotocore plane), or inside the CRT, which counts none:
        # then the proxy must have cut bodies off, and the read still matched.
        if status["read_plane"] == "crt":
            assert sum(proxy.faults.values()) > 0, proxy.summary()
        else:
            assert status["retries"].get("get_object body", 0) > 0
        assert not status["errors"]
        assert_no_uploads(m)
    finally:
        proxy.fault_rate = 0.0
        proxy.close()


def test_eager_read_ahead_reads_the_same_bytes_while_gets_end_out_of_order(mount, s3_server, tmp_path):
    """Eager read-ahead (far servers): while the reader waits for a slow GET, chunks
    that arrived behind it make room for more GETs. With a fifth of the GETs answered
    late, cut off or failed, cp reads back exactly what was stored, each chunk of the
    file fetched (at least) once and no request failing after its retries."""
    data = random.Random(17).randbytes(40 * MiB + 12345)
    src = tmp_path / "src"
    src.write_bytes(data)
    proxy = FaultProxy(s3_server)
    try:
        m = mount(FAULT_OPTIONS + ["chunk_size=1M", "max_readahead_chunks=4", "eager_readahead=yes"])
        m.put("dump/f.vma", data)
        m.remount_through(proxy.url)
        proxy.fault_kinds, proxy.fault_filter = ("slow", "truncated", "500"), lambda kind, method, target: method == "GET"
        proxy.fault_rate = 0.2
        seen0 = len(proxy.seen)
        out = tmp_path / "out"
        subprocess.run(["cp", m.path("dump", "f.vma"), str(out)], check=True, timeout=300)
        proxy.fault_rate = 0.0
        assert sha256_file(out) == sha256_file(src)
        assert os.path.getsize(out) == len(data)
        ranges = {h.get("range") for method, _, h in proxy.seen[seen0:] if method == "GET"}
        starts = {int(r.split("=")[1].split("-")[0]) for r in ranges if r}
        assert {i * MiB for i in range(41)} <= starts, sorted(set(range(41)) - {s // MiB for s in starts})
        assert proxy.faults["slow"] > 0, proxy.summary()
        assert not status_json(m)["errors"]
    finally:
        proxy.fault_rate = 0.0
        proxy.close()


@pytest.mark.slow
def test_2_gib_round_trip_under_10_percent_faults_on_ceph(ceph_mount, ceph_server):
    read_back, m, proxy = faulted_round_trip(ceph_mount, ceph_server, 2 * GiB, [], "Ceph RGW")
    assert set(proxy.faults) == set(KINDS), f"a kind of fault never came up: {proxy.faults}"


def test_lost_create_answer_leaves_no_orphan_upload(mount, s3_server):
    """CreateMultipartUpload took effect on the server, its answer broke off: botocore
    retries it and the file is committed through the second upload; the first one is
    aborted at once (it would be stored, billed and invisible otherwise)."""
    proxy = FaultProxy(s3_server)
    try:
        m = mount(["min_part_size=5M", "max_part_size=5M"])
        m.remount_through(proxy.url)
        proxy.fault_once.add(("truncated", is_create_upload))
        run = subprocess.run(f"head -c {20 * MiB} /dev/urandom > {m.path('f.vma')}", shell=True,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert [k for k, *_ in proxy.fault_log] == ["truncated"]
        assert m.head("f.vma")["ContentLength"] == 20 * MiB
        left = uploads(m)
        print(f"\nanswer to CreateMultipartUpload cut off: {len(left)} incomplete upload(s) left after close")
        assert left == [], f"orphan uploads: {[(u['Key'], u['UploadId']) for u in left]}"
        assert "made by a CreateMultipartUpload whose answer was lost" in m.log_text()
    finally:
        proxy.close()


def test_lost_complete_answer_counts_as_committed(mount, s3_server):
    """CompleteMultipartUpload took effect, its answer broke off, botocore's retry got
    NoSuchUpload: the close succeeds (the bucket holds exactly the parts sent), nothing
    is kept for a later try, and the next mount finds nothing to recover."""
    proxy = FaultProxy(s3_server)
    try:
        m = mount(["min_part_size=5M", "max_part_size=5M"])
        m.remount_through(proxy.url)
        proxy.fault_once.add(("truncated", is_complete_upload))
        run = subprocess.run(f"head -c {20 * MiB + 7} /dev/urandom | tee {m.path('f.vma')} | sha256sum",
                             shell=True, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert [k for k, *_ in proxy.fault_log] == ["truncated"]
        assert m.sha256("f.vma") == run.stdout.split()[0]
        assert uploads(m) == []  # (moto answers a repeated Complete with success; Ceph: NoSuchUpload)
        m.remount()
        assert "NOT committed" not in m.log_text() and "ERROR" not in m.log_text()
    finally:
        proxy.close()
