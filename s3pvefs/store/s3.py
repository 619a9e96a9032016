"""ObjectStore on S3 via aiobotocore's httpx backend, which runs on trio.

aiobotocore and botocore types stop here: callers see ObjectInfo/ListPage and
StoreError. Retries are botocore's "standard" mode (exponential backoff with
jitter, throttling codes honoured), bounded by StoreConfig.max_attempts; the few
retries made here (a provider's own throttling codes, a 429 botocore left alone, a
GET body that broke off) use full-jitter backoff capped at BACKOFF_CAP, honour a
Retry-After, and never wait past the request's deadline.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import datetime
import email.utils
import hashlib
import io
import logging
import random
import re
import time
from typing import AsyncIterator, Callable

import aiobotocore.session
import botocore.credentials
import botocore.exceptions
import botocore.utils
import httpx
import trio
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession

from s3pvefs import credentials
from s3pvefs.config import StoreConfig
from s3pvefs.errors import Changed, Locked, StoreError
from s3pvefs.store.bandwidth import Bandwidth
from s3pvefs.store.base import ListAll, ListPage, MultipartUpload, ObjectInfo, PartEtag
from s3pvefs.store.body import pieces_of
from s3pvefs.store.classes import ARCHIVED, StorageClasses
from s3pvefs.store.encryption import Encryption
from s3pvefs.store.objectlock import LockState, Placement, Retention

log = logging.getLogger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# a bucket configuration that is not set (Object Lock, lifecycle): an answer, not a failure
_NOT_SET = frozenset({"ObjectLockConfigurationNotFoundError", "NoSuchLifecycleConfiguration"})


class _Body(io.BytesIO):
    """A request body the httpx backend streams in 1 MiB pieces. botocore turns
    bytes into a BytesIO, and iterating a BytesIO yields *lines*: random data was
    sent in ~100-byte pieces, one event-loop turn each (4 MB/s instead of 300+).
    The pieces are views of the body, not copies (it is sent once per attempt)."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self._view = memoryview(data)

    def __iter__(self):
        while True:
            start = self.tell()
            chunk = self._view[start:start + (1 << 20)]
            if not chunk:
                return
            self.seek(start + len(chunk))
            yield chunk


# Server-side work gets more time than its bytes at min_transfer_rate would: a copy
# moves data inside the server (counted 16x faster); CopyObject of up to 5 GiB and
# CompleteMultipartUpload of many parts can take minutes on AWS.
_COPY_SPEEDUP = 16
_COPY_BOUND = (5 << 30) // _COPY_SPEEDUP
_COMPLETE_BOUND = 256 << 20

BACKOFF_BASE = 0.5  # seconds: the ceiling of the first wait, doubled per retry
BACKOFF_CAP = 8.0  # no wait is longer, a server's Retry-After included


def backoff_delay(attempt: int, retry_after: float | None = None,
                  rand: Callable[[], float] = random.random) -> float:
    """The wait before retry number `attempt` (1, 2, ...): "full jitter", uniform in
    [0, min(BACKOFF_CAP, BACKOFF_BASE * 2**(attempt-1))], so that clients throttled
    together do not come back together. A server's Retry-After is a floor, itself
    capped: a server asking for an hour gets BACKOFF_CAP (the request deadline decides)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt - 1, 32))
    delay = rand() * ceiling
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, BACKOFF_CAP))
    return delay


def retry_after(headers: dict, now: float | None = None) -> float | None:
    """Seconds a throttling answer asks to wait: `x-amz-retry-after` (milliseconds,
    AWS) or `Retry-After` (seconds or an HTTP date); None if absent or unreadable."""
    headers = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
    try:
        if "x-amz-retry-after" in headers:
            return max(0.0, int(headers["x-amz-retry-after"]) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    when = _parse_time(value)
    return None if when is None else max(0.0, when - (time.time() if now is None else now))


# A node whose clock is off: S3 refuses every signed request. AWS, Ceph RGW, MinIO,
# Wasabi and B2 answer RequestTimeTooSkewed (403); other AWS-style services
# RequestExpired / RequestInTheFuture, or InvalidSignatureException "Signature expired".
SKEW_CODES = frozenset({"RequestTimeTooSkewed", "RequestExpired", "RequestInTheFuture"})
MAX_SKEW = 900.0  # seconds: what AWS, Ceph RGW and MinIO allow (15 minutes)


def clock_skewed(error: StoreError) -> bool:
    """Whether S3 refused the request because this node's clock is off. A HEAD answer
    has no body, hence no error code: a bare 403 whose Date is more than MAX_SKEW away
    from the local clock counts as well."""
    if error.code in SKEW_CODES:
        return True
    text = str(error).lower()
    if error.code in ("InvalidSignatureException", "SignatureDoesNotMatch") and (
            "expired" in text or "signature not yet current" in text):
        return True
    skew = getattr(error, "skew", None)
    return error.code in ("403", "400", "AccessDenied", "SignatureDoesNotMatch") and skew is not None \
        and abs(skew) > MAX_SKEW


def skew_message(error: StoreError) -> str:
    """One line for a user whose clock is off (error: a clock_skewed one)."""
    skew = getattr(error, "skew", None)
    if skew is not None and abs(skew) >= 1:
        minutes = abs(skew) / 60
        amount = f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min" if minutes >= 2 \
            else f"{abs(skew):.0f} s"
        how = f"is {amount} {'ahead of' if skew > 0 else 'behind'} the S3 server's"
    else:
        how = "differs from the S3 server's by more than 15 minutes"
    return (f"the clock of this node {how} ({error.code}): S3 refuses requests signed with it; "
            f"sync it (timedatectl set-ntp true, chrony)")


# httpcore reads a response 64 KiB per socket read, each read a pass through
# httpcore, h11 and trio (their context managers, cancel scopes, events): 16,384
# passes per GiB, most of the CPU of a GET through aiobotocore (py-spy). A read
# returns what the socket holds, up to this: small answers are unaffected.
_HTTP_READ = 1 << 20
try:
    from httpcore._async.http11 import AsyncHTTP11Connection
except ImportError:  # another httpcore layout: its own read size stays, only slower
    AsyncHTTP11Connection = None
if AsyncHTTP11Connection is not None and getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", 0) < _HTTP_READ:
    AsyncHTTP11Connection.READ_NUM_BYTES = _HTTP_READ

_HASH_INLINE = 256 << 10  # smaller bodies are hashed on the loop: a thread hop costs more


def _md5_b64(data) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    for piece in pieces_of(data):
        md5.update(piece)
    return base64.b64encode(md5.digest()).decode()


def _crc32c_b64(data) -> str:
    from awscrt.checksums import crc32c  # ~20 GB/s: on the loop, no thread hop
    crc = 0
    for piece in pieces_of(data):
        crc = crc32c(piece, crc)
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def _sha256_hex(data) -> str:
    sha256 = hashlib.sha256()
    for piece in pieces_of(data):
        sha256.update(piece)
    return sha256.hexdigest()


async def _hash_off_the_loop(fn, data: bytes) -> str:
    if len(data) < _HASH_INLINE:
        return fn(data)
    return await trio.to_thread.run_sync(fn, data)  # hashlib lets go of the GIL


async def _content_md5(data: bytes) -> str:
    return await _hash_off_the_loop(_md5_b64, data)


async def _body_into(body, into, size: int, key: str) -> memoryview:
    """A GET's body written into the caller's buffer piece by piece as httpx hands the
    pieces over (what each socket read got, up to _HTTP_READ): botocore's read() joins
    them into a new object of the chunk's size, whose fresh pages fault in on every
    chunk. A view of the buffer."""
    got = 0
    async for piece in body.raw_stream.aiter_raw():
        n = len(piece)
        if got + n > size:  # a server that ignored the Range
            raise StoreError(f"get_object {key}: more than the {size} bytes of the range", code="ShortRead",
                             transient=True)
        into[got:got + n] = piece
        got += n
    return memoryview(into)[:got]


def _parse_time(text) -> float | None:
    """Epoch seconds of an HTTP date, or an ISO 8601 time (basic or extended, UTC)."""
    text = str(text or "").strip()
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        pass
    # Fractions of a second beyond microseconds (Ceph RGW's retain-until dates carry
    # nanoseconds) are cut to the six digits strptime takes.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    for fmt in ("%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def _skew(err: dict, headers: dict) -> float | None:
    """Local clock minus the server's: exact from a RequestTimeTooSkewed's RequestTime
    and ServerTime, else from the answer's Date header (to a second or so)."""
    request_time, server_time = _parse_time(err.get("RequestTime")), _parse_time(err.get("ServerTime"))
    if request_time is not None and server_time is not None:
        return request_time - server_time
    date = _parse_time({str(k).lower(): v for k, v in (headers or {}).items()}.get("date"))
    return None if date is None else time.time() - date


def translate_error(op: str, key: str, exc: Exception) -> StoreError:
    """One place that turns botocore failures into StoreError, without secrets."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode", 0)
        message = err.get("Message") or code
        transient = status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")
        return StoreError(f"{op} {key}: {code} ({status}) {message}", code=code, transient=transient,
                          skew=_skew(err, meta.get("HTTPHeaders", {})))
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StoreError(f"{op} {key}: no credentials found", code="NoCredentials")
    # Connection refused/reset, timeouts, DNS: botocore wraps them in BotoCoreError.
    return StoreError(f"{op} {key}: {exc.__class__.__name__}: {exc}", code="Network", transient=True)


def _timestamp(value):
    """Last-Modified and friends (RFC 7231 in headers, ISO 8601 in XML) by the standard
    library's parsers: botocore's default goes through dateutil, a few per cent of the
    CPU of every header read (Proxmox's content views make one per file)."""
    if isinstance(value, str):
        try:
            if value[:1].isdigit():
                t = datetime.datetime.fromisoformat(value)
            else:
                t = email.utils.parsedate_to_datetime(value)
            if t.tzinfo is not None:
                return t
        except (TypeError, ValueError, IndexError):
            pass
    return botocore.utils.parse_timestamp(value)


def _info(key: str, resp: dict, with_meta: bool) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=int(resp.get("ContentLength", resp.get("Size", 0))),
        etag=str(resp.get("ETag", "")).strip('"'),
        last_modified=resp["LastModified"].timestamp() if resp.get("LastModified") else 0.0,
        metadata={k.lower(): v for k, v in resp.get("Metadata", {}).items()} if with_meta else None,
        content_type=resp.get("ContentType") if with_meta else None,
        storage_class=resp.get("StorageClass"),
        lock_mode=resp.get("ObjectLockMode"),
        lock_until=resp["ObjectLockRetainUntilDate"].timestamp() if resp.get("ObjectLockRetainUntilDate") else None,
        legal_hold=resp.get("ObjectLockLegalHoldStatus") == "ON",
        encryption="SSE-C" if resp.get("SSECustomerAlgorithm") else resp.get("ServerSideEncryption"),
    )


def _info_from_headers(key: str, headers: dict[str, str]) -> ObjectInfo:
    """ObjectInfo from a HEAD's or GET's raw headers (lower-case names), as _info makes
    it from botocore's parsed answer: x-amz-meta-* become metadata, a Content-Range's
    total the size."""
    total = headers.get("content-range", "").rpartition("/")[2]
    size = total if total.isdigit() else headers.get("content-length", "0")
    modified = _timestamp(headers["last-modified"]).timestamp() if headers.get("last-modified") else 0.0
    return ObjectInfo(key=key, size=int(size) if size.isdigit() else 0, etag=headers.get("etag", "").strip('"'),
                      last_modified=modified,
                      metadata={k[11:]: v for k, v in headers.items() if k.startswith("x-amz-meta-")},
                      content_type=headers.get("content-type"), storage_class=headers.get("x-amz-storage-class"),
                      lock_mode=headers.get("x-amz-object-lock-mode"),
                      lock_until=_parse_time(headers.get("x-amz-object-lock-retain-until-date")),
                      legal_hold=headers.get("x-amz-object-lock-legal-hold") == "ON",
                      encryption="SSE-C" if headers.get("x-amz-server-side-encryption-customer-algorithm")
                      else headers.get("x-amz-server-side-encryption"))


class _Redact(logging.Filter):
    """On the root logger's handlers: a secret key (or session token) in a log record,
    message or traceback, is replaced before anything is written. Belt and braces:
    nothing logs keys, and botocore's own request logging (which shows the access key
    id, never the secret) is held at WARNING by the CLI's logging set-up."""

    def __init__(self) -> None:
        super().__init__("s3pvefs-redact")
        self.secrets: set[str] = set()

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[secret]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        texts = (message, record.exc_text or "", record.stack_info or "")
        if any(secret in text for text in texts for secret in self.secrets):
            record.msg, record.args = self._clean(message), ()
            record.exc_text = self._clean(record.exc_text) if record.exc_text else record.exc_text
            record.stack_info = self._clean(record.stack_info) if record.stack_info else record.stack_info
        return True


_REDACT = _Redact()


def hide_in_logs(*values: str | None) -> None:
    """Never let these strings (a secret key, a session token) reach a log handler."""
    _REDACT.secrets.update(v for v in values if v and len(v) >= 8)
    for handler in logging.getLogger().handlers:
        if _REDACT not in handler.filters:
            handler.addFilter(_REDACT)


def _client_secrets(client) -> tuple[str | None, str | None]:
    """The secret key and token the client signs with, when they are static ones
    (refreshable, temporary credentials are left alone: reading them could refresh)."""
    try:
        creds = client._get_credentials()
    except Exception:  # a private botocore interface: never let it break a mount
        return None, None
    if creds is None or isinstance(creds, botocore.credentials.RefreshableCredentials):
        return None, None
    return getattr(creds, "secret_key", None), getattr(creds, "token", None)


async def _data_plane(cfg: StoreConfig, client):
    """The CRT plane when data_plane asks for it (auto: when awscrt is installed), placed
    where the aiobotocore client addresses the bucket, signing with its credentials."""
    from s3pvefs.store import crtplane
    if cfg.data_plane == "python" or (cfg.data_plane == "auto" and not crtplane.AVAILABLE):
        return None
    if not crtplane.AVAILABLE:
        raise ValueError("data_plane = crt, but awscrt is not installed (pip install awscrt)")
    creds = client._request_signer._credentials  # what aiobotocore signs with (None: anonymous)
    if creds is None:
        return None
    frozen = await creds.get_frozen_credentials()
    probe = "s3pvefs-crt-place"
    place = crtplane.Place.from_presigned(
        await client.generate_presigned_url("get_object", Params={"Bucket": cfg.bucket, "Key": probe}), probe)
    holder = {"now": frozen}

    async def refresh():  # before each data request: an expiring token is renewed by aiobotocore
        holder["now"] = await creds.get_frozen_credentials()

    plane = crtplane.CrtDataPlane(lambda key: place, cfg.region,
                                  lambda: (holder["now"].access_key, holder["now"].secret_key, holder["now"].token),
                                  ca_bundle=cfg.ca_bundle, connect_timeout=cfg.connect_timeout,
                                  max_attempts=cfg.max_attempts, connections=cfg.max_connections,
                                  skew_of=_skew, refresh=refresh, read_timeout=cfg.read_timeout,
                                  min_transfer_rate=cfg.min_transfer_rate)
    return plane


class S3Store(ListAll):
    def __init__(self, client, bucket: str, content_md5: bool = True, checksum_algorithm: str = "md5",
                 request_deadline: float = 20.0,
                 min_transfer_rate: int = 1 << 20, throttle_codes: frozenset[str] = frozenset(),
                 max_attempts: int = 5, data_plane=None, plane_reads: bool = False,
                 bandwidth: Bandwidth | None = None, classes: StorageClasses | None = None,
                 encryption: Encryption | None = None, retention: Retention | None = None,
                 prefix: str = ""):
        self._client = client
        # S3 Object Lock (store/objectlock.py): None until detect_object_lock says
        self.object_lock: bool | None = None
        self.retention = retention or Retention()
        self._placement = Placement(prefix)
        self.classes = classes or StorageClasses("", None, ())  # StorageClass= of new objects
        self.encryption = encryption or Encryption()
        # upload_limit / download_limit: a request waits for its turn before it is sent
        self.bandwidth = bandwidth or Bandwidth()
        # CrtDataPlane (crtplane.py) for UploadPart bodies (and ranged GETs when
        # plane_reads), or None: then aiobotocore carries them too.
        self._plane = data_plane
        self._plane_reads = data_plane is not None and plane_reads
        self.bucket = bucket
        self._content_md5 = content_md5
        self._algorithm = checksum_algorithm
        self._deadline = request_deadline
        self._min_rate = min_transfer_rate
        # For `s3pvefs status`: requests by operation, and failures (after botocore's own
        # retries) by error code.
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_sent = 0  # bodies of PUTs and parts
        self.bytes_received = 0  # bodies of GETs
        self.errors: collections.Counter[str] = collections.Counter()
        # Retries made here (botocore's own are not seen): throttle_codes answers, and GET
        # bodies that broke off.
        self.retries: collections.Counter[str] = collections.Counter()
        self._throttle_codes = throttle_codes
        self._max_attempts = max_attempts
        self._rand: Callable[[], float] = random.random  # the backoff's jitter (tests fix it)
        self._skew_logged = -1e9  # trio time of the last "clock is off" log line
        self._retried_creates: set[str] = set()

    async def _checksum(self, data) -> tuple[str, str] | None:
        """The checksum header a body carries (checksum_algorithm), or None (content_md5
        off: the signature covers the body's SHA-256)."""
        if not self._content_md5:
            return None
        if self._algorithm == "crc32c":
            return "x-amz-checksum-crc32c", _crc32c_b64(data)
        return "Content-MD5", await _content_md5(data)

    async def _body(self, data) -> dict:
        data = bytes(data)  # a streamed part's pieces, joined: botocore sends one buffer
        self.bytes_sent += len(data)  # once per body, not per retry: what the file needed
        body = {"Body": _Body(data)}
        checksum = await self._checksum(data)
        if checksum:
            body["ChecksumCRC32C" if checksum[0] == "x-amz-checksum-crc32c" else "ContentMD5"] = checksum[1]
        return body

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, cfg: StoreConfig) -> AsyncIterator["S3Store"]:
        session = aiobotocore.session.AioSession(profile=cfg.profile) if cfg.profile \
            else aiobotocore.session.get_session()
        aio_config = AioConfig(
            http_session_cls=HttpxSession,
            # Without Content-MD5, botocore signs a SHA-256 of the body on http endpoints.
            s3={"addressing_style": cfg.addressing_style,
                **({"payload_signing_enabled": False} if cfg.content_md5 else {})},
            signature_version="s3v4",
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
            max_pool_connections=cfg.max_connections,
            request_checksum_calculation=cfg.checksums,
            response_checksum_validation=cfg.checksums,
        )
        # The client (and the credential lookup) is only made on entering: its errors
        # (no such profile, no credentials, a bad endpoint URL) come from there, and the
        # daemon and the CLI turn them into one-line messages (bucketaccess.client_error).
        keys = credentials.resolve(cfg)  # None: botocore's chain (environment, profile)
        if keys is not None:
            session.set_credentials(*keys)
        session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
        client_cm = session.create_client("s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
                                          config=aio_config, verify=cfg.ca_bundle or None)
        async with client_cm as client:
            hide_in_logs(*(keys or ())[1:], *_client_secrets(client))
            encryption = Encryption.parse(cfg.sse, cfg.sse_kms_key_id, cfg.sse_bucket_key,
                                          credentials.customer_key(cfg))
            hide_in_logs(encryption.secret())
            plane = await _data_plane(cfg, client)
            if plane is not None:
                plane.extra_headers = encryption.headers()
            yield cls(client, cfg.bucket, content_md5=cfg.content_md5, checksum_algorithm=cfg.checksum_algorithm,
                      request_deadline=cfg.request_deadline,
                      min_transfer_rate=cfg.min_transfer_rate, max_attempts=cfg.max_attempts,
                      throttle_codes=frozenset(c.strip() for c in cfg.throttle_codes.split(",") if c.strip()),
                      data_plane=plane, plane_reads=cfg.data_plane == "crt",
                      bandwidth=Bandwidth(cfg.upload_limit, cfg.download_limit),
                      classes=StorageClasses.parse(cfg.prefix, cfg.storage_class, cfg.storage_classes),
                      encryption=encryption,
                      retention=Retention.parse(cfg.object_lock_mode, cfg.object_lock_days), prefix=cfg.prefix)

    @property
    def data_plane(self) -> str:
        """What carries part uploads, for `s3pvefs status` and the budget (the CRT sends
        from a copy of its own)."""
        return "crt" if self._plane is not None else "python"

    @property
    def read_plane(self) -> str:
        """What carries ranged GETs."""
        return "crt" if self._plane_reads else "python"

    def reads_through_plane(self, on: bool) -> None:
        """data_plane = auto, once the mount knows how far the server is (daemon.py)."""
        self._plane_reads = self._plane is not None and on

    # get_range fills a caller's buffer (into=) in place, through either plane: the
    # prefetcher reuses its chunk buffers.
    fills_buffers = True

    @property
    def reads_held_twice(self) -> bool:
        """A GET's bytes are held twice while it runs: the CRT receives into its own pool's
        buffer first (see read/prefetcher.py)."""
        return self._plane_reads

    @contextlib.contextmanager
    def _bounded(self, op: str, key: str, nbytes: int = 0):
        """No request hangs: request_deadline plus the time to move nbytes at
        min_transfer_rate, retries included; then StoreError (EIO), never a wait for ever."""
        seconds = self._deadline + nbytes / self._min_rate
        with trio.move_on_after(seconds) as scope:
            yield
        if scope.cancelled_caught:
            raise StoreError(f"{op} {key}: no answer from S3 within {seconds:.0f} s", code="Timeout",
                             transient=True)

    async def _call(self, op: str, key: str, nbytes: int = 0, **kwargs):
        self.requests[op] += 1
        try:
            with self._bounded(op, key, nbytes):
                return await self._attempts(op, key, kwargs)
        except StoreError as e:
            self._failed(e)
            raise

    def _failed(self, e: StoreError) -> None:
        """A request that failed for good: counted for `status`, a skewed clock logged."""
        if e.code not in _NOT_FOUND and e.code not in _NOT_SET and not isinstance(e, Changed):
            # an absent name, or a bucket setting that is not set, is an answer, no failure
            self.errors[e.code] += 1
        if clock_skewed(e) and trio.current_time() - self._skew_logged > 60:
            self._skew_logged = trio.current_time()  # once a minute, not once per request
            log.error("%s", skew_message(e))

    async def _backoff(self, attempt: int, error: StoreError, wait_at_least: float | None = None) -> None:
        """Wait before retry `attempt` (backoff_delay); if the request's deadline would
        pass before the next attempt could even start, fail now with the real error
        rather than sleep into a timeout."""
        delay = backoff_delay(attempt, wait_at_least, self._rand)
        if trio.current_time() + delay >= trio.current_effective_deadline():
            raise error from None
        await trio.sleep(delay)

    def _retried_here(self, e: Exception, error: StoreError) -> bool:
        """A provider's own throttling codes (throttle_codes), and a 429 Too Many Requests
        that botocore did not retry itself (its code is not one botocore knows)."""
        if error.code in self._throttle_codes:
            return True
        if isinstance(e, botocore.exceptions.ClientError):
            meta = e.response.get("ResponseMetadata", {})
            return meta.get("HTTPStatusCode") == 429 and not meta.get("RetryAttempts")
        return False

    async def _attempts(self, op: str, key: str, kwargs: dict):
        """botocore retries the standard throttling answers itself; a provider's own
        (throttle_codes, e.g. R2's 403) are retried here with backoff, within the deadline."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return await getattr(self._client, op)(Bucket=self.bucket, **kwargs)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                error = translate_error(op, key, e)
                if not self._retried_here(e, error) or attempt == self._max_attempts:
                    raise error from None
                headers = getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
            self.retries[op] += 1
            body = kwargs.get("Body")
            if body is not None:
                body.seek(0)  # the next attempt sends it again
            await self._backoff(attempt, error, retry_after(headers))

    async def check_bucket(self) -> None:
        """HeadBucket; StoreError with code 404/403/Network on failure. The answer to a
        HEAD has no body, so a refusal comes as a bare 403/400: a ListObjectsV2 of one key
        then asks again, for the error code (RequestTimeTooSkewed, SignatureDoesNotMatch,
        InvalidAccessKeyId, a region error...) that says what to fix."""
        try:
            await self._call("head_bucket", self.bucket)
        except StoreError as e:
            if e.code not in ("403", "400"):
                raise
            try:
                await self._call("list_objects_v2", "", MaxKeys=1)
            except StoreError as detail:
                if detail.code and not detail.code.isdigit():
                    raise detail from None
            raise

    async def head(self, key):
        try:
            return await self._head(key)
        except StoreError as e:
            raise self._key_hint(e) from None

    async def _head(self, key):
        if self._plane is not None:  # a tenth of botocore's CPU per request (content views: one per file)
            headers = await self._through_plane("head_object", key, 0, lambda: self._plane.head(key))
            return None if headers is None else _info_from_headers(key, headers)
        try:
            resp = await self._call("head_object", key, Key=key, **self.encryption.read_args())
        except StoreError as e:
            if e.code in _NOT_FOUND:
                return None
            raise
        return _info(key, resp, True)

    async def get_small(self, key, limit):
        if self._plane is not None:
            return await self._get_small_through_plane(key, limit)
        with self._bounded("get_object", key, limit):
            try:
                resp = await self._call("get_object", key, Key=key, Range=f"bytes=0-{limit - 1}",
                                        **self.encryption.read_args())
            except StoreError as e:
                if e.code in _NOT_FOUND:
                    return None
                if e.code in ("InvalidRange", "416", "InvalidObjectState"):  # empty: no byte 0; archived
                    info = await self.head(key)
                    return None if info is None else (info, b"" if info.size == 0 else None)
                raise
            try:
                async with resp["Body"] as body:
                    data = await body.read(limit + 1)  # a server that ignored the Range: no more
            except (botocore.exceptions.BotoCoreError, OSError) as e:
                raise translate_error("get_object", key, e) from None
        self.bytes_received += len(data)
        await self.bandwidth.download.take(len(data))
        info = _info(key, resp, True)
        total = str(resp.get("ContentRange", "")).rpartition("/")[2]
        if total.isdigit():  # "bytes 0-1023/1024": the object's size, not the range's
            info = dataclasses.replace(info, size=int(total))
        return info, data if len(data) == info.size <= limit else None

    async def _get_small_through_plane(self, key, limit):
        try:
            got = await self._through_plane("get_object", key, limit, lambda: self._plane.get_head(key, limit))
        except StoreError as e:
            if e.code in ("InvalidRange", "416", "InvalidObjectState"):  # empty: no byte 0; archived
                info = await self.head(key)
                return None if info is None else (info, b"" if info.size == 0 else None)
            raise
        if got is None:
            return None
        headers, data = got
        info = _info_from_headers(key, headers)
        self.bytes_received += len(data or b"")
        await self.bandwidth.download.take(len(data or b""))
        return info, data if data is not None and len(data) == info.size <= limit else None

    async def list_page(self, prefix, delimiter="/", token=None, max_keys=1000):
        kwargs = {"Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if token:
            kwargs["ContinuationToken"] = token
        resp = await self._call("list_objects_v2", prefix, **kwargs)
        return ListPage(
            objects=[_info(o["Key"], o, False) for o in resp.get("Contents", [])],
            prefixes=[p["Prefix"] for p in resp.get("CommonPrefixes", [])],
            next_token=resp.get("NextContinuationToken") if resp.get("IsTruncated") else None,
        )

    async def _through_plane(self, op: str, key: str, nbytes: int, send):
        """One data request through the CRT plane, counted and bounded like _call. The CRT
        retries failed connections and the standard error answers itself; retried here
        within the deadline: a silent connection (read_timeout), a body cut short, and
        the provider's own throttle codes."""
        self.requests[op] += 1
        try:
            with self._bounded(op, key, nbytes):
                for attempt in range(1, self._max_attempts + 1):
                    try:
                        return await send()
                    except StoreError as e:
                        retry = e.code in ("ReadTimeout", "ShortRead") or e.code in self._throttle_codes
                        if not retry or attempt == self._max_attempts:
                            raise
                        error = e
                    self.retries[op] += 1
                    await self._backoff(attempt, error)
        except StoreError as e:
            self._failed(e)
            raise

    async def get_range(self, key, start, end, etag=None, into=None):
        if end <= start:
            return b""
        await self.bandwidth.download.take(end - start)
        try:
            return await self._get_range(key, start, end, etag, into)
        except StoreError as e:
            if e.code == "InvalidObjectState":  # GLACIER, DEEP_ARCHIVE: no bytes until restored
                raise self._archived(key, e) from None
            raise self._key_hint(e) from None

    def _key_hint(self, e: StoreError) -> StoreError:
        """With SSE-C, a refused read most likely means another key (or none) made the object."""
        if not self.encryption.customer or e.code not in ("400", "403", "AccessDenied", "InvalidRequest",
                                                          "InvalidArgument", "Forbidden"):
            return e
        hinted = StoreError(f"{e} (sse = SSE-C: the object was written with another key than this mount's, "
                            "or without SSE-C; it is not readable with this key)", code=e.code)
        hinted.skew = e.skew
        return hinted

    def _archived(self, key: str, e: StoreError) -> StoreError:
        return StoreError(f"get_object {key}: the object is in an archive storage class "
                          f"({'/'.join(sorted(ARCHIVED))}) and must be restored before it can be read: "
                          f"aws s3api restore-object --bucket {self.bucket} --key '{key}' "
                          f"--restore-request Days=7 (then wait for the restore; {e.code})", code=e.code)

    async def _get_range(self, key, start, end, etag, into):
        if self._plane_reads:
            data = await self._through_plane("get_object", key, end - start,
                                             lambda: self._plane.get_range(key, start, end, etag, into))
            self.bytes_received += len(data)
            return data
        kwargs = {"Key": key, "Range": f"bytes={start}-{end - 1}", **self.encryption.read_args()}
        if etag:
            kwargs["IfMatch"] = etag
        with self._bounded("get_object", key, end - start):
            for attempt in range(1, self._max_attempts + 1):
                try:
                    resp = await self._call("get_object", key, **kwargs)
                except StoreError as e:
                    if etag and e.code in ("PreconditionFailed", "412"):
                        raise Changed(f"get_object {key}: the object changed (If-Match {etag})") from None
                    raise
                try:
                    async with resp["Body"] as body:
                        if into is not None and len(into) >= end - start:
                            data = await _body_into(body, into, end - start, key)
                        else:
                            data = await body.read()
                except (botocore.exceptions.BotoCoreError, OSError, httpx.HTTPError) as e:
                    # botocore retries a request, not a body that broke off halfway
                    error = translate_error("get_object", key, e)
                    if attempt == self._max_attempts:
                        raise error from None
                else:
                    self.bytes_received += len(data)
                    if len(data) != end - start and len(data) != int(resp.get("ContentLength", len(data))):
                        raise StoreError(f"get_object {key}: {len(data)} bytes for a range of {end - start}",
                                         code="ShortRead", transient=True)
                    return data
                self.retries["get_object body"] += 1
                await self._backoff(attempt, error)

    def _new_object(self, key: str) -> dict:
        """What every request that makes an object carries: its class and encryption."""
        return {**self.classes.request_args(key), **self.encryption.request_args()}

    async def put(self, key, body, metadata, content_type=None):
        await self.bandwidth.upload.take(len(body))
        kwargs = {"Key": key, "Metadata": metadata, **self._new_object(key), **await self._body(body)}
        if content_type:
            kwargs["ContentType"] = content_type
        resp = await self._call("put_object", key, len(body), **kwargs)
        await self._committed(key)
        return str(resp.get("ETag", "")).strip('"')

    async def copy(self, src, dst, metadata, content_type=None):
        kwargs = {"Key": dst, "CopySource": {"Bucket": self.bucket, "Key": src}, **self._new_object(dst),
                  **self.encryption.copy_source_args()}
        if metadata is not None:
            kwargs.update(Metadata=metadata, MetadataDirective="REPLACE")
            if content_type:
                kwargs["ContentType"] = content_type
        await self._call("copy_object", dst, _COPY_BOUND, **kwargs)
        await self._committed(dst)

    async def delete(self, key):
        if self.object_lock is not False:
            await self.refuse_if_locked(key)
        await self._call("delete_object", key, Key=key)
        if self.object_lock is not False and (archive := self._placement.archive_of_flag(key)):
            await self._legal_hold(archive, "OFF")  # the protection flag is gone: so is the hold

    # ------------------------------------------------------------------ Object Lock
    async def detect_object_lock(self) -> bool | None:
        """Whether the bucket has Object Lock (one request, at mount); None: cannot tell
        (then every DELETE is checked by a HEAD first, and retentions are tried)."""
        try:
            resp = await self._call("get_object_lock_configuration", self.bucket)
            self.object_lock = resp.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except StoreError as e:
            if e.code in ("ObjectLockConfigurationNotFoundError", "NotImplemented", "501", "405",
                          "MethodNotAllowed", "InvalidRequest"):
                self.object_lock = False
            else:
                log.warning("cannot tell whether bucket %s has Object Lock (%s): deletes are checked "
                            "for locks first", self.bucket, e.code)
                self.object_lock = None
        return self.object_lock

    async def refuse_if_locked(self, key: str) -> None:
        if self.object_lock is False:
            return
        info = await self.head(key)
        state = LockState.of(info) if info is not None else None
        if state is not None and state.locked:
            # logged by whoever gets it (the FUSE adapter: once, at WARNING)
            raise Locked(f"{key} is protected by S3 Object Lock: {state.describe()}; it cannot be deleted or moved")

    async def _committed(self, key: str) -> None:
        """An object was just made at key: a backup archive gets its retention, a
        protection flag puts a legal hold on its archive. A failure is logged, not
        raised: the data is stored, and the name must not be written again for it."""
        if self.object_lock is False:
            return
        try:
            if self.retention.days and self._placement.is_archive(key):
                until = self.retention.until()
                await self._call("put_object_retention", key, Key=key,
                                 Retention={"Mode": self.retention.mode, "RetainUntilDate": until})
                log.info("%s: retention %s until %s", key, self.retention.mode, until.strftime("%Y-%m-%d %H:%M UTC"))
            if archive := self._placement.archive_of_flag(key):
                await self._legal_hold(archive, "ON")
        except StoreError as e:
            log.error("%s is stored but not locked: %s", key, e)

    async def _legal_hold(self, archive: str, status: str) -> None:
        try:
            await self._call("put_object_legal_hold", archive, Key=archive, LegalHold={"Status": status})
            log.info("%s: legal hold %s", archive, status)
        except StoreError as e:
            if e.code in _NOT_FOUND:
                return  # no such archive: nothing to hold
            log.error("%s: could not turn its legal hold %s: %s", archive, status, e)

    async def create_multipart(self, key, metadata):
        resp = await self._call("create_multipart_upload", key, Key=key, Metadata=metadata,
                                **self._new_object(key))
        if resp.get("ResponseMetadata", {}).get("RetryAttempts"):  # botocore sent it more than once
            self._retried_creates.add(resp["UploadId"])
        return resp["UploadId"]

    def create_was_retried(self, upload_id: str) -> bool:
        """Whether botocore had to send the CreateMultipartUpload of upload_id more than
        once: an earlier attempt whose answer was lost may have made an upload too."""
        if upload_id in self._retried_creates:
            self._retried_creates.discard(upload_id)
            return True
        return False

    async def upload_part(self, key, upload_id, number, body):
        await self.bandwidth.upload.take(len(body))
        if self._plane is not None:
            self.bytes_sent += len(body)
            checksum = await self._checksum(body)
            # no checksum header: the signature covers the body's SHA-256, as botocore signs it
            sha256 = None if checksum else await _hash_off_the_loop(_sha256_hex, body)
            return await self._through_plane("upload_part", key, len(body), lambda: self._plane.upload_part(
                key, upload_id, number, body, checksum, sha256))
        resp = await self._call("upload_part", key, len(body), Key=key, UploadId=upload_id, PartNumber=number,
                                **self.encryption.read_args(), **await self._body(body))
        return str(resp["ETag"]).strip('"')

    async def upload_part_copy(self, key, upload_id, number, src, start, end, src_etag=None):
        extra = {"CopySourceIfMatch": src_etag} if src_etag else {}
        resp = await self._call("upload_part_copy", key, (end - start) // _COPY_SPEEDUP, Key=key,
                                UploadId=upload_id, PartNumber=number,
                                CopySource={"Bucket": self.bucket, "Key": src},
                                **self.encryption.read_args(), **self.encryption.copy_source_args(),
                                CopySourceRange=f"bytes={start}-{end - 1}", **extra)
        return str(resp["CopyPartResult"]["ETag"]).strip('"')

    async def complete_multipart(self, key, upload_id, parts: list[PartEtag]):
        # Never rely on this response's ETag: Ceph RGW 16.2 returns an empty one.
        await self._call("complete_multipart_upload", key, _COMPLETE_BOUND, Key=key, UploadId=upload_id,
                         MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'}
                                                    for p in sorted(parts, key=lambda p: p.number)]})
        await self._committed(key)

    async def abort_multipart(self, key, upload_id):
        await self._call("abort_multipart_upload", key, Key=key, UploadId=upload_id)

    async def last_activity(self, key, upload_id):
        latest, kwargs = None, {"Key": key, "UploadId": upload_id}
        while True:
            resp = await self._call("list_parts", key, **kwargs)
            for part in resp.get("Parts", []):
                t = part["LastModified"].timestamp()
                latest = t if latest is None or t > latest else latest
            if not resp.get("IsTruncated"):
                break
            kwargs["PartNumberMarker"] = resp["NextPartNumberMarker"]
        if latest is None:
            initiated = resp.get("Initiated")
            return initiated.timestamp() if initiated else 0.0
        return latest

    async def list_multipart(self, prefix):
        uploads, kwargs = [], {"Prefix": prefix}
        while True:
            resp = await self._call("list_multipart_uploads", prefix, **kwargs)
            for u in resp.get("Uploads", []):
                uploads.append(MultipartUpload(u["Key"], u["UploadId"], u["Initiated"].timestamp()))
            if not resp.get("IsTruncated"):
                return uploads
            kwargs.update(KeyMarker=resp.get("NextKeyMarker", ""),
                          UploadIdMarker=resp.get("NextUploadIdMarker", ""))
