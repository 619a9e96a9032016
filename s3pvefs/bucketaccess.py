"""Reaching the bucket: the exit codes of the commands, and the one translation of a
failure to make the S3 client or to reach the bucket into a one-line message with
its exit code. `mount`, `ls` and `check` all use it, so the same mistake reads the
same everywhere."""

from __future__ import annotations

from urllib.parse import urlsplit

import botocore.exceptions
import trio

from s3pvefs.config import Config
from s3pvefs.errors import (EXIT_CLOCK_SKEW, EXIT_CREDENTIALS, EXIT_MOUNTPOINT, EXIT_NO_BUCKET,  # noqa: F401
                            EXIT_NO_FUSE, EXIT_OTHER, EXIT_UNREACHABLE, EXIT_USAGE, ConfigError, MountError,
                            StoreError)
from s3pvefs.store.s3 import S3Store, clock_skewed, skew_message

AUTH_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoCredentials",
              "InvalidToken", "ExpiredToken"}
MISSING_CODES = {"404", "NoSuchBucket"}
# How long mount, ls and check wait for the bucket's first answer: an endpoint that
# refuses or never answers is a mistake to report now, not after the retries and the
# request deadline (20 s) meant for a mount that is already serving.
REACH_WITHIN = 3.5


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
    """HeadBucket, as every command does before anything else; MountError on failure,
    within REACH_WITHIN seconds, at once when the endpoint refuses connections."""
    where = config.store.endpoint_url or "AWS S3"
    refused = False

    async def refusing() -> None:
        nonlocal refused
        if config.store.endpoint_url and await _refuses_connections(config.store.endpoint_url):
            refused = True
            scope.cancel()

    failed: StoreError | None = None
    with trio.move_on_after(REACH_WITHIN) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(refusing)
            try:
                await store.check_bucket()
            except StoreError as e:
                failed = e
            nursery.cancel_scope.cancel()
    if failed is not None:
        raise bucket_error(failed, config) from None
    if not scope.cancelled_caught:
        return
    if refused:
        raise MountError(f"cannot reach {where}: connection refused (nothing listens there: is the endpoint "
                         f"URL and its port right, is the server up?)", EXIT_UNREACHABLE)
    raise MountError(f"cannot reach {where}: no answer within {REACH_WITHIN:g} s (a firewall, or a server "
                     f"that hangs; `s3pvefs check` says which)", EXIT_UNREACHABLE)


async def _refuses_connections(url: str) -> bool:
    """Whether every address of url's host refuses a TCP connection (botocore would retry
    that with backoff for seconds)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        stream = await trio.open_tcp_stream(parts.hostname or "", port)
    except OSError as e:  # trio: one OSError, each address's failure in its cause (a group)
        cause = e.__cause__
        attempts = list(cause.exceptions) if isinstance(cause, BaseExceptionGroup) else [cause or e]
        return all(isinstance(a, ConnectionRefusedError) for a in attempts)
    except (ValueError, trio.TooSlowError):
        return False
    await stream.aclose()
    return False


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
