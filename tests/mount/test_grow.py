"""Growing a file far past its data (`truncate -s`, `qemu-img create -f raw`: Proxmox's
raw disk allocation) costs requests, not an upload of its zeros: the holes are copied
server-side from the mount's hidden object of zeros (write/zeros.py)."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from tests.conftest import need
from tests.mount.conftest import run_cli
from tests.mount.test_streaming import sh

pytestmark = pytest.mark.mount

MiB = 1 << 20


def sent(m) -> int:
    r = run_cli("status", m.mp, "--json", "--once")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["bytes"]["sent"]


def zeros_then(prefix: bytes, size: int) -> str:
    h = hashlib.sha256(prefix)
    left, block = size - len(prefix), bytes(MiB)
    while left:
        n = min(left, MiB)
        h.update(block[:n])
        left -= n
    return h.hexdigest()


def test_truncate_and_qemu_img_create_send_no_zeros(mount):
    need("qemu-img")
    m = mount()
    with open(m.path("small"), "wb") as f:
        f.write(b"hello\n")
    before = sent(m)
    t0 = time.monotonic()
    sh(f"truncate -s 256M {m.path('small')}")  # no open handle: committed before it returns
    took = time.monotonic() - t0
    assert os.stat(m.path("small")).st_size == 256 * MiB
    assert m.sha256("small") == zeros_then(b"hello\n", 256 * MiB)
    grown = sent(m) - before
    assert grown <= 17 * MiB, f"{grown / MiB:.1f} MiB sent to grow a file by 256 MiB"  # seed + first window

    before = sent(m)
    os.makedirs(m.path("images", "100"))
    sh(f"cd {m.path('images', '100')} && umask 0037 && qemu-img create -f raw vm-100-disk-0.raw 256M")
    assert m.head("images/100/vm-100-disk-0.raw")["ContentLength"] == 256 * MiB
    created = sent(m) - before
    assert created <= 9 * MiB, f"{created / MiB:.1f} MiB sent by qemu-img create of 256 MiB"  # the zeros are there
    assert m.sha256("images/100/vm-100-disk-0.raw") == zeros_then(b"", 256 * MiB)
    print(f"\ntruncate -s 256M: {took:.2f} s, {grown / MiB:.1f} MiB sent; qemu-img create 256M: "
          f"{created / MiB:.1f} MiB sent (moto)")

    # the object of zeros is nobody's name
    assert ".s3pvefs-zeros" not in os.listdir(m.mp)
    assert "pve/.s3pvefs-zeros" in m.keys()
    with pytest.raises(OSError):
        open(m.path(".s3pvefs-zeros"), "wb").close()
    r = run_cli("ls", f"{m.bucket}/{m.prefix}", "--endpoint-url", m.endpoint, "--json")
    assert r.returncode == 0 and ".s3pvefs-zeros" not in r.stdout, r.stdout[-2000:]
