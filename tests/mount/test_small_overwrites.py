"""Small overwrites inside an existing file (`dd conv=notrunc` of 512 B, 1 KiB and
4 KiB blocks: scripts that patch files in place, guests' sector writes): the base's
bytes around the cut blocks come fill_size (1 MiB) at a time, so rewriting 1 MiB costs
a few GETs, not one per 4 KiB block. Printed beside s3fs on the same server, same run
(the issue's target: within 1.5x of s3fs's time); the request counts are asserted."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from tests.mount.conftest import run_cli
from tests.mount.test_streaming import sh

pytestmark = pytest.mark.mount

MiB = 1 << 20


def requests(m) -> dict[str, int]:
    r = run_cli("status", m.mp, "--json", "--once")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["requests"]


def rewrite(path: str, patch: str, bs: int, seek_bytes: int) -> float:
    t0 = time.monotonic()
    sh(f"dd if={patch} of={path} bs={bs} seek={seek_bytes // bs} conv=notrunc status=none")
    return time.monotonic() - t0


def test_small_overwrites_cost_a_few_gets_and_match_s3fs(mount, s3fs_mount, tmp_path):
    m = mount()
    base = os.urandom(8 * MiB)
    patch = tmp_path / "patch"
    patch.write_bytes(os.urandom(MiB))
    other = s3fs_mount(m.bucket, m.prefix)
    figures = []
    for bs in (512, 1024, 4096):
        name = f"f{bs}"
        m.put(name, base, Metadata={"mode": "33188"})
        m.put(f"s3fs-{name}", base)
        at = 3 * MiB + 1000 // bs * bs  # not aligned to 4 KiB
        os.stat(m.path(name))
        before = requests(m)
        ours = rewrite(m.path(name), str(patch), bs, at)
        after = requests(m)
        gets = after.get("get_object", 0) - before.get("get_object", 0)
        theirs = rewrite(os.path.join(other, f"s3fs-{name}"), str(patch), bs, at)
        want = bytearray(base)
        want[at:at + MiB] = patch.read_bytes()
        assert hashlib.sha256(m.get(name)).hexdigest() == hashlib.sha256(want).hexdigest()
        assert m.get(f"s3fs-{name}") == bytes(want)
        figures.append((bs, ours, theirs, gets))
        # the edges' windows (1 MiB each) and the rest of the object for the commit's PUT
        assert gets <= 4, f"bs={bs}: {gets} GETs for 1 MiB rewritten"
    print("\n1 MiB rewritten in an 8 MiB file with dd conv=notrunc (moto, same run):")
    for bs, ours, theirs, gets in figures:
        print(f"  bs={bs:>4}: s3pvefs {ours:.2f} s ({gets} GETs), s3fs {theirs:.2f} s, ratio {ours / theirs:.2f}")
