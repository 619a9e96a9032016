"""Server-side encryption of new objects (sse, sse_kms_key_id, sse_bucket_key).

SSE-S3 (``sse = "AES256"``) and SSE-KMS (``sse = "aws:kms"``, with an optional key id
and S3 Bucket Key) are request headers of the requests that make an object: PutObject,
CreateMultipartUpload and CopyObject (a rename re-encrypts the copy the same way).
Parts, GETs and HEADs need nothing: the server decrypts for whoever may read.
Customer-provided keys (SSE-C) are not supported yet: they would have to go with
every request, the AWS CRT's included.
"""

from __future__ import annotations

from dataclasses import dataclass

from s3pvefs.errors import ConfigError

MODES = ("", "AES256", "aws:kms")


@dataclass(frozen=True)
class Encryption:
    mode: str = ""  # "" = the bucket's default
    kms_key_id: str = ""
    bucket_key: bool = False

    @classmethod
    def parse(cls, mode: str, kms_key_id: str, bucket_key: bool) -> Encryption:
        if mode not in MODES:
            raise ConfigError(f"sse: expected AES256 (SSE-S3), aws:kms (SSE-KMS) or nothing, got {mode!r}")
        if (kms_key_id or bucket_key) and mode != "aws:kms":
            raise ConfigError("sse_kms_key_id, sse_bucket_key: only with sse = \"aws:kms\"")
        if any(c.isspace() for c in kms_key_id):
            raise ConfigError(f"sse_kms_key_id: {kms_key_id!r} is not a key id, ARN or alias")
        return cls(mode, kms_key_id, bucket_key)

    def request_args(self) -> dict:
        """The arguments of PutObject, CreateMultipartUpload and CopyObject."""
        if not self.mode:
            return {}
        args: dict = {"ServerSideEncryption": self.mode}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        if self.bucket_key:
            args["BucketKeyEnabled"] = True
        return args
