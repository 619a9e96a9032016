"""The issue's done-when: a Proxmox VE storage layout on BUCKET/pve, a 1 GiB copy that
is in the bucket when `cp` returns, and a vzdump-shaped backup sequence that survives
a remount."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from tests.mount.conftest import sha256_file

pytestmark = pytest.mark.mount

PVE_DIRS = ["dump", "images/100", "template/iso", "template/cache", "snippets", "import"]
PVE_MARKERS = {"pve/dump/", "pve/images/", "pve/images/100/", "pve/template/", "pve/template/iso/",
               "pve/template/cache/", "pve/snippets/", "pve/import/"}


@pytest.fixture(autouse=True)
def _umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def sh(script: str, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-c", "set -euo pipefail; umask 022; " + script], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"{script!r} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def make_layout(m) -> None:
    sh(f"cd {m.mp} && mkdir -p {' '.join(PVE_DIRS)}")
    assert m.keys() == PVE_MARKERS
    for d in PVE_DIRS:
        assert os.path.isdir(m.path(d))


def test_layout_and_1gib_copy(mount, tmp_path):
    m = mount()
    make_layout(m)

    src = tmp_path / "random-1g.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(64):
            chunk = os.urandom(16 << 20)
            h.update(chunk)
            f.write(chunk)
    digest = h.hexdigest()
    size = 1 << 30

    name = "vzdump-qemu-100-2026_11_24-09_00_00.vma"
    sh(f"cp {src} {m.path('dump', name)}")
    # close() committed it: the object is complete in the bucket right after cp returns
    head = m.head(f"dump/{name}")
    assert head["ContentLength"] == size
    assert int(head["Metadata"]["mode"]) == stat.S_IFREG | 0o644
    assert m.sha256(f"dump/{name}") == digest
    assert m.keys() == PVE_MARKERS | {f"pve/dump/{name}"}
    src.unlink()

    assert os.stat(m.path("dump", name)).st_size == size
    assert sha256_file(m.path("dump", name), 8 << 20) == digest  # read back through the mount
    # no multipart upload left behind
    assert not m.s3.list_multipart_uploads(Bucket=m.bucket).get("Uploads")


def snapshot(m, rels) -> dict[str, tuple]:
    out = {}
    for rel in rels:
        s = os.stat(m.path(rel))
        digest = sha256_file(m.path(rel)) if stat.S_ISREG(s.st_mode) else None
        out[rel] = (s.st_mode, s.st_mtime, s.st_size, digest)
    return out


def test_vzdump_sequence_and_remount(mount, tmp_path):
    m = mount()
    make_layout(m)
    base = "vzdump-qemu-100-2026_11_24-10_00_00"
    archive = f"{base}.vma.zst"
    dat = m.path("dump", f"{base}.vma.dat")
    tmpdir = m.path("dump", f"{base}.tmp")

    # 1. list dump/ to count backups
    assert os.listdir(m.path("dump")) == []

    # 3. the config directory: files written as temp + rename
    os.mkdir(tmpdir)
    with open(os.path.join(tmpdir, "qemu-server.conf.tmp"), "w") as f:
        f.write("boot: order=scsi0\ncores: 2\nmemory: 2048\n")
    os.rename(os.path.join(tmpdir, "qemu-server.conf.tmp"), os.path.join(tmpdir, "qemu-server.conf"))
    with open(os.path.join(tmpdir, "qemu-server.fw"), "w") as f:
        f.write("[OPTIONS]\nenable: 0\n")
    assert m.get(f"dump/{base}.tmp/qemu-server.conf").startswith(b"boot:")

    # 4. the data: a compressor writing sequentially into the .dat (O_WRONLY|O_CREAT|O_TRUNC)
    sh(f"( head -c 64M /dev/urandom; {{ yes 'compressible vm data block' | head -c 96M || true; }}; "
       f"head -c 8M /dev/zero ) | zstd -q -T2 -c > {dat}")
    size = os.stat(dat).st_size
    assert size > 64 << 20
    dat_digest = m.sha256(f"dump/{base}.vma.dat")

    # 5. rename to the final name; its size is there at once
    os.rename(dat, m.path("dump", archive))
    assert os.stat(m.path("dump", archive)).st_size == size
    assert not os.path.exists(dat)
    assert m.sha256(f"dump/{archive}") == dat_digest
    sh(f"zstd -q -t {m.path('dump', archive)}")
    # "show configuration": read the start and stop early
    with open(m.path("dump", archive), "rb") as f:
        assert f.read(4) == b"\x28\xb5\x2f\xfd"  # zstd frame magic

    # end of the job: remove the config directory
    shutil.rmtree(tmpdir)
    assert not os.path.exists(tmpdir)

    # 6. the log, copied with cp
    log_src = tmp_path / "task.log"
    log_src.write_text("INFO: starting new backup job\n" * 50 + "INFO: Backup job finished successfully\n")
    sh(f"cp {log_src} {m.path('dump', base + '.log')}")

    # 7. notes: O_EXCL temp file renamed over an existing .notes
    notes = m.path("dump", f"{archive}.notes")
    with open(notes, "w") as f:
        f.write("old notes\n")
    tmp_notes = f"{notes}.tmp.{os.getpid()}"
    fd = os.open(tmp_notes, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"new notes: nightly backup of VM 100\n")
    finally:
        os.close(fd)
    with pytest.raises(FileExistsError):  # O_EXCL of an existing name
        os.close(os.open(tmp_notes, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    os.rename(tmp_notes, notes)
    with open(notes) as f:
        assert f.read() == "new notes: nightly backup of VM 100\n"
    assert m.get(f"dump/{archive}.notes") == b"new notes: nightly backup of VM 100\n"

    # 8. protection: an empty file created read-only
    protected = m.path("dump", f"{archive}.protected")
    os.close(os.open(protected, os.O_CREAT | os.O_RDONLY, 0o644))
    assert os.path.exists(protected) and os.stat(protected).st_size == 0
    assert m.head(f"dump/{archive}.protected")["ContentLength"] == 0

    expected = PVE_MARKERS | {f"pve/dump/{archive}", f"pve/dump/{base}.log", f"pve/dump/{archive}.notes",
                              f"pve/dump/{archive}.protected"}
    assert m.keys() == expected  # no .dat, no .tmp/, no notes temp file left
    for rel in (archive, base + ".log", archive + ".notes", archive + ".protected"):
        assert int(m.meta(f"dump/{rel}")["mode"]) == stat.S_IFREG | 0o644, rel
    assert sorted(os.listdir(m.path("dump"))) == sorted(
        [archive, base + ".log", archive + ".notes", archive + ".protected"])

    # a second backup, then pruning of it: unlink the archive and its side files; rmdir dump fails
    base2 = "vzdump-qemu-100-2026_11_24-11_00_00"
    sh(f"head -c 3M /dev/urandom | zstd -q -c > {m.path('dump', base2 + '.vma.dat')}")
    os.rename(m.path("dump", base2 + ".vma.dat"), m.path("dump", base2 + ".vma.zst"))
    sh(f"cp {log_src} {m.path('dump', base2 + '.log')}")
    assert not os.path.exists(m.path("dump", base2 + ".vma.zst.protected"))
    os.unlink(m.path("dump", base2 + ".vma.zst"))
    os.unlink(m.path("dump", base2 + ".log"))
    with pytest.raises(OSError) as e:
        os.rmdir(m.path("dump"))
    assert e.value.errno == errno.ENOTEMPTY
    assert m.keys() == expected

    rels = ["dump", "images", "images/100", "template/iso", "snippets", f"dump/{archive}", f"dump/{base}.log",
            f"dump/{archive}.notes", f"dump/{archive}.protected"]
    before = snapshot(m, rels)

    m.remount()

    after = snapshot(m, rels)
    for rel in rels:
        mode0, mtime0, size0, digest0 = before[rel]
        mode1, mtime1, size1, digest1 = after[rel]
        assert mode1 == mode0, rel
        assert abs(mtime1 - mtime0) <= 1, rel
        if not stat.S_ISDIR(mode0):
            assert (size1, digest1) == (size0, digest0), rel
    assert after[f"dump/{archive}"][3] == dat_digest
    sh(f"zstd -q -t {m.path('dump', archive)}")
    assert sorted(os.listdir(m.path("dump"))) == sorted(
        [archive, base + ".log", archive + ".notes", archive + ".protected"])
    assert m.keys() == expected

    # the real pruning of the protected backup's files, after the remount
    for rel in (archive, base + ".log", archive + ".notes", archive + ".protected"):
        os.unlink(m.path("dump", rel))
    os.rmdir(m.path("dump"))  # now empty
    assert m.keys() == PVE_MARKERS - {"pve/dump/"}
