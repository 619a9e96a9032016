"""Directory modes and times persist in listings (issue 16.3)."""

from __future__ import annotations

import os
import stat as st
import subprocess
import time

import pytest

pytestmark = pytest.mark.mount

TTL = 2


def ls_mode(parent: str, name: str) -> str:
    out = subprocess.run(["ls", "-l", parent], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.endswith(" " + name):
            return line.split()[0]
    raise AssertionError(f"{name} not in ls -l {parent}: {out}")


def test_directory_modes_and_times_survive_the_listing_ttl_and_a_remount(mount):
    m = mount([f"stat_ttl={TTL}", f"listing_ttl={TTL}", f"negative_ttl={TTL}", "dir_mode=0750"])
    os.makedirs(m.path("images"))
    old = os.umask(0o037)
    try:
        os.mkdir(m.path("images", "101"), 0o777)  # as Proxmox's vdisk_alloc: 0740
    finally:
        os.umask(old)
    os.mkdir(m.path("private"), 0o700)
    made = {"private": os.stat(m.path("private")), "101": os.stat(m.path("images", "101"))}
    assert st.S_IMODE(made["private"].st_mode) == 0o700 and st.S_IMODE(made["101"].st_mode) == 0o740
    m.put("byprefix/only/file", b"x")  # a directory that exists only as a key prefix
    time.sleep(1)

    def check(when: str) -> None:
        assert ls_mode(m.mp, "private") == "drwx------", when
        assert ls_mode(m.path("images"), "101") == "drwxr-----", when
        assert ls_mode(m.mp, "byprefix") == "drwxr-x---", f"{when}: a prefix-only directory shows dir_mode"
        for parent, name in (("", "private"), ("images", "101")):
            s = os.stat(m.path(parent, name))
            assert st.S_IMODE(s.st_mode) == st.S_IMODE(made[name].st_mode), when
            assert s.st_mtime_ns == made[name].st_mtime_ns, f"{when}: mtime of {name} changed"

    check("at once")
    time.sleep(TTL * 3 + 2)  # every cache has expired; the kernel's too
    check("after the TTLs")
    m.remount()
    check("after a remount")
