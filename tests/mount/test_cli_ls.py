"""`s3pvefs ls`: the real CLI against moto's S3 server, no mount. A realistic bucket
(several VMIDs, protected backups, notes, logs, ISOs, templates, images, odd names)
as a table and as JSON; mistakes give one line on stderr and mount's exit codes,
never a traceback or the secret."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import boto3
import pytest

from tests.mount.conftest import SECRET_KEY, auth_moto, env, free_port, run_cli

A100 = "vzdump-qemu-100-2024_05_01-02_00_13.vma.zst"
A100B = "vzdump-qemu-100-2024_05_08-02_00_11.vma.zst"
A101 = "vzdump-lxc-101-2024_05_01-03_00_00.tar.zst"
A101OLD = "vzdump-lxc-101-2023_12_24-23_59_59.tar.gz"
A102 = "vzdump-openvz-102-2014_01_01-00_00_00.tgz"
A1000 = "vzdump-qemu-1000-2024_05_02-01_00_00.vma"
NOTES = "web server\nbefore the upgrade to bookworm"

FILES = {
    f"dump/{A100}": b"\0" * (3 << 20),
    f"dump/{A100}.notes": NOTES.encode(),
    f"dump/{A100}.protected": b"",
    "dump/vzdump-qemu-100-2024_05_01-02_00_13.log": b"INFO: starting new backup job",
    f"dump/{A100B}": b"\0" * 5000,
    "dump/vzdump-qemu-100-2024_05_08-02_00_11.log": b"INFO: ok",
    f"dump/{A101}": b"x" * 70000,
    f"dump/{A101}.notes": "nightly ✓".encode(),
    f"dump/{A101OLD}": b"x" * 1000,
    f"dump/{A102}": b"x",
    f"dump/{A1000}": b"x" * 123456,
    f"dump/{A1000}.protected": b"",
    "dump/vzdump-qemu-100-2024_05_15-02_00_00.vma.dat": b"partial",  # backup running when the node died
    "dump/vzdump-qemu-100-2024_05_15-02_00_00.tmp/qemu-server.conf": b"memory: 2048",
    "dump/vzdump-qemu-103-2024_04_01-00_00_00.log": b"ERROR: job failed",
    "dump/my-backup.vma.zst": b"m",
    "dump/README.txt": b"hello",
    "template/iso/debian-12.7.0-amd64-netinst.iso": b"i" * 4096,
    "template/iso/virtio-win.ISO": b"i",
    "template/iso/debian.iso.tmp_dwnl.4242": b"i",
    "template/cache/debian-12-standard_12.7-1_amd64.tar.zst": b"t" * 2000,
    "template/cache/alpine-3.20-default_20240908_amd64.tar.xz": b"t",
    "template/cache/broken.tar.lz4": b"t",
    "images/100/vm-100-disk-0.qcow2": b"q" * 10000,
    "images/100/vm-100-cloudinit.qcow2": b"q",
    "images/100/vm-100-state-before_upgrade.raw": b"q",
    "images/101/base-101-disk-0.raw": b"q",
    "images/100/tmp_1234_100/disk.vmdk": b"q",
    "images/lost+found/x.raw": b"q",
    "snippets/hook.pl": b"#!/usr/bin/perl\n",
    "import/win11.ova": b"o",
    "import/bad name.ova": b"o",
    "private/100/etc/hostname": b"ct100",
    "stray.txt": b"s",
}


@pytest.fixture(scope="module")
def bucket(s3):
    name = f"ls-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    for d in ("dump/", "template/", "template/iso/", "template/cache/", "images/", "snippets/", "import/"):
        s3.put_object(Bucket=name, Key=f"pve/{d}", Body=b"", ContentType="application/x-directory")
    for rel, data in FILES.items():
        s3.put_object(Bucket=name, Key=f"pve/{rel}", Body=data)
    s3.put_object(Bucket=name, Key="other/dump/vzdump-qemu-999-2024_05_01-02_00_13.vma", Body=b"not ours")
    return name


def ls(endpoint: str, spec: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli("ls", spec, "--endpoint-url", endpoint, *args, timeout=timeout)


def one_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr, r.stderr
    assert len(err.splitlines()) == 1, r.stderr
    assert err.startswith("s3pvefs: "), r.stderr
    assert SECRET_KEY not in r.stderr + r.stdout
    assert r.stdout == ""
    return err


# ---------------------------------------------------------------------------- output

def test_table(s3_server, bucket):
    r = ls(s3_server, f"{bucket}/pve")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0] == f"Backups in {bucket}/pve/dump/"
    assert lines[1].split() == ["VMID", "TYPE", "DATE", "FORMAT", "COMP", "SIZE", "PROTECTED", "LOG", "ARCHIVE",
                                "NOTES"]
    rows = lines[2:lines.index("")]
    assert [row.split()[-1] if row.split()[0] == "-" else row.split()[0] for row in rows] == \
        ["100", "100", "101", "101", "102", "1000", "my-backup.vma.zst"]  # by VMID, then date
    assert rows[0].split() == ["100", "qemu", "2024-05-01", "02:00:13", "vma", "zst", "3.0", "MiB", "yes", "yes",
                               A100, "web", "server"]  # the first line of the notes
    assert rows[1].split() == ["100", "qemu", "2024-05-08", "02:00:11", "vma", "zst", "4.9", "KiB", "no", "yes",
                               A100B]
    assert rows[2].split() == ["101", "lxc", "2023-12-24", "23:59:59", "tar", "gz", "1000", "B", "no", "no", A101OLD]
    assert rows[3].split() == ["101", "lxc", "2024-05-01", "03:00:00", "tar", "zst", "68.4", "KiB", "no", "no", A101,
                               "nightly", "✓"]
    assert rows[4].split() == ["102", "openvz", "2014-01-01", "00:00:00", "tgz", "gz", "1", "B", "no", "no", A102]
    assert rows[5].split() == ["1000", "qemu", "2024-05-02", "01:00:00", "vma", "none", "121", "KiB", "yes", "no",
                               A1000]
    assert rows[6].split() == ["-", "unknown", "-", "vma", "zst", "1", "B", "no", "no", "my-backup.vma.zst"]
    archive_col = lines[1].index("ARCHIVE")
    assert all(row[archive_col - 2:archive_col] == "  " and row[archive_col] != " " for row in rows)  # aligned

    text = r.stdout
    section = text[text.index("Disk images"):]
    assert "100   cloudinit" in section and "100   disk 0" in section and "vmstate before_upgrade" in section
    assert "101   disk 0 (base)" in section and "base-101-disk-0.raw" in section
    assert "debian-12.7.0-amd64-netinst.iso" in text and "virtio-win.ISO" in text
    assert "debian-12-standard_12.7-1_amd64.tar.zst" in text and "alpine-3.20-default_20240908_amd64.tar.xz" in text
    assert "hook.pl" in text and "win11.ova" in text
    other = text[text.index("Other objects"):]
    for path in ("dump/README.txt", "dump/vzdump-qemu-100-2024_05_15-02_00_00.tmp/",
                 "dump/vzdump-qemu-100-2024_05_15-02_00_00.vma.dat", "dump/vzdump-qemu-103-2024_04_01-00_00_00.log",
                 "images/100/tmp_1234_100/", "images/lost+found/", "import/bad name.ova", "private/", "stray.txt",
                 "template/cache/broken.tar.lz4", "template/iso/debian.iso.tmp_dwnl.4242"):
        assert path in other, path
    assert "unfinished backup" in other and "job log of a backup that is not there" in other
    assert "vzdump-qemu-999" not in text  # outside the prefix
    assert lines[-1] == ("7 backups (2 protected) of 4 guests, 3.2 MiB; 4 disk images; 2 ISO images; "
                         "2 container templates; 1 snippet; 1 import file; 11 other")


def test_json(s3_server, bucket):
    r = ls(s3_server, f"{bucket}/pve", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert (doc["schema"], doc["bucket"], doc["prefix"]) == ("s3pvefs-ls/1", bucket, "pve")
    backups = {b["name"]: b for b in doc["backups"]}
    assert [b["name"] for b in doc["backups"]] == [A100, A100B, A101OLD, A101, A102, A1000, "my-backup.vma.zst"]
    b = backups[A100]
    assert {k: b[k] for k in ("path", "volname", "vmid", "guest", "date", "format", "compression", "size",
                              "protected", "log", "notes", "notes_truncated", "standard_name")} == {
        "path": f"dump/{A100}", "volname": f"backup/{A100}", "vmid": 100, "guest": "qemu",
        "date": "2024-05-01T02:00:13", "format": "vma", "compression": "zst", "size": 3 << 20,
        "protected": True, "log": True, "notes": NOTES, "notes_truncated": False, "standard_name": True}
    assert b["last_modified"].endswith("Z")
    assert backups[A101]["notes"] == "nightly ✓" and backups[A101]["protected"] is False
    assert (backups[A102]["format"], backups[A102]["compression"], backups[A102]["guest"]) == ("tgz", "gz", "openvz")
    assert (backups[A1000]["compression"], backups[A1000]["protected"]) == (None, True)
    assert backups["my-backup.vma.zst"]["vmid"] is None and backups["my-backup.vma.zst"]["guest"] is None
    assert [(i["vmid"], i["name"], i["kind"], i["format"], i["base"]) for i in doc["images"]] == [
        (100, "vm-100-cloudinit.qcow2", "cloudinit", "qcow2", False),
        (100, "vm-100-disk-0.qcow2", "disk", "qcow2", False),
        (100, "vm-100-state-before_upgrade.raw", "vmstate", "raw", False),
        (101, "base-101-disk-0.raw", "disk", "raw", True)]
    assert doc["images"][2]["snapshot"] == "before_upgrade"
    assert sorted(i["volname"] for i in doc["isos"]) == ["iso/debian-12.7.0-amd64-netinst.iso", "iso/virtio-win.ISO"]
    assert sorted((t["name"], t["compression"]) for t in doc["templates"]) == [
        ("alpine-3.20-default_20240908_amd64.tar.xz", "xz"), ("debian-12-standard_12.7-1_amd64.tar.zst", "zst")]
    assert [s["volname"] for s in doc["snippets"]] == ["snippets/hook.pl"]
    assert [(i["name"], i["format"]) for i in doc["imports"]] == [("win11.ova", "ova")]
    other = {o["path"]: o for o in doc["other"]}
    assert len(other) == 11
    assert other["private/"]["directory"] is True and other["private/"]["size"] is None
    assert other["dump/vzdump-qemu-100-2024_05_15-02_00_00.vma.dat"]["size"] == 7
    assert "unfinished backup" in other["dump/vzdump-qemu-100-2024_05_15-02_00_00.vma.dat"]["reason"]


def test_settings_from_a_config_file_and_o(s3_server, bucket, tmp_path):
    """The same store options as mount: --config, -o name=value, mount-only words ignored."""
    cfg = tmp_path / "s3pvefs.toml"
    cfg.write_text(f'[store]\nendpoint_url = "{s3_server}"\nmax_attempts = 2\n')
    r = run_cli("ls", f"{bucket}/pve", "--config", str(cfg), "--json", "-o", "read_timeout=30,allow_other,_netdev")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["backups"]) == 7


def test_whole_bucket_and_wrong_prefix(s3_server, bucket):
    r = ls(s3_server, bucket, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["prefix"] == "" and doc["backups"] == []
    assert sorted(o["path"] for o in doc["other"]) == ["other/", "pve/"]
    r = ls(s3_server, f"{bucket}/nothing-here")
    assert r.returncode == 0, r.stderr
    assert f"Nothing under {bucket}/nothing-here/" in r.stdout


# ---------------------------------------------------------------------------- errors

def test_missing_bucket_is_exit_4(s3_server):
    r = ls(s3_server, "no-such-bucket-s3pvefs-ls/pve")
    assert r.returncode == 4, r.stderr
    err = one_line(r)
    assert "no-such-bucket-s3pvefs-ls" in err and "does not exist" in err


def test_unreachable_endpoint_is_exit_5():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    r = ls(endpoint, "bucket/pve", timeout=60)  # the default retries: still within 5 s
    assert time.monotonic() - t0 < 5
    assert r.returncode == 5, r.stderr
    err = one_line(r)
    assert "cannot reach" in err and endpoint in err


@pytest.mark.parametrize("args, words", [
    (["-o", "no_such_option=1"], ["no_such_option", "unknown"]),
    (["-o", "bogus"], ["bogus", "unknown"]),
    (["-o", "max_attempts=many"], ["max_attempts"]),
    (["--config", "/nonexistent/s3pvefs.toml"], ["no such file"]),
    (["--endpoint-url", "not a url"], ["endpoint_url"]),
    (["--region", "bad region!"], ["region"]),
])
def test_bad_option_is_exit_2(s3_server, bucket, args, words):
    r = run_cli("ls", f"{bucket}/pve", *(["--endpoint-url", s3_server] if "--endpoint-url" not in args else []),
                *args)
    assert r.returncode == 2, r.stderr
    err = one_line(r)
    for w in words:
        assert w in err


def test_bad_bucket_name_is_exit_2(s3_server):
    r = ls(s3_server, "bad bucket!/pve")
    assert r.returncode == 2, r.stderr
    one_line(r)


def test_unknown_profile_is_exit_2(s3_server, bucket, tmp_path):
    e = {**env(), "AWS_CONFIG_FILE": str(tmp_path / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "c")}
    r = subprocess.run([sys.executable, "-m", "s3pvefs", "ls", f"{bucket}/pve", "--endpoint-url", s3_server,
                        "--profile", "nope"], env=e, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "profile 'nope' not found" in one_line(r)


@pytest.mark.parametrize("extra", [{}, {"AWS_EC2_METADATA_DISABLED": "true"}, {"AWS_ACCESS_KEY_ID": "AKIA1"}])
def test_no_credentials_is_exit_3(s3_server, bucket, tmp_path, extra):
    e = {k: v for k, v in env().items() if not k.startswith("AWS_")}
    e.update(AWS_CONFIG_FILE=str(tmp_path / "config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
             **extra)
    r = subprocess.run([sys.executable, "-m", "s3pvefs", "ls", f"{bucket}/pve", "--endpoint-url", s3_server],
                       env=e, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "credentials" in one_line(r)


@pytest.fixture(scope="module")
def auth_server():
    """(endpoint, {user: (key id, secret)}): "pve" may do anything in S3, "lister"
    anything but read objects (GetObject)."""
    with auth_moto({"pve": [], "lister": ["s3:GetObject"]}, setup_requests=3) as (endpoint, keys, setup_kw):
        s3 = boto3.client("s3", **setup_kw)
        s3.create_bucket(Bucket="authbucket")
        s3.put_object(Bucket="authbucket", Key=f"pve/dump/{A100}", Body=b"x")
        s3.put_object(Bucket="authbucket", Key=f"pve/dump/{A100}.notes", Body=b"notes")
        yield endpoint, keys


def _ls_as(endpoint: str, key_id: str, secret: str, *args: str) -> subprocess.CompletedProcess:
    e = {**env(), "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    return subprocess.run([sys.executable, "-m", "s3pvefs", "ls", "authbucket/pve", "--endpoint-url", endpoint,
                           *args], env=e, capture_output=True, text=True, timeout=60)


def test_wrong_secret_is_exit_3_and_never_shown(auth_server):
    endpoint, keys = auth_server
    wrong = "WrongSecretWrongSecretWrongSecret0123456"
    r = _ls_as(endpoint, keys["pve"][0], wrong)
    assert r.returncode == 3, r.stderr
    err = one_line(r)
    assert "denied" in err and "credentials" in err
    assert wrong not in r.stderr + r.stdout
    r = _ls_as(endpoint, keys["pve"][0], wrong, "--debug")  # not even in debug logs
    assert r.returncode == 3 and wrong not in r.stderr + r.stdout


def test_right_secret_lists(auth_server):
    endpoint, keys = auth_server
    key_id, secret = keys["pve"]
    r = _ls_as(endpoint, key_id, secret, "--json", "--debug")
    assert r.returncode == 0, r.stderr
    assert [(b["name"], b["notes"]) for b in json.loads(r.stdout)["backups"]] == [(A100, "notes")]
    assert secret not in r.stderr + r.stdout


def test_denied_after_the_bucket_check_is_exit_3(auth_server):
    """The bucket answers HEAD and LIST, but reading the notes is denied."""
    endpoint, keys = auth_server
    key_id, secret = keys["lister"]
    r = _ls_as(endpoint, key_id, secret)
    assert r.returncode == 3, r.stderr
    err = one_line(r)
    assert "listing bucket 'authbucket'" in err and "denied" in err and secret not in err
