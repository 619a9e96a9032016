"""Two nodes: two mounts of the same bucket and prefix (Proxmox `shared 1`). A backup
committed on one is listed, readable and restorable on the other within the TTLs;
deletes and renames likewise. The measured delays are printed (pytest -s)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.mount

TTL = 2  # stat_ttl = negative_ttl = listing_ttl for both nodes; the kernel adds 1 s
OPTIONS = [f"stat_ttl={TTL}", f"negative_ttl={TTL}", f"listing_ttl={TTL}"]
BOUND = TTL + 1 + 1  # TTL, the kernel's 1 s, and 1 s for scheduling


def seen_within(cond, what: str) -> float:
    """Seconds until cond() is true; fails past BOUND (the documented delay)."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < BOUND + 2, f"{what}: not seen after {BOUND + 2} s"
        time.sleep(0.05)
    took = time.monotonic() - t0
    print(f"\n{what}: {took:.2f} s")
    assert took <= BOUND, f"{what} took {took:.2f} s, more than the TTL bound {BOUND} s"
    return took


def listing(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def test_changes_on_one_node_appear_on_the_other(mount, tmp_path):
    a = mount(OPTIONS)
    b = mount(OPTIONS, bucket=a.bucket)
    os.makedirs(a.path("dump"))
    os.makedirs(b.path("dump"), exist_ok=True)
    assert listing(b.path("dump")) == []  # node B has looked: its caches say "empty"

    name = "vzdump-qemu-101-2026_11_24-02_00_00.vma.zst"
    src = tmp_path / "disk.raw"
    src.write_bytes(os.urandom(3 << 20) + b"guest data\n" * 200_000)
    subprocess.run(f"zstd -q -c < {src} > {a.path('dump', name[:-4] + '.dat')} && "
                   f"mv {a.path('dump', name[:-4] + '.dat')} {a.path('dump', name)}",
                   shell=True, check=True)
    seen_within(lambda: name in listing(b.path("dump")), "backup committed on A listed on B")
    assert os.path.getsize(b.path("dump", name)) == os.path.getsize(a.path("dump", name))
    r = subprocess.run(f"zstd -q -d -c < {b.path('dump', name)} | cmp - {src}", shell=True)
    assert r.returncode == 0, "restore on B differs from the source"

    new = name.replace("02_00_00", "03_00_00")
    os.rename(a.path("dump", name), a.path("dump", new))
    seen_within(lambda: listing(b.path("dump")) == [new], "rename on A seen on B")
    assert os.path.getsize(b.path("dump", new)) == os.path.getsize(a.path("dump", new))

    os.unlink(b.path("dump", new))
    seen_within(lambda: listing(a.path("dump")) == [] and not os.path.exists(a.path("dump", new)),
                "delete on B seen on A")

    # the same name written again on A with new contents: B reads the new bytes
    with open(a.path("dump", "notes.txt"), "w") as f:
        f.write("first")
    seen_within(lambda: os.path.exists(b.path("dump", "notes.txt")), "new file on A seen on B")
    with open(b.path("dump", "notes.txt")) as f:
        assert f.read() == "first"
    with open(a.path("dump", "notes.txt"), "w") as f:
        f.write("second, longer")

    def b_reads_second():
        with open(b.path("dump", "notes.txt")) as f:
            return f.read() == "second, longer"
    seen_within(b_reads_second, "rewrite on A read on B")
