"""Hypothesis fuzzing of the name <-> key mapping and of the config parser: any input
gives either a value that round-trips or the one error type the user sees as a
clear message (never another exception)."""

from __future__ import annotations

import tomllib

from hypothesis import given, settings
from hypothesis import strategies as hs

from s3pvefs.config import Config, apply_options, load_file, validate
from s3pvefs.errors import ConfigError, FsError
from s3pvefs.namespace.keys import KEY_MAX, NAME_MAX, RESERVED_NAMES, KeyMapper, check_name, listable_name

names = hs.one_of(hs.binary(max_size=300), hs.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))


@settings(max_examples=500)
@given(raw=names, prefix=hs.sampled_from(["", "pve", "a/b/c"]), depth=hs.integers(0, 3))
def test_names_map_to_keys_and_back_or_fail_cleanly(raw, prefix, depth):
    try:
        name = check_name(raw)
    except FsError as e:  # ENAMETOOLONG / EINVAL with a message
        assert e.errno and str(e)
        assert len(raw) > NAME_MAX or raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw or \
            _not_utf8(raw) or raw.decode() in RESERVED_NAMES
        return
    assert "/" not in name and "\0" not in name and name.encode() == raw
    assert listable_name(name)  # what this mount writes, it lists
    m = KeyMapper(prefix)
    path = "/".join(["d"] * depth + [name])
    try:
        key = m.key(path)
    except FsError as e:
        assert len((m.root + path).encode()) > KEY_MAX and e.errno
        return
    assert m.path_of_key(key) == path
    assert m.dir_prefix(path) == key + "/"
    assert key.rpartition("/")[2] == name


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


toml_values = hs.one_of(hs.integers(-10, 10 ** 12), hs.floats(allow_nan=False, allow_infinity=False),
                        hs.booleans(), hs.text(hs.characters(blacklist_categories=("Cs",)), max_size=12), hs.sampled_from(["64M", "1G", "0644", "when_required",
                                                                              "r2", "path", "-1", "5T"]))
sections = hs.sampled_from(["store", "cache", "write", "read", "mount", "bogus"])
keys = hs.sampled_from(["bucket", "provider", "stat_ttl", "memory_budget", "min_part_size", "max_part_size",
                        "uniform_parts", "chunk_size", "capacity", "file_mode", "usage_interval", "sync_interval",
                        "credentials_file", "request_deadline", "nonsense"])


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7f or c in '"\\' else c for c in v)
        return f'"{escaped}"'
    return repr(v)


@settings(max_examples=400, deadline=None)
@given(entries=hs.lists(hs.tuples(sections, keys, toml_values), max_size=6))
def test_config_files_parse_or_name_the_mistake(tmp_path_factory, entries):
    tables: dict[str, dict[str, object]] = {}
    for section, key, value in entries:
        tables.setdefault(section, {})[key] = value
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in t.items()) for s, t in tables.items())
    path = tmp_path_factory.mktemp("cfg") / "f.toml"
    path.write_text(text)
    tomllib.loads(text)  # the generator writes valid TOML
    try:
        config = validate(load_file(str(path)))
    except ConfigError as e:  # one line; a mistake in the file names the file and the key
        message = str(e)
        assert message and "\n" not in message
        bad_key = any(k == "nonsense" for _, k, _ in entries) or "bogus" in tables
        if bad_key:
            assert str(path) in message
        return
    assert isinstance(config, Config)


@settings(max_examples=400)
@given(words=hs.lists(hs.text(alphabet="abcdefghijklmnopqrstuvwxyz_=0123456789MGK.,", max_size=30), max_size=5))
def test_mount_options_apply_or_name_the_mistake(words):
    try:
        apply_options(Config(), words)
    except ConfigError as e:
        assert "\n" not in str(e)
