"""sse settings: the request arguments they make, and bad values."""

from __future__ import annotations

import base64
import hashlib

import pytest

from s3pvefs import credentials

from s3pvefs.config import Config, StoreConfig, apply_options, validate
from s3pvefs.errors import ConfigError
from s3pvefs.store.encryption import Encryption


def test_request_arguments():
    assert Encryption.parse("", "", False).request_args() == {}
    assert Encryption.parse("AES256", "", False).request_args() == {"ServerSideEncryption": "AES256"}
    assert Encryption.parse("aws:kms", "arn:aws:kms:eu-west-1:1:key/abc", True).request_args() == {
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:eu-west-1:1:key/abc",
        "BucketKeyEnabled": True}


@pytest.mark.parametrize("options, says", [
    (["sse=aes256"], "sse: expected AES256"),
    (["sse=sse-c"], "sse: expected AES256"),
    (["sse_customer_key_file=/etc/k"], "only with sse = \"SSE-C\""),
    (["sse=AES256", "sse_kms_key_id=k"], "only with sse = \"aws:kms\""),
    (["sse_bucket_key=true"], "only with sse = \"aws:kms\""),
    (["sse=aws:kms", "sse_kms_key_id=my key"], "sse_kms_key_id: 'my key' is not a key id"),
])
def test_bad_values_are_one_line(options, says):
    with pytest.raises(ConfigError) as e:
        validate(apply_options(Config(store=StoreConfig(bucket="b")), options))
    assert says in str(e.value) and "\n" not in str(e.value)


KEY = bytes(range(32))


def test_customer_key_goes_with_every_request_that_touches_the_bytes():
    e = Encryption.parse("SSE-C", "", False, KEY)
    assert e.request_args() == e.read_args() == {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}
    assert e.copy_source_args() == {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": KEY}
    headers = dict(e.headers())
    assert headers["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
    assert base64.b64decode(headers["x-amz-server-side-encryption-customer-key"]) == KEY
    assert base64.b64decode(headers["x-amz-server-side-encryption-customer-key-MD5"]) == hashlib.md5(KEY).digest()
    assert e.secret() == headers["x-amz-server-side-encryption-customer-key"]
    assert "customer_key" not in repr(e) and KEY.hex() not in repr(e)
    plain = Encryption.parse("AES256", "", False, KEY)  # a key only matters with SSE-C
    assert plain.read_args() == plain.copy_source_args() == {} and plain.headers() == [] and plain.secret() is None


@pytest.mark.parametrize("content", [KEY, base64.b64encode(KEY) + b"\n", KEY.hex().encode() + b"\n"])
def test_key_file_forms(tmp_path, content):
    path = tmp_path / "ssec.key"
    path.write_bytes(content)
    path.chmod(0o600)
    cfg = StoreConfig(bucket="b", sse="SSE-C", sse_customer_key_file=str(path))
    assert credentials.customer_key(cfg) == KEY


def test_key_file_mistakes_never_show_the_key(tmp_path, monkeypatch):
    path = tmp_path / "ssec.key"
    path.write_bytes(base64.b64encode(KEY[:16]))
    path.chmod(0o600)
    with pytest.raises(ConfigError) as e:
        credentials.customer_key(StoreConfig(bucket="b", sse="SSE-C", sse_customer_key_file=str(path)))
    assert "not a 256-bit key" in str(e.value) and base64.b64encode(KEY[:16]).decode() not in str(e.value)
    path.write_bytes(KEY)
    path.chmod(0o644)
    with pytest.raises(ConfigError) as e:
        credentials.customer_key(StoreConfig(bucket="b", sse="SSE-C", sse_customer_key_file=str(path)))
    assert "must be owned by root and not readable by group or others" in str(e.value)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as e:
        credentials.customer_key(StoreConfig(bucket="b", sse="SSE-C"))
    assert "sse = SSE-C needs its key" in str(e.value)


def test_key_from_a_systemd_credential(tmp_path, monkeypatch):
    (tmp_path / "sse-customer-key").write_bytes(base64.b64encode(KEY))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert credentials.customer_key(StoreConfig(bucket="b", sse="SSE-C")) == KEY
