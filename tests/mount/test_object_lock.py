"""S3 Object Lock through a real mount (moto, a bucket created with Object Lock),
checked from the bucket's side with boto3: vzdump's archive gets its retention when
it is renamed to its final name (never the .dat, logs or notes); Proxmox's protection
flag is a legal hold; deleting or renaming a locked archive is EACCES and leaves
everything in place (no delete marker hiding it); unlocked files are deleted as
usual; `s3pvefs ls` shows retention and hold; a retention asked of a bucket without
Object Lock stops the mount with one line."""

from __future__ import annotations

import errno
import json
import os
import time
import uuid

import pytest

from tests.mount.conftest import run_cli

pytestmark = pytest.mark.mount

MiB = 1 << 20
A = "vzdump-qemu-100-2026_12_06-01_00_00"
ARCHIVE = f"dump/{A}.vma.zst"


def lock_of(m, rel: str) -> dict:
    head = m.head(rel)
    return {k: head.get(k) for k in ("ObjectLockMode", "ObjectLockRetainUntilDate", "ObjectLockLegalHoldStatus")}


def test_backups_are_retained_and_protection_is_a_legal_hold(mount, s3):
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    m = mount(["object_lock_mode=GOVERNANCE", "object_lock_days=3"], bucket=bucket)
    assert "has Object Lock" in m.log_text()
    os.makedirs(m.path("dump"))
    data = os.urandom(12 * MiB)
    with open(m.path(f"{ARCHIVE}.dat"), "wb") as f:  # vzdump: .dat, then rename
        f.write(data)
    assert lock_of(m, f"{ARCHIVE}.dat")["ObjectLockMode"] is None
    os.rename(m.path(f"{ARCHIVE}.dat"), m.path(ARCHIVE))
    with open(m.path(f"dump/{A}.log"), "w") as f:
        f.write("INFO: Finished Backup of VM 100\n")
    with open(m.path(f"{ARCHIVE}.notes"), "w") as f:
        f.write("before the upgrade\n")

    lock = lock_of(m, ARCHIVE)
    assert lock["ObjectLockMode"] == "GOVERNANCE"
    days = (lock["ObjectLockRetainUntilDate"].timestamp() - time.time()) / 86400
    assert 2.9 < days < 3.1
    for side in (f"dump/{A}.log", f"{ARCHIVE}.notes"):
        assert lock_of(m, side)["ObjectLockMode"] is None
    assert m.get(ARCHIVE) == data

    # prune / rm of a retained archive: EACCES, nothing hidden behind a delete marker
    with pytest.raises(PermissionError) as e:
        os.unlink(m.path(ARCHIVE))
    assert e.value.errno == errno.EACCES
    assert os.path.exists(m.path(ARCHIVE)) and m.get(ARCHIVE) == data
    versions = s3.list_object_versions(Bucket=bucket, Prefix=ARCHIVE)
    assert not versions.get("DeleteMarkers")
    assert "protected by S3 Object Lock: retention GOVERNANCE until" in m.log_text()
    # a rename of it: refused before anything is copied
    with pytest.raises(PermissionError):
        os.rename(m.path(ARCHIVE), m.path("dump/elsewhere.vma.zst"))
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="pve/dump/elsewhere").get("KeyCount")
    assert os.path.exists(m.path(ARCHIVE))

    # Proxmox's protection: <archive>.protected created read-only, zero length
    os.close(os.open(m.path(f"{ARCHIVE}.protected"), os.O_CREAT | os.O_RDONLY, 0o644))
    assert lock_of(m, ARCHIVE)["ObjectLockLegalHoldStatus"] == "ON"
    r = run_cli("ls", f"{bucket}/pve", "--endpoint-url", m.endpoint)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "LOCKED UNTIL" in next(x for x in lines if x.startswith("VMID"))
    row = next(x for x in lines if A in x)
    assert " GOVE " in row and " yes " in row  # retained, held
    doc = json.loads(run_cli("ls", f"{bucket}/pve", "--endpoint-url", m.endpoint, "--json").stdout)
    b = doc["backups"][0]
    assert (b["retention_mode"], b["legal_hold"]) == ("GOVERNANCE", True) and b["retain_until"].endswith("Z")
    os.unlink(m.path(f"{ARCHIVE}.protected"))
    assert lock_of(m, ARCHIVE)["ObjectLockLegalHoldStatus"] == "OFF"

    # unlocked names go as usual (the log, the notes)
    os.unlink(m.path(f"dump/{A}.log"))
    assert not os.path.exists(m.path(f"dump/{A}.log"))


def test_retention_on_a_bucket_without_object_lock_stops_the_mount(mount, s3, tmp_path):
    m = mount()
    m.umount()
    m.options = ["object_lock_mode=COMPLIANCE", "object_lock_days=30"]
    r = run_cli(*m.mount_args())
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert "object_lock_days" in err and "has no Object Lock" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert not os.path.ismount(m.mp)
