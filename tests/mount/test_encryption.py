"""Server-side encryption through a real mount (moto), checked with boto3 from the
bucket's side: every way an object is made (one PUT, a multipart upload, a rename's
copy, a directory marker) carries the mount's sse settings."""

from __future__ import annotations

import base64
import os

import pytest

from tests.mount.conftest import run_cli

pytestmark = pytest.mark.mount

MiB = 1 << 20


@pytest.mark.parametrize("options, want", [
    (["sse=AES256"], {"ServerSideEncryption": "AES256"}),
    (["sse=aws:kms", "sse_kms_key_id=alias/proxmox-backups", "sse_bucket_key=true"],
     {"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": True}),
])
def test_every_new_object_is_encrypted_as_configured(mount, options, want):
    m = mount(options)
    os.makedirs(m.path("dump"))
    big = os.urandom(12 * MiB)  # streamed: a multipart upload
    with open(m.path("dump", "a.vma.dat"), "wb") as f:
        f.write(big)
    os.rename(m.path("dump", "a.vma.dat"), m.path("dump", "a.vma"))  # CopyObject
    with open(m.path("dump", "a.log"), "w") as f:  # one PUT
        f.write("done\n")
    for rel in ("dump/a.vma", "dump/a.log", "dump/"):
        head = m.head(rel)
        assert {k: head.get(k) for k in want} == want, (rel, head)
        if "sse_kms_key_id=alias/proxmox-backups" in options:
            assert "proxmox-backups" in head.get("SSEKMSKeyId", ""), (rel, head)
    assert m.get("dump/a.vma") == big
    with open(m.path("dump", "a.vma"), "rb") as f:
        assert f.read() == big


def test_sse_c_requests_carry_the_key_and_never_log_it(mount, tmp_path):
    """moto accepts SSE-C's headers without checking them: what it shows here is that
    every path (PUT, multipart through the CRT, ranged GETs, HEADs, a rename's copy, a
    rewrite's UploadPartCopy) works with them, and that the key is in no log line. That
    a wrong key is refused is tested on Ceph RGW (test_ceph_bucket_features.py)."""
    key = os.urandom(32)
    key_file = tmp_path / "ssec.key"
    key_file.write_bytes(base64.b64encode(key) + b"\n")
    key_file.chmod(0o600)
    m = mount(["sse=SSE-C", f"sse_customer_key_file={key_file}", "min_part_size=5M", "max_part_size=5M",
               "multipart_threshold=8M", "listing_heads=true"])
    os.makedirs(m.path("images", "100"))
    disk = bytearray(os.urandom(24 * MiB))
    with open(m.path("images", "100", "vm-100-disk-0.raw"), "wb") as f:
        f.write(disk)
    with open(m.path("images", "100", "vm-100-disk-0.raw"), "r+b") as f:  # a rewrite: UploadPartCopy
        f.seek(20 * MiB)
        f.write(b"x" * 4096)
    disk[20 * MiB:20 * MiB + 4096] = b"x" * 4096
    os.rename(m.path("images", "100", "vm-100-disk-0.raw"), m.path("images", "100", "vm-100-disk-1.raw"))
    with open(m.path("images", "100", "vm-100-disk-1.raw"), "rb") as f:
        assert f.read() == disk
    assert sorted(os.listdir(m.path("images", "100"))) == ["vm-100-disk-1.raw"]
    log = m.log_text()
    assert base64.b64encode(key).decode() not in log and key.hex() not in log
    r = run_cli("status", m.mp, "--json", "--once")
    assert base64.b64encode(key).decode() not in r.stdout
