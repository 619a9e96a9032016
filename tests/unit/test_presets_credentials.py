"""Provider presets, config names, and credentials by reference."""

from __future__ import annotations

import os

import pytest
import trio

from s3pvefs import credentials
from s3pvefs.config import Config, StoreConfig, apply_options, config_path, load_file, with_preset
from s3pvefs.errors import ConfigError


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_presets_set_quirks_the_file_leaves_at_default(tmp_path):
    r2 = load_file(write(tmp_path / "r2.toml", '[store]\nprovider = "r2"\nbucket = "b"\n'))
    assert (r2.store.region, r2.write.uniform_parts, r2.store.provider) == ("auto", True, "r2")
    aws = load_file(write(tmp_path / "aws.toml", '[store]\nprovider = "aws"\naddressing_style = "path"\n'))
    assert aws.store.addressing_style == "path"  # said in the file: the preset does not override
    assert aws.store.checksums == "when_supported"
    ceph = apply_options(Config(), ["provider=ceph"])
    assert ceph.store.addressing_style == "path" and ceph.store.checksums == "when_required"
    for name in ("aws", "ceph", "minio", "wasabi", "b2", "r2"):
        assert with_preset(Config(), name).store.provider == name


def test_unknown_provider_names_file_and_key(tmp_path):
    path = write(tmp_path / "x.toml", '[store]\nprovider = "dropbox"\n')
    with pytest.raises(ConfigError) as e:
        load_file(path)
    assert path in str(e.value) and "store.provider" in str(e.value) and "r2" in str(e.value)
    with pytest.raises(ConfigError, match="-o provider=nope"):
        apply_options(Config(), ["provider=nope"])


def test_wrong_type_and_unknown_key_name_the_file_and_key(tmp_path):
    path = write(tmp_path / "t.toml", '[cache]\nstat_ttl = "soon"\n')
    with pytest.raises(ConfigError, match=r"t.toml: cache.stat_ttl: expected float"):
        load_file(path)
    path = write(tmp_path / "u.toml", '[write]\nmemory_budgett = "1G"\n')
    with pytest.raises(ConfigError, match=r"u.toml: write.memory_budgett: unknown setting"):
        load_file(path)


def test_config_names(monkeypatch, tmp_path):
    assert config_path("backups") == "/etc/s3pvefs/backups.toml"
    monkeypatch.setenv("S3PVEFS_CONFIG_DIR", str(tmp_path))
    assert config_path("a-b_c.1") == str(tmp_path / "a-b_c.1.toml")
    with pytest.raises(ConfigError):
        config_path("../etc/passwd")


def test_credentials_file_must_be_private(tmp_path):
    good = write(tmp_path / "creds", "[default]\naws_access_key_id = AKID\naws_secret_access_key = SeCrEt\n")
    assert credentials.resolve(StoreConfig(credentials_file=good)) == ("AKID", "SeCrEt")
    bare = write(tmp_path / "bare", "aws_access_key_id=A2\naws_secret_access_key=S2\n", 0o400)
    assert credentials.resolve(StoreConfig(credentials_file=bare)) == ("A2", "S2")
    prof = write(tmp_path / "prof", "[pve]\naws_access_key_id = A3\naws_secret_access_key = S3\n")
    assert credentials.resolve(StoreConfig(credentials_file=prof, profile="pve")) == ("A3", "S3")
    loose = write(tmp_path / "loose", "aws_access_key_id=A\naws_secret_access_key=TopSecret\n", 0o644)
    with pytest.raises(ConfigError) as e:
        credentials.resolve(StoreConfig(credentials_file=loose))
    assert "not readable by group or others" in str(e.value) and "0644" in str(e.value)
    assert "TopSecret" not in str(e.value)
    half = write(tmp_path / "half", "aws_access_key_id=A\n")
    with pytest.raises(ConfigError, match="no aws_secret_access_key"):
        credentials.resolve(StoreConfig(credentials_file=half))
    with pytest.raises(ConfigError, match="No such file"):
        credentials.resolve(StoreConfig(credentials_file=str(tmp_path / "missing")))


def test_systemd_credentials_directory(monkeypatch, tmp_path):
    (tmp_path / "aws_access_key_id").write_text("AKSYSTEMD\n")
    (tmp_path / "aws_secret_access_key").write_text("secret-from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert credentials.resolve(StoreConfig()) == ("AKSYSTEMD", "secret-from-systemd")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert credentials.resolve(StoreConfig()) is None  # botocore's chain


def test_cache_directory_and_files_are_private(tmp_path):
    from s3pvefs.write.sparse import SparseFile
    d = tmp_path / "staging"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    f = SparseFile(str(d), key="k", path="p", base_size=0, base_etag=None, size=0, metadata={},
                   fill_size=1 << 20)
    try:
        trio.run(f.write, 0, b"secret data", None)
        assert os.stat(d).st_mode & 0o777 == 0o700
        for name in os.listdir(d):  # the data and its journal: root's alone
            assert os.stat(d / name).st_mode & 0o777 == 0o600, name
        assert sorted(n.rsplit(".", 1)[1] for n in os.listdir(d)) == ["data", "json"]
    finally:
        f.remove()
    assert os.listdir(d) == []


def test_a_credentials_file_that_is_not_text_is_one_line_without_its_content(tmp_path):
    p = tmp_path / "creds"
    p.write_bytes(b"aws_access_key_id = AKID\naws_secret_access_key = s\xe9cret\xff\n")
    p.chmod(0o600)
    with pytest.raises(ConfigError) as e:
        credentials.resolve(StoreConfig(credentials_file=str(p)))
    assert "not UTF-8 text" in str(e.value) and "cret" not in str(e.value)
