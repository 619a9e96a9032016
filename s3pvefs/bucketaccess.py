"""Reaching the bucket: the exit codes of the commands, and the one translation of a
failure to make the S3 client or to reach the bucket into a one-line message with
its exit code. `mount`, `ls` and `check` all use it, so the same mistake reads the
same everywhere."""

from __future__ import annotations

import botocore.exceptions

from s3pvefs.config import Config
from s3pvefs.errors import (EXIT_CLOCK_SKEW, EXIT_CREDENTIALS, EXIT_MOUNTPOINT, EXIT_NO_BUCKET,  # noqa: F401
                            EXIT_NO_FUSE, EXIT_OTHER, EXIT_UNREACHABLE, EXIT_USAGE, ConfigError, MountError,
                            StoreError)
from s3pvefs.store.s3 import S3Store, clock_skewed, skew_message

AUTH_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoCredentials",
              "InvalidToken", "ExpiredToken"}
MISSING_CODES = {"404", "NoSuchBucket"}


def bucket_error(e: StoreError, config: Config, doing: str = "access to") -> MountError:
    """A failed request to the bucket as one line and the exit code for its cause."""
    where = config.store.endpoint_url or "AWS S3"
    bucket = config.store.bucket
    if clock_skewed(e):  # before AUTH_CODES: a skewed request is refused with a 403 too
        return MountError(skew_message(e), EXIT_CLOCK_SKEW)
    if e.code in AUTH_CODES:
        return MountError(f"{doing} bucket {bucket!r} at {where} denied: "
                          f"check the credentials and the bucket policy ({e.code})", EXIT_CREDENTIALS)
    if e.code in MISSING_CODES:
        return MountError(f"bucket {bucket!r} does not exist at {where}", EXIT_NO_BUCKET)
    if e.code in ("Network", "Timeout"):
        return MountError(f"cannot reach {where}: {e}", EXIT_UNREACHABLE)
    if doing == "access to":
        return MountError(f"bucket {bucket!r} at {where}: {e}", EXIT_OTHER)
    return MountError(f"{doing} bucket {bucket!r} at {where} failed: {e}", EXIT_OTHER)


async def check_bucket(store: S3Store, config: Config) -> None:
    """HeadBucket, as every command does before anything else; MountError on failure."""
    try:
        await store.check_bucket()
    except StoreError as e:
        raise bucket_error(e, config) from None


def client_error(e: Exception, config: Config) -> Exception:
    """A failure to create the S3 client, as a one-line ConfigError or MountError."""
    s = config.store
    if isinstance(e, botocore.exceptions.ProfileNotFound):
        return ConfigError(f"profile {s.profile!r} not found in the AWS config files")
    if isinstance(e, botocore.exceptions.InvalidRegionError):
        return ConfigError(f"region {s.region!r}: not a valid region name")
    if isinstance(e, ValueError):  # an endpoint URL botocore cannot parse
        return ConfigError(f"endpoint_url {s.endpoint_url!r}: {e}")
    if isinstance(e, botocore.exceptions.PartialCredentialsError):
        return MountError(f"incomplete credentials: {e}", EXIT_CREDENTIALS)
    if isinstance(e, (botocore.exceptions.NoCredentialsError, botocore.exceptions.HTTPClientError)):
        # HTTPClientError: the chain got as far as the instance metadata service, whose
        # client cannot run under trio: there were no credentials anywhere else.
        return MountError("no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                          "use ~/.aws/credentials, or --profile", EXIT_CREDENTIALS)
    return MountError(f"cannot create the S3 client: {e.__class__.__name__}: {e}", EXIT_OTHER)
