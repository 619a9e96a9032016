"""Issue 19 on a real S3 implementation (slow tier, Ceph RGW 16.2 from scripts/ceph-rgw.sh,
configured with SSE-C over http and RGW's "testing" KMS key store), each checked from
the bucket's side with boto3:

- SSE-C: what the mount writes cannot be read without its key nor with another; a
  mount with another key gets EIO and a log line saying so, never garbage;
- SSE-KMS: objects carry aws:kms and the key id, and read back through the mount;
- Object Lock and versioning: archives retained, .protected a legal hold, a locked
  archive's unlink is EACCES with no delete marker, `check` reports what is on.
"""

from __future__ import annotations

import base64
import datetime
import errno
import os
import uuid

import botocore.exceptions
import pytest

from tests.mount.conftest import run_cli

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1 << 20
A = "vzdump-qemu-100-2026_12_06-01_00_00"
ARCHIVE = f"dump/{A}.vma.zst"


def vzdump_archive(m, size: int) -> bytes:
    """As vzdump makes a backup: dump/<archive>.dat written, then renamed; its bytes."""
    os.makedirs(m.path("dump"), exist_ok=True)
    data = os.urandom(size)
    with open(m.path(f"{ARCHIVE}.dat"), "wb") as f:
        f.write(data)
    os.rename(m.path(f"{ARCHIVE}.dat"), m.path(ARCHIVE))
    return data


def key_file(tmp_path, name: str) -> tuple[str, bytes]:
    key = os.urandom(32)
    path = tmp_path / name
    path.write_bytes(base64.b64encode(key) + b"\n")
    path.chmod(0o600)
    return str(path), key


def test_sse_c_on_ceph(ceph_mount, ceph_s3, tmp_path):
    path, key = key_file(tmp_path, "a.key")
    m = ceph_mount(["sse=SSE-C", f"sse_customer_key_file={path}"])
    # multipart through the CRT, then the rename's copy with the source's key
    big, small = vzdump_archive(m, 20 * MiB), b"notes\n"
    with open(m.path(f"{ARCHIVE}.notes"), "wb") as f:  # one PUT
        f.write(small)
    with open(m.path(ARCHIVE), "r+b") as f:  # a rewrite of part: UploadPartCopy with the key
        f.seek(10 * MiB)
        f.write(b"y" * 4096)
    want = big[:10 * MiB] + b"y" * 4096 + big[10 * MiB + 4096:]
    with open(m.path(ARCHIVE), "rb") as f:
        assert f.read() == want

    k = m.key(ARCHIVE)
    with pytest.raises(botocore.exceptions.ClientError):
        ceph_s3.get_object(Bucket=m.bucket, Key=k)  # no key: refused
    with pytest.raises(botocore.exceptions.ClientError):
        ceph_s3.get_object(Bucket=m.bucket, Key=k, SSECustomerAlgorithm="AES256", SSECustomerKey=os.urandom(32))
    got = ceph_s3.get_object(Bucket=m.bucket, Key=k, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == want and got["SSECustomerAlgorithm"] == "AES256"
    notes = ceph_s3.get_object(Bucket=m.bucket, Key=m.key(f"{ARCHIVE}.notes"), SSECustomerAlgorithm="AES256",
                               SSECustomerKey=key)
    assert notes["Body"].read() == small

    # another mount of the same objects with another key: EIO, a clear log line, no bytes
    other_path, _ = key_file(tmp_path, "b.key")
    m.umount()
    m.options = ["sse=SSE-C", f"sse_customer_key_file={other_path}"]
    m.do_mount()
    with pytest.raises(OSError) as e:
        with open(m.path(ARCHIVE), "rb") as f:
            f.read()
    assert e.value.errno == errno.EIO
    log = m.log_text()
    assert "written with another key than this mount's" in log
    assert base64.b64encode(key).decode() not in log


def test_sse_kms_on_ceph(ceph_mount, ceph_s3):
    m = ceph_mount(["sse=aws:kms", "sse_kms_key_id=testkey-1"])
    os.makedirs(m.path("template", "iso"))
    data = os.urandom(12 * MiB)
    with open(m.path("template", "iso", "debian.iso"), "wb") as f:
        f.write(data)
    head = ceph_s3.head_object(Bucket=m.bucket, Key=m.key("template/iso/debian.iso"))
    assert head.get("ServerSideEncryption") == "aws:kms", head
    assert "testkey-1" in head.get("SSEKMSKeyId", ""), head
    assert m.get("template/iso/debian.iso") == data  # the server decrypts for a reader
    with open(m.path("template", "iso", "debian.iso"), "rb") as f:
        assert f.read() == data


def test_object_lock_and_versioning_on_ceph(ceph_mount, ceph_s3, ceph_server):
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    ceph_s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    m = ceph_mount(["object_lock_mode=GOVERNANCE", "object_lock_days=2"], bucket=bucket)
    data = vzdump_archive(m, 6 * MiB)
    with open(m.path(f"dump/{A}.log"), "w") as f:
        f.write("INFO: Finished Backup of VM 100\n")
    head = ceph_s3.head_object(Bucket=bucket, Key=m.key(ARCHIVE))
    assert head.get("ObjectLockMode") == "GOVERNANCE", head
    left = head["ObjectLockRetainUntilDate"] - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=1.9) < left < datetime.timedelta(days=2.1)
    assert not ceph_s3.head_object(Bucket=bucket, Key=m.key(f"dump/{A}.log")).get("ObjectLockMode")

    with pytest.raises(PermissionError):
        os.unlink(m.path(ARCHIVE))
    markers = ceph_s3.list_object_versions(Bucket=bucket, Prefix=m.key(ARCHIVE)).get("DeleteMarkers", [])
    assert [d for d in markers if d["Key"] == m.key(ARCHIVE)] == []  # (the .dat's rename left one)
    assert m.get(ARCHIVE) == data

    os.close(os.open(m.path(f"{ARCHIVE}.protected"), os.O_CREAT | os.O_RDONLY, 0o644))
    hold = ceph_s3.get_object_legal_hold(Bucket=bucket, Key=m.key(ARCHIVE))["LegalHold"]["Status"]
    assert hold == "ON"
    os.unlink(m.path(f"{ARCHIVE}.protected"))
    hold = ceph_s3.get_object_legal_hold(Bucket=bucket, Key=m.key(ARCHIVE))["LegalHold"]["Status"]
    assert hold == "OFF"
    os.unlink(m.path(f"dump/{A}.log"))  # not locked: deleted (a delete marker on this versioned bucket)
    assert not os.path.exists(m.path(f"dump/{A}.log"))

    r = run_cli("check", f"{bucket}/pve", "--endpoint-url", ceph_server)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if "bucket features" in x)
    assert "versioning: Enabled" in line and "Object Lock: on" in line
    assert "noncurrent versions expire after never" in line


def test_storage_class_by_place_on_ceph(ceph_mount, ceph_s3, ceph_server):
    """COLD: a second storage class of the test Ceph's placement target (its own pool)."""
    m = ceph_mount(["storage_classes=dump=COLD"])
    data = vzdump_archive(m, 12 * MiB)
    with open(m.path(f"{ARCHIVE}.notes"), "w") as f:
        f.write("cold\n")
    assert ceph_s3.head_object(Bucket=m.bucket, Key=m.key(ARCHIVE)).get("StorageClass") == "COLD"
    assert ceph_s3.head_object(Bucket=m.bucket, Key=m.key(f"{ARCHIVE}.notes")).get("StorageClass") in (None,
                                                                                                       "STANDARD")
    with open(m.path(ARCHIVE), "rb") as f:
        assert f.read() == data
    r = run_cli("ls", f"{m.bucket}/{m.prefix}", "--endpoint-url", ceph_server)
    assert r.returncode == 0, r.stderr
    assert next(x for x in r.stdout.splitlines() if A in x).rstrip().endswith("COLD")
    r = run_cli("check", f"{m.bucket}/pve", "--endpoint-url", ceph_server, "-o", "storage_class=NOSUCH")
    assert r.returncode == 1
    assert "does not take storage class 'NOSUCH'" in r.stdout


def test_check_names_sse_s3_that_ceph_16_ignores(ceph_mount, ceph_server):
    m = ceph_mount()
    r = run_cli("check", f"{m.bucket}/pve", "--endpoint-url", ceph_server, "-o", "sse=AES256")
    line = next(x for x in r.stdout.splitlines() if "head probe object" in x)
    if line.startswith("PASS"):  # a Ceph that applies SSE-S3 (17 and later, with a KMS)
        assert "AES256" in r.stdout or r.returncode == 0
    else:
        assert r.returncode == 1 and "not encrypted" in line and "ignores it" in line
    r = run_cli("check", f"{m.bucket}/pve", "--endpoint-url", ceph_server, "-o", "sse=aws:kms,sse_kms_key_id=testkey-2")
    assert r.returncode == 0, r.stdout
    assert "copied by UploadPartCopy instead" in next(x for x in r.stdout.splitlines() if "server-side copy" in x)


def test_the_ceph_preset_signs_each_bodys_sha256_and_ceph_checks_it(ceph_mount, ceph_server, ceph_s3):
    """provider = ceph: no Content-MD5 (1.4 CPU-s per GiB here) but the signed SHA-256 of
    each body (0.6), which RGW compares with the body: check's probe part, whose body is
    not the one it signs, is refused; a file written in parts reads back whole."""
    m = ceph_mount(["provider=ceph"])
    r = run_cli("check", f"{m.bucket}/pve", "--endpoint-url", ceph_server, "-o", "provider=ceph")
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if "checksum checked" in x)
    assert line.startswith("PASS") and "differs from its signed SHA-256 was refused" in line, line
    data = os.urandom(40 * MiB)
    with open(m.path("big.bin"), "wb") as f:
        f.write(data)
    assert ceph_s3.get_object(Bucket=m.bucket, Key=m.key("big.bin"))["Body"].read() == data
