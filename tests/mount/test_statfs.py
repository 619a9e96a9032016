"""statfs on a real mount: df shows the configured capacity less the bytes under the
prefix, counted in the background at mount and every usage_interval (6 h), with this
mount's own writes and deletes applied as they happen; usage_interval=0: none counted."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.mount


def df(path: str) -> tuple[int, int, int]:
    out = subprocess.run(["df", "-B1", "--output=size,used,avail", path], capture_output=True, text=True,
                         check=True).stdout.split("\n")[1].split()
    return int(out[0]), int(out[1]), int(out[2])


def test_df_shows_capacity_and_counted_usage(mount):
    m = mount(["capacity=10G"])  # usage counted by default
    assert df(m.mp) == (10 << 30, 0, 10 << 30)  # empty bucket
    m.put("dump/vzdump-qemu-100-2026_11_24-01_00_00.vma.zst", b"x" * (3 << 20))
    m.put("template/iso/debian.iso", b"y" * (5 << 20))
    m.s3.put_object(Bucket=m.bucket, Key="not-under-the-prefix", Body=b"z" * (7 << 20))
    m.remount()  # counts at mount, then every usage_interval
    deadline = time.monotonic() + 20
    while df(m.mp)[1] == 0:
        assert time.monotonic() < deadline, "usage never counted"
        time.sleep(0.2)
    size, used, avail = df(m.mp)
    assert (size, used, avail) == (10 << 30, 8 << 20, (10 << 30) - (8 << 20))
    st = os.statvfs(m.mp)
    assert st.f_blocks > 0 and st.f_frsize > 0  # Proxmox calls a storage with 0 here dead

    # this mount's own changes count at once, without a recount
    subprocess.run(["dd", "if=/dev/zero", f"of={m.path('dump', 'new.vma.zst')}", "bs=1M", "count=4",
                    "status=none"], check=True)
    assert df(m.mp)[1] == 12 << 20
    os.rename(m.path("dump", "new.vma.zst"), m.path("dump", "renamed.vma.zst"))
    assert df(m.mp)[1] == 12 << 20
    os.unlink(m.path("template", "iso", "debian.iso"))
    assert df(m.mp)[1] == 7 << 20
    with open(m.path("dump", "renamed.vma.zst"), "r+b") as f:
        f.truncate(1 << 20)
    assert df(m.mp)[1] == 4 << 20


def test_df_without_usage_counting_is_the_capacity(mount):
    m = mount(["capacity=2T", "usage_interval=0"])
    m.put("dump/a", b"x" * 1000)
    assert df(m.mp) == (2 << 40, 0, 2 << 40)
