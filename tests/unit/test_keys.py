"""Name checks and the path <-> key mapping."""

import errno

import pytest

from s3pvefs.errors import InvalidName, NameTooLong
from s3pvefs.namespace.keys import KEY_MAX, NAME_MAX, KeyMapper, check_name, listable_name


def test_check_name_ok():
    assert check_name(b"vzdump-qemu-100.vma.zst") == "vzdump-qemu-100.vma.zst"
    assert check_name("é".encode()) == "é"
    assert check_name(b"a" * NAME_MAX) == "a" * NAME_MAX
    assert check_name(b"...") == "..."
    assert check_name(b" x ") == " x "


def test_check_name_too_long():
    with pytest.raises(NameTooLong) as e:
        check_name(b"a" * (NAME_MAX + 1))
    assert e.value.errno == errno.ENAMETOOLONG
    # the limit is in bytes, not characters: 128 two-byte characters are 256 bytes
    with pytest.raises(NameTooLong):
        check_name(("é" * 128).encode())
    assert check_name(("é" * 127).encode()) == "é" * 127


@pytest.mark.parametrize("raw", [b"", b".", b"..", b"a/b", b"/", b"a\0b", b"\xff\xfe", b"caf\xe9"])
def test_check_name_invalid(raw):
    with pytest.raises(InvalidName) as e:
        check_name(raw)
    assert e.value.errno == errno.EINVAL


def test_listable_name():
    assert listable_name("a")
    assert not listable_name("")
    assert not listable_name(".") and not listable_name("..")
    assert not listable_name("x" * 256)
    assert not listable_name("a\0")


def test_keymapper_with_prefix():
    k = KeyMapper("pve/host1")
    assert k.key("") == "pve/host1/"
    assert k.key("dump/a.vma") == "pve/host1/dump/a.vma"
    assert k.dir_prefix("") == "pve/host1/"
    assert k.dir_prefix("dump") == "pve/host1/dump/"
    assert k.dir_prefix("dump/sub") == "pve/host1/dump/sub/"
    assert k.path_of_key("pve/host1/dump/a.vma") == "dump/a.vma"


def test_keymapper_without_prefix():
    k = KeyMapper("")
    assert k.key("a") == "a"
    assert k.key("dump/a") == "dump/a"
    assert k.dir_prefix("") == ""
    assert k.dir_prefix("dump") == "dump/"
    assert k.path_of_key("dump/a") == "dump/a"


def test_key_length_limit_counts_bytes_and_prefix():
    k = KeyMapper("p")  # root "p/" = 2 bytes
    assert len(k.key("a" * (KEY_MAX - 2))) == KEY_MAX
    with pytest.raises(NameTooLong) as e:
        k.key("a" * (KEY_MAX - 1))
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(NameTooLong):
        KeyMapper("").key("é" * 513)  # 1026 bytes
    assert KeyMapper("").key("é" * 512) == "é" * 512
