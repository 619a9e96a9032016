"""Storage classes by place: which class a new object's key gets, and bad settings."""

from __future__ import annotations

import pytest

from s3pvefs.config import Config, StoreConfig, apply_options, validate
from s3pvefs.errors import ConfigError
from s3pvefs.store.classes import StorageClasses

A = "vzdump-qemu-100-2026_12_06-01_00_00"


def test_class_by_place_longest_first():
    c = StorageClasses.parse("pve", "", "dump=GLACIER_IR template=STANDARD_IA template/iso=ONEZONE_IA")
    assert c.of(f"pve/dump/{A}.vma.zst") == "GLACIER_IR"
    assert c.of(f"pve/dump/{A}.vma.zst.dat") == "GLACIER_IR"  # a rename then copies it there anyway
    assert c.of("pve/template/iso/debian.iso") == "ONEZONE_IA"
    assert c.of("pve/template/cache/debian.tar.zst") == "STANDARD_IA"
    assert c.of("pve/images/100/vm-100-disk-0.raw") is None  # the server's default
    assert c.request_args("pve/images/100/vm-100-disk-0.raw") == {}
    assert c.request_args(f"pve/dump/{A}.vma.zst") == {"StorageClass": "GLACIER_IR"}


def test_side_files_and_markers_stay_in_the_default_class():
    c = StorageClasses.parse("pve", "STANDARD_IA", "dump=GLACIER")
    for side in (f"{A}.log", f"{A}.vma.zst.notes", f"{A}.vma.zst.protected"):
        assert c.of(f"pve/dump/{side}") is None
    assert c.of("pve/dump/") is None and c.of("pve/images/100/") is None
    assert c.of("pve/snippets/hook.pl") == "STANDARD_IA"
    assert c.of("pve/.s3pvefs-zeros") is None


def test_whole_bucket_mount():
    assert StorageClasses.parse("", "", "dump=DEEP_ARCHIVE").of(f"dump/{A}.tar.zst") == "DEEP_ARCHIVE"


@pytest.mark.parametrize("setting, value, says", [
    ("storage_classes", "dump", "'dump' is not DIRECTORY=CLASS"),
    ("storage_classes", "dump=glacier", "'glacier' is not a storage class"),
    ("storage_classes", "dump=GLACIER dump/=STANDARD_IA", "dump is given twice"),
    ("storage_classes", "../x=GLACIER", "not DIRECTORY=CLASS"),
    ("storage_class", "Standard IA", "storage_class: 'Standard IA' is not a storage class"),
])
def test_bad_classes_are_one_line_naming_the_setting(setting, value, says):
    with pytest.raises(ConfigError) as e:
        validate(apply_options(Config(store=StoreConfig(bucket="b")), [f"{setting}={value}"]))
    assert str(e.value).startswith(setting) and says in str(e.value) and "\n" not in str(e.value)
