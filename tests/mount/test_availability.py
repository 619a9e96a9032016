"""Availability with the S3 endpoint hanging or refusing (a fault proxy in front of
moto): what pvestatd asks (stat of the root and content directories, statfs)
answers from local state in well under a second; operations that need S3 fail with
EIO within the request deadline instead of hanging; the mount recovers by itself.
The measured latencies are printed (pytest -s)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.mount.faultproxy import FaultProxy

pytestmark = pytest.mark.mount

DEADLINE = 3  # request_deadline for these mounts (default 30 s), so failures come quickly
OPTIONS = ["stat_ttl=1", "negative_ttl=1", "listing_ttl=1", f"request_deadline={DEADLINE}", "max_attempts=2",
           "connect_timeout=1", "read_timeout=2", "outage_patience=3"]
CONTENT = ["dump", "template/iso", "template/cache", "images", "snippets"]

# Runs in a child process, as pvestatd does (its own 2 s timeout): times each call.
_PROBE = textwrap.dedent("""
    import json, os, sys, time
    out = {}
    for p in sys.argv[1:]:
        t0 = time.monotonic()
        try:
            if p.endswith("#statfs"):
                st = os.statvfs(p[:-len("#statfs")])
                ok = st.f_blocks > 0 and st.f_frsize > 0
            else:
                ok = os.path.isdir(p)
        except OSError as e:
            ok = f"error {e.errno}"
        out[p] = [ok, round(time.monotonic() - t0, 3)]
    print(json.dumps(out))
""")


def probe(m) -> dict[str, list]:
    paths = [m.mp + "#statfs", m.mp] + [m.path(c) for c in CONTENT]
    r = subprocess.run([sys.executable, "-c", _PROBE, *paths], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def timed(cmd: str, timeout: float = 120) -> tuple[int, float, str]:
    t0 = time.monotonic()
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    return r.returncode, time.monotonic() - t0, r.stderr


@pytest.fixture
def proxied_mount(mount, s3_server):
    proxy = FaultProxy(s3_server)
    m = mount(OPTIONS)
    m.remount_through(proxy.url)
    for c in CONTENT:
        subprocess.run(["mkdir", "-p", m.path(c)], check=True)
    with open(m.path("dump", "vzdump-qemu-100-2026_11_24-01_00_00.vma.zst"), "wb") as f:
        f.write(b"backup bytes" * 1000)
    m.put("dump/other-node.log", b"written by another node")
    yield m, proxy
    proxy.stall = False
    proxy.close()


def check_outage(m, what: str) -> None:
    time.sleep(2.5)  # every cached answer and the kernel's copies have expired
    for attempt in range(3):  # pvestatd asks every 10 s: ask repeatedly
        answers = probe(m)
        print(f"\n{what}, probe {attempt + 1}: " + ", ".join(f"{p.replace(m.mp, '') or '/'} {v[1]:.3f} s"
                                                        for p, v in answers.items()))
        for p, (ok, seconds) in answers.items():
            assert ok is True, (p, ok)
            assert seconds < 1.0, f"{p} took {seconds} s with the endpoint {what}"

    # df (admins, scripts) opens the mountpoint before its statfs: answered locally too
    for cmd in (f"df {m.mp}", f"df -h {m.mp}/dump", "df"):
        rc, seconds, err = timed(cmd, timeout=30)
        print(f"{what}: `{cmd.replace(m.mp, '')}` answered in {seconds:.3f} s")
        assert rc == 0, err
        assert seconds < 1.0, f"`{cmd}` took {seconds:.1f} s with the endpoint {what}"

    # Operations that need S3: a file put by another node (never seen here), a listing,
    # a new file. (A file this mount wrote may still be answered from the page cache.)
    for cmd in (f"cat {m.path('dump', 'other-node.log')} > /dev/null", f"ls {m.path('images')}",
                f"echo new > {m.path('dump', 'new-file')}"):
        rc, seconds, err = timed(cmd)
        print(f"{what}: `{cmd.replace(m.mp, '')}` failed in {seconds:.1f} s: {err.strip()}")
        assert rc != 0 and "Input/output error" in err, err
        assert seconds < 6 * DEADLINE, f"{cmd} took {seconds:.1f} s"


def check_recovery(m) -> None:
    t0 = time.monotonic()
    archive = m.path("dump", "vzdump-qemu-100-2026_11_24-01_00_00.vma.zst")
    while True:
        rc, _, err = timed(f"cat {archive} {m.path('dump', 'other-node.log')} > /dev/null "
                           f"&& echo back > {m.path('dump', 'after')}")
        if rc == 0:
            break
        assert time.monotonic() - t0 < 4 * DEADLINE, f"not recovered: {err}"
        time.sleep(0.5)
    print(f"recovered {time.monotonic() - t0:.1f} s after the endpoint came back")
    assert m.get("dump/after") == b"back\n"
    assert m.get("dump/vzdump-qemu-100-2026_11_24-01_00_00.vma.zst") == b"backup bytes" * 1000


def test_endpoint_hanging(proxied_mount):
    m, proxy = proxied_mount
    proxy.stall = True
    check_outage(m, "hanging")
    proxy.stall = False
    check_recovery(m)


def test_endpoint_refusing(proxied_mount):
    m, proxy = proxied_mount
    proxy.refuse()
    check_outage(m, "refusing")
    proxy.listen_again()
    check_recovery(m)


def test_default_deadline_with_a_hanging_endpoint(mount, s3_server):
    """With default settings an operation that needs S3 ends in EIO within 30 s."""
    proxy = FaultProxy(s3_server)
    try:
        m = mount()
        m.remount_through(proxy.url)
        proxy.stall = True
        rc, seconds, err = timed(f"ls {m.path('never-listed')}")
        print(f"\ndefault settings, hanging endpoint: `ls` of an unknown name failed in {seconds:.1f} s: "
              f"{err.strip()}")
        assert rc != 0 and "Input/output error" in err, err
        assert 15 <= seconds <= 30, seconds
        proxy.stall = False
    finally:
        proxy.stall = False
        proxy.close()
