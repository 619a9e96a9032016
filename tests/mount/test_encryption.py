"""Server-side encryption through a real mount (moto), checked with boto3 from the
bucket's side: every way an object is made (one PUT, a multipart upload, a rename's
copy, a directory marker) carries the mount's sse settings."""

from __future__ import annotations

import os

import pytest

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
