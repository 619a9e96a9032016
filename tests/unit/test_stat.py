"""Attributes <-> s3fs-compatible x-amz-meta-* headers."""

import stat as st

import pytest

from s3pvefs.namespace.stat import (DIR, FILE, SPECIAL, SYMLINK, Defaults, Stat, decode, encode_metadata,
                                    format_time, implicit_dir, kind_of_mode, new_stat, parse_time)
from s3pvefs.store.base import ObjectInfo

LM = 1_600_000_000.25  # LastModified of the test objects
LM_NS = 1_600_000_000_250_000_000
DEFAULTS = Defaults(uid=1000, gid=1001, file_mode=0o640, dir_mode=0o750)


def info(meta, size=42, key="k"):
    return ObjectInfo(key, size, "etag1", LM, meta)


@pytest.mark.parametrize("s", [
    Stat(FILE, st.S_IFREG | 0o640, 1000, 1001, 42, 1_700_000_000_123_456_789,
         1_700_000_001_000_000_000, 1_700_000_002_000_000_001),
    Stat(FILE, st.S_IFREG | 0o4755, 0, 0, 42, 0, 5, 1_000_000_000),
    Stat(SYMLINK, st.S_IFLNK | 0o777, 33, 33, 42, 1, 2, 3),
])
def test_encode_decode_round_trip(s):
    meta = encode_metadata(s)
    assert set(meta) == {"mode", "uid", "gid", "mtime", "ctime", "atime"}
    assert all(isinstance(v, str) for v in meta.values())
    back = decode(info(meta), FILE, DEFAULTS)
    # ctime is never before the object's LastModified (a rename or chmod made it then)
    assert back == s.with_(etag="etag1", ctime_ns=max(s.ctime_ns, LM_NS))


def test_ctime_is_the_later_of_the_header_and_last_modified():
    later = LM_NS + 5_000_000_000
    assert decode(info({"ctime": format_time(later)}), FILE, DEFAULTS).ctime_ns == later
    assert decode(info({"ctime": "5"}), FILE, DEFAULTS).ctime_ns == LM_NS  # copied (renamed) since
    assert decode(info(None), FILE, DEFAULTS).ctime_ns == LM_NS


def test_encode_is_s3fs_format():
    s = Stat(FILE, st.S_IFREG | 0o644, 0, 0, 0, 1_700_000_000_000_000_000, 1_700_000_000_500_000_000, 0)
    meta = encode_metadata(s)
    assert meta["mode"] == str(0o100644)  # decimal st_mode with type bits, as s3fs writes it
    assert meta["mtime"] == "1700000000"  # whole seconds without a fraction
    assert meta["ctime"] == "1700000000.500000000"


def test_round_trip_directory():
    s = new_stat(DIR, 0o700, 5, 6, t_ns=1_700_000_000_000_000_007)
    back = decode(info(encode_metadata(s), size=0, key="d/"), DIR, DEFAULTS)
    assert back == s.with_(etag="etag1")
    assert st.S_ISDIR(back.mode) and back.size == 0


def test_decode_without_metadata_uses_defaults_and_last_modified():
    s = decode(info({}), FILE, DEFAULTS)
    assert s.kind == FILE
    assert s.mode == st.S_IFREG | 0o640
    assert (s.uid, s.gid) == (1000, 1001)
    assert s.size == 42
    assert s.mtime_ns == s.ctime_ns == s.atime_ns == LM_NS
    assert s.complete  # a HEAD with no metadata is the whole truth

    d = decode(info({}, size=0, key="d/"), DIR, DEFAULTS)
    assert d.kind == DIR and d.mode == st.S_IFDIR | 0o750 and d.size == 0


def test_decode_from_list_is_incomplete():
    s = decode(info(None), FILE, DEFAULTS)
    assert not s.complete
    assert s.mode == st.S_IFREG | 0o640 and s.mtime_ns == LM_NS and s.size == 42


def test_rclone_float_mtime():
    s = decode(info({"mtime": "1700000000.5"}), FILE, DEFAULTS)
    assert s.mtime_ns == 1_700_000_000_500_000_000
    assert s.ctime_ns == s.atime_ns == s.mtime_ns  # missing ctime/atime follow mtime


@pytest.mark.parametrize("text,ns", [
    ("1700000000", 1_700_000_000_000_000_000),
    ("1700000000.123456789", 1_700_000_000_123_456_789),
    ("1700000000.1234567891", 1_700_000_000_123_456_789),  # sub-ns digits dropped
    (" 17 ", 17_000_000_000),
    ("0", 0),
])
def test_parse_time(text, ns):
    assert parse_time(text) == ns


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "1e9", "1700000000.x", "--5", ".", "-", "\u00b2", "1.\u00b2"])
def test_parse_time_rejects(text):
    assert parse_time(text) is None


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_000_000_001,
                                -1_500_000_000])
def test_format_parse_round_trip(ns):
    assert parse_time(format_time(ns)) == ns


def test_malformed_headers_fall_back():
    meta = {"mode": "rw-r--r--", "uid": "root", "gid": "", "mtime": "yesterday",
            "ctime": "x", "atime": "1.2.3"}
    s = decode(info(meta), FILE, DEFAULTS)
    assert s.mode == st.S_IFREG | 0o640
    assert (s.uid, s.gid) == (1000, 1001)
    assert s.mtime_ns == s.ctime_ns == s.atime_ns == LM_NS


def test_bare_permission_bits_get_the_keys_type():
    assert decode(info({"mode": str(0o600)}), FILE, DEFAULTS).mode == st.S_IFREG | 0o600
    # a directory key is a directory whatever its mode header says
    d = decode(info({"mode": str(st.S_IFREG | 0o711)}, key="d/"), DIR, DEFAULTS)
    assert d.kind == DIR and d.mode == st.S_IFDIR | 0o711


def test_symlink_mode_makes_a_symlink():
    s = decode(info({"mode": str(st.S_IFLNK | 0o777)}, size=7), FILE, DEFAULTS)
    assert s.kind == SYMLINK and s.size == 7


def test_kind_of_mode_and_helpers():
    assert kind_of_mode(st.S_IFDIR | 0o755) == DIR
    assert kind_of_mode(st.S_IFLNK | 0o777) == SYMLINK
    assert kind_of_mode(st.S_IFREG | 0o644) == FILE
    s = new_stat(FILE, 0o100644 | 0o7000, 1, 2, 9, t_ns=5)
    assert s.mode == st.S_IFREG | 0o7644 and s.size == 9 and s.mtime_ns == s.ctime_ns == s.atime_ns == 5
    d = implicit_dir(DEFAULTS, 7)
    assert d.kind == DIR and d.mode == st.S_IFDIR | 0o750 and (d.uid, d.gid) == (1000, 1001)


def test_headers_that_look_numeric_but_are_not_fall_back():
    # str.isdigit() accepts these; decoding must not raise for them
    s = decode(info({"mtime": "--5", "ctime": "\u00b2", "atime": "1.\u00b2"}), FILE, DEFAULTS)
    assert s.mtime_ns == s.ctime_ns == s.atime_ns == LM_NS


@pytest.mark.parametrize("mode, rdev", [(st.S_IFIFO | 0o644, "0"), (st.S_IFSOCK | 0o600, "0"),
                                        (st.S_IFCHR | 0o600, "259"), (st.S_IFBLK | 0o660, "2065")])
def test_fifos_sockets_and_devices_keep_their_type_and_device(mode, rdev):
    s = decode(info({"mode": str(mode), "rdev": rdev}), FILE, DEFAULTS)
    assert (s.kind, s.mode) == (SPECIAL, mode) and kind_of_mode(mode) == SPECIAL
    assert s.rdev == (int(rdev) if st.S_IFMT(mode) in (st.S_IFCHR, st.S_IFBLK) else 0)
    assert encode_metadata(s)["rdev"] == str(s.rdev)
    d = decode(info({"mode": str(mode)}), DIR, DEFAULTS)  # a marker key is a directory whatever it says
    assert d.kind == DIR and st.S_ISDIR(d.mode)
    assert decode(info({"mode": str(mode), "rdev": "-3"}), FILE, DEFAULTS).rdev == 0


@pytest.mark.parametrize("mode", ["-1", str(1 << 40), str(0o170644), str(0o030644)])
def test_modes_this_filesystem_cannot_serve_become_regular_files(mode):
    s = decode(info({"mode": mode}), FILE, DEFAULTS)
    assert s.kind == FILE and st.S_ISREG(s.mode)
    assert 0 <= s.mode <= 0o177777


# ---- any header values: a Stat the kernel structures can hold, or the defaults

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

from s3pvefs.config import CacheConfig  # noqa: E402
from s3pvefs.fuse.attrs import entry_attributes  # noqa: E402
from s3pvefs.namespace.stat import ID_MAX, RDEV_MAX, SPECIAL_TYPES, TIME_NS_MAX  # noqa: E402

header_values = hs.one_of(
    hs.text(max_size=40),
    hs.integers(-(1 << 80), 1 << 80).map(str),
    hs.floats(allow_nan=True, allow_infinity=True).map(str),
    hs.tuples(hs.integers(-(1 << 40), 1 << 40), hs.integers(0, 10 ** 12)).map(lambda t: f"{t[0]}.{t[1]}"),
    hs.sampled_from(["-1", "4294967295", "4294967296", "-100", "99999999999999", "0o777", "1e9", " 12 ", "²"]),
)


@settings(max_examples=1500, deadline=None)
@given(meta=hs.dictionaries(hs.sampled_from(["mode", "uid", "gid", "mtime", "ctime", "atime", "other"]),
                            header_values),
       kind=hs.sampled_from([FILE, DIR]), last_modified=hs.floats(-1e12, 1e12))
@example(meta={"mode": str(st.S_IFDIR)}, kind=FILE, last_modified=0.0)  # a file key whose header says dir
def test_any_headers_decode_to_attributes_the_kernel_can_take(meta, kind, last_modified):
    s = decode(ObjectInfo("k/" if kind == DIR else "k", 7, "e", last_modified, meta), kind, DEFAULTS)
    assert 0 <= s.uid <= ID_MAX and 0 <= s.gid <= ID_MAX
    assert 0 <= s.mode <= 0o177777 and st.S_IFMT(s.mode) in (st.S_IFREG, st.S_IFDIR, st.S_IFLNK, *SPECIAL_TYPES)
    assert (kind == DIR) == (s.kind == DIR) and 0 <= s.rdev <= RDEV_MAX
    for t in (s.mtime_ns, s.ctime_ns, s.atime_ns):
        assert 0 <= t <= TIME_NS_MAX
    for name, default in (("uid", DEFAULTS.uid), ("gid", DEFAULTS.gid)):
        try:
            ok = 0 <= int(meta.get(name, "x")) <= ID_MAX
        except ValueError:
            ok = False
        if not ok:
            assert getattr(s, name) == default  # malformed or out of range: the mount's default
    entry_attributes(5, s, CacheConfig())  # pyfuse3's structures take it (no OverflowError)


def test_with_is_a_changed_copy_as_dataclasses_replace_makes():
    import dataclasses
    s = new_stat(FILE, 0o640, 5, 6, t_ns=1_700_000_000_000_000_007)
    changed = s.with_(size=9, mtime_ns=11)
    assert changed == dataclasses.replace(s, size=9, mtime_ns=11)
    assert hash(changed) == hash(dataclasses.replace(s, size=9, mtime_ns=11))
    assert s.size == 0 and s.mtime_ns == 1_700_000_000_000_000_007  # the original stays
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.size = 1
    with pytest.raises(TypeError, match="sizee"):
        s.with_(sizee=1)
