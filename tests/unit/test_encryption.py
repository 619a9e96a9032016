"""sse settings: the request arguments they make, and bad values."""

from __future__ import annotations

import pytest

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
    (["sse=SSE-C"], "sse: expected AES256"),
    (["sse=AES256", "sse_kms_key_id=k"], "only with sse = \"aws:kms\""),
    (["sse_bucket_key=true"], "only with sse = \"aws:kms\""),
    (["sse=aws:kms", "sse_kms_key_id=my key"], "sse_kms_key_id: 'my key' is not a key id"),
])
def test_bad_values_are_one_line(options, says):
    with pytest.raises(ConfigError) as e:
        validate(apply_options(Config(store=StoreConfig(bucket="b")), options))
    assert says in str(e.value) and "\n" not in str(e.value)
