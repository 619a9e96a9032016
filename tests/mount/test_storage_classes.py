"""Storage classes by place through a real mount (moto), checked from the bucket's side
with boto3: vzdump's .dat renamed to its archive name lands in dump/'s class, its log
and notes stay STANDARD, an ISO gets template/iso's class, the rest the default; an
object in GLACIER is listed with its size and reading it is a quick EIO with a log line
saying what to run; `s3pvefs ls` shows the classes."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from tests.mount.conftest import run_cli

pytestmark = pytest.mark.mount

MiB = 1 << 20
A = "vzdump-qemu-100-2026_12_06-01_00_00"


def storage_class(m, rel: str) -> str:
    return m.head(rel).get("StorageClass", "STANDARD")


def test_classes_by_place_and_archived_objects(mount, tmp_path):
    m = mount(["storage_classes=dump=STANDARD_IA;template/iso=ONEZONE_IA"])
    # An archived object (GLACIER) another tool put there.
    frozen = "vzdump-qemu-101-2025_01_01-01_00_00.vma.zst"
    m.put(f"dump/{frozen}", os.urandom(3 * MiB), StorageClass="GLACIER", Metadata={"mode": "33188"})
    for d in ("dump", "template/iso", "images/100"):
        os.makedirs(m.path(d), exist_ok=True)
    archive = os.urandom(12 * MiB)  # streamed: a multipart upload, then the rename's copy
    with open(m.path("dump", f"{A}.vma.zst.dat"), "wb") as f:
        f.write(archive)
    os.rename(m.path("dump", f"{A}.vma.zst.dat"), m.path("dump", f"{A}.vma.zst"))
    with open(m.path("dump", f"{A}.log"), "w") as f:
        f.write("INFO: Finished Backup of VM 100\n")
    with open(m.path("dump", f"{A}.vma.zst.notes"), "w") as f:
        f.write("before the upgrade\n")
    with open(m.path("template", "iso", "debian.iso"), "wb") as f:
        f.write(os.urandom(MiB))
    with open(m.path("images", "100", "vm-100-disk-0.raw"), "wb") as f:
        f.write(os.urandom(MiB))

    assert storage_class(m, f"dump/{A}.vma.zst") == "STANDARD_IA"
    assert m.get(f"dump/{A}.vma.zst") == archive
    assert storage_class(m, f"dump/{A}.log") == "STANDARD"
    assert storage_class(m, f"dump/{A}.vma.zst.notes") == "STANDARD"
    assert storage_class(m, "template/iso/debian.iso") == "ONEZONE_IA"
    assert storage_class(m, "images/100/vm-100-disk-0.raw") == "STANDARD"

    # The archived object: listed with its size, not readable.
    assert frozen in os.listdir(m.path("dump"))
    assert os.stat(m.path("dump", frozen)).st_size == 3 * MiB
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        with open(m.path("dump", frozen), "rb") as f:
            f.read()
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 < 10
    log = m.log_text()
    assert "archive storage class" in log and "restore-object" in log and frozen in log
    # a content view still works: the others' notes and logs are read
    with open(m.path("dump", f"{A}.vma.zst.notes")) as f:
        assert f.read() == "before the upgrade\n"

    r = run_cli("ls", f"{m.bucket}/{m.prefix}", "--endpoint-url", m.endpoint)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert next(x for x in lines if x.startswith("VMID")).endswith("CLASS")
    assert next(x for x in lines if frozen in x).endswith("GLACIER")
    assert next(x for x in lines if x.endswith(f"{A}.vma.zst") or f"{A}.vma.zst " in x).rstrip() \
        .split()[-1] in ("STANDARD_IA", "upgrade")  # NOTES may follow the name
    doc = json.loads(run_cli("ls", f"{m.bucket}/{m.prefix}", "--endpoint-url", m.endpoint, "--json").stdout)
    classes = {b["name"]: b["storage_class"] for b in doc["backups"]}
    assert classes == {f"{A}.vma.zst": "STANDARD_IA", frozen: "GLACIER"}
    assert {i["name"]: i["storage_class"] for i in doc["isos"]} == {"debian.iso": "ONEZONE_IA"}
