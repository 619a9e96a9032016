"""Server-side encryption of new objects (sse, sse_kms_key_id, sse_bucket_key,
sse_customer_key_file).

SSE-S3 (``sse = "AES256"``) and SSE-KMS (``sse = "aws:kms"``, with an optional key id
and S3 Bucket Key) are request headers of the requests that make an object: PutObject,
CreateMultipartUpload and CopyObject (a rename re-encrypts the copy the same way).
Parts, GETs and HEADs need nothing: the server decrypts for whoever may read.

SSE-C (``sse = "SSE-C"``): the server encrypts with a key the customer holds, which
must then go with every request that touches the bytes or their headers: PutObject,
CreateMultipartUpload, UploadPart, GetObject, HeadObject, and as the copy source's key
on CopyObject and UploadPartCopy. The key is read from a root-only file or a systemd
credential (credentials.customer_key), never given as a value, and never logged.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from s3pvefs.errors import ConfigError

MODES = ("", "AES256", "aws:kms", "SSE-C")


@dataclass(frozen=True)
class Encryption:
    mode: str = ""  # "" = the bucket's default
    kms_key_id: str = ""
    bucket_key: bool = False
    customer_key: bytes | None = field(default=None, repr=False)  # SSE-C: 32 bytes

    @classmethod
    def parse(cls, mode: str, kms_key_id: str, bucket_key: bool, customer_key: bytes | None = None) -> Encryption:
        if mode not in MODES:
            raise ConfigError(f"sse: expected AES256 (SSE-S3), aws:kms (SSE-KMS), SSE-C or nothing, got {mode!r}")
        if (kms_key_id or bucket_key) and mode != "aws:kms":
            raise ConfigError("sse_kms_key_id, sse_bucket_key: only with sse = \"aws:kms\"")
        if any(c.isspace() for c in kms_key_id):
            raise ConfigError(f"sse_kms_key_id: {kms_key_id!r} is not a key id, ARN or alias")
        return cls(mode, kms_key_id, bucket_key, customer_key if mode == "SSE-C" else None)

    @property
    def customer(self) -> bool:
        return self.mode == "SSE-C"

    def request_args(self) -> dict:
        """The arguments of PutObject, CreateMultipartUpload and CopyObject (its target)."""
        if not self.mode:
            return {}
        if self.customer:
            return self.read_args()
        args: dict = {"ServerSideEncryption": self.mode}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        if self.bucket_key:
            args["BucketKeyEnabled"] = True
        return args

    def read_args(self) -> dict:
        """GetObject, HeadObject, UploadPart, UploadPartCopy (its target): SSE-C's key."""
        if not self.customer:
            return {}
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self.customer_key}

    def copy_source_args(self) -> dict:
        """CopyObject and UploadPartCopy: the key of the source (the same mount's)."""
        if not self.customer:
            return {}
        return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": self.customer_key}

    def headers(self) -> list[tuple[str, str]]:
        """SSE-C's raw headers, for requests that do not go through botocore (the CRT)."""
        if not self.customer:
            return []
        key = self.customer_key
        return [("x-amz-server-side-encryption-customer-algorithm", "AES256"),
                ("x-amz-server-side-encryption-customer-key", base64.b64encode(key).decode()),
                ("x-amz-server-side-encryption-customer-key-MD5", base64.b64encode(hashlib.md5(key).digest()).decode())]

    def secret(self) -> str | None:
        """What must never reach a log: the key as it travels (base64)."""
        return base64.b64encode(self.customer_key).decode() if self.customer else None


def decode_customer_key(raw: bytes, where: str) -> bytes:
    """32 bytes, given raw, as base64 (44 characters) or as 64 hex digits; ConfigError
    (which never shows the content) otherwise."""
    if len(raw) == 32:
        return raw
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    try:
        key = base64.b64decode(text, validate=True)
        if len(key) == 32:
            return key
    except ValueError:
        pass
    raise ConfigError(f"{where}: not a 256-bit key (32 bytes, or them as base64 or hex); "
                      "make one with: head -c 32 /dev/urandom | base64")
