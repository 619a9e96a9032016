"""Config: TOML loading, sizes, -o options, bucket spec, validation."""

from dataclasses import fields

import pytest

from s3pvefs.config import (GiB, KiB, MiB, PiB, TiB, CacheConfig, Config, MountOptions, ReadConfig,
                            StoreConfig, WriteConfig, apply_options, load_file, parse_size,
                            split_bucket, validate)
from s3pvefs.errors import ConfigError


def write_toml(tmp_path, text):
    p = tmp_path / "s3pvefs.toml"
    p.write_text(text)
    return str(p)


# ----------------------------------------------------------------- parse_size
@pytest.mark.parametrize("text,expected", [
    ("4096", 4096), ("0", 0), ("64M", 64 * MiB), ("64m", 64 * MiB), ("2K", 2 * KiB),
    ("1.5G", 3 * GiB // 2), ("1T", TiB), ("1TiB", TiB), ("10MB", 10 * MiB), ("1P", PiB),
    (" 8 M ", 8 * MiB),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1X", "M", "1.2.3G", "64 MiBs"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


# ----------------------------------------------------------------- load_file
def test_load_full_file(tmp_path):
    path = write_toml(tmp_path, """
[store]
bucket = "pve-backups"
prefix = "host1"
endpoint_url = "http://127.0.0.1:9000"
max_attempts = 7
connect_timeout = 3

[cache]
stat_ttl = 30.0
cache_dir = "/var/tmp/x"

[write]
multipart_threshold = "128M"
min_part_size = 16777216

[read]
chunk_size = "4M"

[mount]
allow_other = true
file_mode = "0600"
dir_mode = 0o700
capacity = "10T"
""")
    cfg = load_file(path)
    assert cfg.store.bucket == "pve-backups" and cfg.store.prefix == "host1"
    assert cfg.store.endpoint_url == "http://127.0.0.1:9000"
    assert cfg.store.max_attempts == 7
    assert cfg.store.connect_timeout == 3.0 and isinstance(cfg.store.connect_timeout, float)
    assert cfg.cache.stat_ttl == 30.0 and cfg.cache.cache_dir == "/var/tmp/x"
    assert cfg.cache.negative_ttl == CacheConfig().negative_ttl  # untouched default
    assert cfg.write.multipart_threshold == 128 * MiB
    assert cfg.write.min_part_size == 16 * MiB
    assert cfg.read.chunk_size == 4 * MiB
    assert cfg.mount.allow_other is True
    assert cfg.mount.file_mode == 0o600 and cfg.mount.dir_mode == 0o700
    assert cfg.mount.capacity == 10 * TiB


def test_empty_file_gives_defaults(tmp_path):
    assert load_file(write_toml(tmp_path, "")) == Config()


def test_unknown_section_names_file_and_section(tmp_path):
    path = write_toml(tmp_path, "[stor]\nbucket = 'x'\n")
    with pytest.raises(ConfigError) as e:
        load_file(path)
    assert path in str(e.value) and "[stor]" in str(e.value)


def test_unknown_key_names_file_and_key(tmp_path):
    path = write_toml(tmp_path, "[cache]\nstat_tll = 5\n")
    with pytest.raises(ConfigError) as e:
        load_file(path)
    msg = str(e.value)
    assert path in msg and "cache.stat_tll" in msg and "unknown" in msg


@pytest.mark.parametrize("section,line,key,expected", [
    ("cache", 'stat_ttl = "soon"', "cache.stat_ttl", "float"),
    ("store", "max_attempts = true", "store.max_attempts", "int"),
    ("store", "max_attempts = 'five'", "store.max_attempts", "int"),
    ("store", "bucket = 5", "store.bucket", "str"),
    ("store", "endpoint_url = 5", "store.endpoint_url", "str"),
    ("mount", "allow_other = 'perhaps'", "mount.allow_other", "bool"),
    ("write", "min_part_size = 'big'", "write.min_part_size", "size"),
    ("write", "min_part_size = true", "write.min_part_size", "size"),
    ("mount", "file_mode = 'rw-r--r--'", "mount.file_mode", "octal"),
])
def test_wrong_type_names_file_key_and_type(tmp_path, section, line, key, expected):
    path = write_toml(tmp_path, f"[{section}]\n{line}\n")
    with pytest.raises(ConfigError) as e:
        load_file(path)
    msg = str(e.value)
    assert path in msg and key in msg and f"expected {expected}" in msg


def test_section_not_a_table(tmp_path):
    path = write_toml(tmp_path, "store = 5\n")
    with pytest.raises(ConfigError, match="expected a table"):
        load_file(path)


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_file(str(tmp_path / "nope.toml"))
    path = write_toml(tmp_path, "[store\n")
    with pytest.raises(ConfigError, match="not valid TOML") as e:
        load_file(path)
    assert path in str(e.value)


# ----------------------------------------------------------------- apply_options
def test_apply_options_words():
    cfg = apply_options(Config(), ["allow_other", "ro", "uid=1000", "gid=1001", "file_mode=0600",
                                   "dir_mode=0700", "capacity=1T", "stat_ttl=2.5",
                                   "multipart_threshold=32M", "endpoint_url=http://x:9000"])
    m = cfg.mount
    assert m.allow_other is True and m.read_only is True
    assert (m.uid, m.gid) == (1000, 1001)
    assert m.file_mode == 0o600 and m.dir_mode == 0o700
    assert m.capacity == TiB
    assert cfg.cache.stat_ttl == 2.5
    assert cfg.write.multipart_threshold == 32 * MiB
    assert cfg.store.endpoint_url == "http://x:9000"


def test_apply_options_keeps_other_settings():
    base = Config(store=StoreConfig(bucket="b", prefix="p"), mount=MountOptions(uid=5))
    cfg = apply_options(base, ["gid=7"])
    assert cfg.store == base.store and cfg.mount.uid == 5 and cfg.mount.gid == 7


def test_every_setting_has_its_own_option_name():
    """'-o name=value' has no section: a name in two sections would set only one of them."""
    names = [f.name for section in fields(Config) for f in fields(section.default_factory)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    cfg = apply_options(Config(), ["memory_budget=32M", "readahead_budget=16M"])
    assert (cfg.write.memory_budget, cfg.read.readahead_budget) == (32 * MiB, 16 * MiB)


def test_apply_options_ignores_fstab_words():
    assert apply_options(Config(), ["rw", "defaults", "_netdev", "nofail", "noatime", "", " "]) == Config()


def test_apply_options_bool_values():
    assert apply_options(Config(), ["read_only=yes"]).mount.read_only is True
    assert apply_options(Config(mount=MountOptions(read_only=True)), ["read_only=0"]).mount.read_only is False


@pytest.mark.parametrize("word", ["nonsense", "nonsense=1", "bucket=other", "prefix=x", "allow_other=maybe"])
def test_apply_options_unknown_or_bad(word):
    with pytest.raises(ConfigError) as e:
        apply_options(Config(), [word])
    assert word.partition("=")[0] in str(e.value)


def test_apply_options_wrong_type_names_option():
    with pytest.raises(ConfigError, match=r"-o uid: expected int"):
        apply_options(Config(), ["uid=root"])
    with pytest.raises(ConfigError, match=r"-o file_mode: expected octal"):
        apply_options(Config(), ["file_mode=0999"])
    with pytest.raises(ConfigError, match=r"-o capacity: expected size"):
        apply_options(Config(), ["capacity=lots"])


# ----------------------------------------------------------------- split_bucket
@pytest.mark.parametrize("spec,expected", [
    ("bucket", ("bucket", "")),
    ("bucket/", ("bucket", "")),
    ("bucket/some/prefix/", ("bucket", "some/prefix")),
    ("my.bucket-1//a//b/", ("my.bucket-1", "a/b")),
])
def test_split_bucket(spec, expected):
    assert split_bucket(spec) == expected


@pytest.mark.parametrize("spec", ["", "/prefix", "b", "bad bucket", "bucket!/x", "-bucket"])
def test_split_bucket_rejects(spec):
    with pytest.raises(ConfigError, match="bucket name"):
        split_bucket(spec)


# ----------------------------------------------------------------- validate
GOOD = Config(store=StoreConfig(bucket="b"))


def test_validate_accepts_defaults_with_bucket():
    assert validate(GOOD) is GOOD


@pytest.mark.parametrize("cfg,match", [
    (Config(), "no bucket"),
    (Config(store=StoreConfig(bucket="b", addressing_style="dns")), "addressing_style"),
    (Config(store=StoreConfig(bucket="b", checksums="always")), "checksums"),
    (Config(store=StoreConfig(bucket="b"), cache=CacheConfig(stat_ttl=0)), "stat_ttl"),
    (Config(store=StoreConfig(bucket="b"), cache=CacheConfig(kernel_attr_timeout=-1)), "kernel_attr_timeout"),
    (Config(store=StoreConfig(bucket="b"), cache=CacheConfig(sync_interval=-1)), "sync_interval"),
    (Config(store=StoreConfig(bucket="b"), write=WriteConfig(min_part_size=4 * MiB)), "min_part_size"),
    (Config(store=StoreConfig(bucket="b"), write=WriteConfig(upload_concurrency=0)), "upload_concurrency"),
    (Config(store=StoreConfig(bucket="b"), read=ReadConfig(chunk_size=32 * KiB)), "chunk_size"),
    (Config(store=StoreConfig(bucket="b"), read=ReadConfig(max_readahead_chunks=0)), "max_readahead"),
    (Config(store=StoreConfig(bucket="b"), read=ReadConfig(eager_readahead="true")), "eager_readahead"),
    (Config(store=StoreConfig(bucket="b"), mount=MountOptions(capacity=100)), "capacity"),
])
def test_validate_rejects(cfg, match):
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


def test_resolved_cache_dir(monkeypatch):
    assert Config(cache=CacheConfig(cache_dir="/x/y")).resolved_cache_dir() == "/x/y"
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", "/home/u/.cache")
    assert Config().resolved_cache_dir() == "/home/u/.cache/s3pvefs"
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert Config().resolved_cache_dir() == "/var/cache/s3pvefs"


def test_a_file_that_is_not_utf8_text_or_not_a_file_is_one_line(tmp_path):
    """Latin-1 saved by an editor, a directory given as the file: a ConfigError naming
    the file, never a traceback (the CLI prints it as one line, exit 2)."""
    p = tmp_path / "latin1.toml"
    p.write_bytes('[store]\nbucket = "sauvegardes-\xe9t\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text \(byte \d+\)"):
        load_file(str(p))
    with pytest.raises(ConfigError, match="Is a directory"):
        load_file(str(tmp_path))
