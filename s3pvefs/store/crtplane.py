"""The bulk bytes and the header reads through the AWS CRT (awscrt): UploadPart
bodies, ranged GETs, HEADs and the GETs of small files a listing showed.

aiobotocore carries every other request. For the bulk bytes its Python HTTP stack
(httpx, httpcore, h11 on the event loop) cost ~2.8 CPU-s per GiB uploaded and ~2.3
per GiB downloaded on the benchmark host, more than the whole budget of the daemon;
the CRT signs, sends and receives in its own C threads at ~0.3 (docs/PERFORMANCE.md).
A HEAD costs aiobotocore ~0.9 ms of CPU and the CRT ~0.2: Proxmox's content views make
one per listed file.

Each call is one HTTP request, a CRT "DEFAULT" meta request: the CRT retries what
failed before an answer or with a 5xx/throttling answer (up to max_attempts, its
backoff); the caller's trio deadline (S3Store._bounded) still bounds the whole and
cancels the request. Completion is handed to trio through its TrioToken. Answers
become the same StoreError (code, transient, skew) as aiobotocore's, so retries above,
outage handling and `status` see no difference.

Addressing (path or virtual host, the host and any path prefix) is taken from a URL
the aiobotocore client presigns, so both planes always talk to the same place.
Credentials come from the same client, refreshed before each request (instance roles,
session tokens); they are handed to the CRT from memory, never logged.
"""

from __future__ import annotations

import bisect
import io
import itertools
import re
import threading
import time
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import quote, urlsplit

import trio

from s3pvefs.errors import Changed, StoreError
from s3pvefs.store.body import pieces_of

try:
    from awscrt import auth, http, io as crtio, s3
    AVAILABLE = True
except ImportError:  # the daemon then moves bulk bytes through aiobotocore (data_plane = python)
    AVAILABLE = False

# After a cancel the CRT still calls on_done; waiting for it keeps buffers alive until
# the CRT lets go of them (it reads the body from our memory).
_CANCEL_GRACE = 10.0
_LABEL = {"UploadPart": "upload_part", "GetObject": "get_object", "HeadObject": "head_object"}  # as aiobotocore's errors say it
_TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable"})


@dataclass(frozen=True)
class Place:
    """Where a key lives: scheme, Host header and path prefix (as aiobotocore addresses it)."""
    tls: bool
    host: str  # host[:port] as the Host header says it
    prefix: str  # "/bucket" (path style) or "" (virtual host), plus any endpoint path

    @classmethod
    def from_presigned(cls, url: str, key: str) -> "Place":
        parts = urlsplit(url)
        quoted = quote(key, safe="/~")
        if not parts.path.endswith("/" + quoted):
            raise ValueError(f"unexpected presigned path {parts.path!r}")
        return cls(parts.scheme == "https", parts.netloc, parts.path[:-len(quoted) - 1])

    def path(self, key: str, query: str = "") -> str:
        return f"{self.prefix}/{quote(key, safe='/~')}" + (f"?{query}" if query else "")


class _BodyReader(io.RawIOBase):
    """The CRT reads a request body through readinto: straight out of our buffers (a
    streamed part's pieces, store/body.py), the one copy its bytes get in Python."""

    def __init__(self, data):
        self._views = [memoryview(piece).cast("B") for piece in pieces_of(data)]
        self._starts = list(itertools.accumulate((len(v) for v in self._views), initial=0))
        self._size = self._starts[-1]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        want = min(len(b), self._size - self._pos)
        done = 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        while done < want:
            view = self._views[i]
            at = self._pos + done - self._starts[i]
            n = min(want - done, len(view) - at)
            b[done:done + n] = view[at:at + n]
            done += n
            i += 1
        self._pos += done
        return done

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _error_fields(body: bytes | None) -> dict[str, str]:
    text = (body or b"")[:4096].decode("utf-8", "replace")
    return {name: m.group(1) for name in ("Code", "Message", "RequestTime", "ServerTime")
            if (m := re.search(f"<{name}>([^<]*)</{name}>", text))}


class _Exchange:
    """One request's answer, filled in by CRT threads, read by trio once `done` is set."""

    def __init__(self, token: trio.lowlevel.TrioToken, into: bytearray | None, limit: int = 0):
        self._token = token
        self.done = trio.Event()
        self.into = into
        self.limit = limit  # bytes expected at most
        self.received = 0
        self.overflow = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.error: BaseException | None = None
        self.error_headers: dict[str, str] = {}
        self.error_body: bytes | None = None
        self.answered = False  # headers came
        self.active = time.monotonic()  # last sign of life (CRT threads write it)
        self.stalled = False
        self.meta = None  # the CRT's request, for the watchdog to cancel
        self.sending = 0.0  # seconds its body may take to go before any answer (min_transfer_rate)
        self._lock = threading.Lock()

    def on_headers(self, status_code, headers, **_):
        self.active = time.monotonic()
        self.answered = True
        self.status = status_code
        self.headers = {k.lower(): v for k, v in headers}

    def on_body(self, chunk, offset, **_):
        # In order, one request: placed by count (the CRT's offset is the object's for a
        # ranged GET on some versions, the body's on others).
        n = len(chunk)
        with self._lock:
            at = self.received
            if self.into is None or at + n > self.limit:
                self.overflow = True
                return
            self.into[at:at + n] = chunk
            self.received = at + n
            self.active = time.monotonic()

    def let_go(self) -> None:
        """The caller is done with the buffer: a cancelled request the CRT did not end
        within the grace may still call on_body, and must not write into a buffer that
        the next attempt (or the next chunk) fills."""
        with self._lock:
            self.into = None

    def on_done(self, error, error_headers, error_body, status_code, **_):
        self.error = error
        self.error_headers = {k.lower(): v for k, v in (error_headers or [])}
        self.error_body = error_body
        if status_code:
            self.status = status_code
        try:
            self._token.run_sync_soon(self.done.set)
        except trio.RunFinishedError:  # the daemon is gone: nobody waits
            pass


def target_gbps_for(connections: int) -> float:
    """The CRT opens connections by its throughput target, about 2.5 per Gbps (10, its
    default, opens 25), whatever max_active_connections_override allows: a target that
    lets it open all of them. Below, 25 connections held 1,500 HEADs 30 ms away to
    2.0 s where 64 take 1.3 s (docs/PERFORMANCE.md)."""
    return max(10.0, connections / 2.0)


class CrtDataPlane:
    def __init__(self, place_of: Callable[[str], Place], region: str, credentials: Callable[[], tuple],
                 ca_bundle: str = "", connect_timeout: float = 10.0, max_attempts: int = 5,
                 connections: int = 64, skew_of: Callable[[dict, dict], float | None] | None = None,
                 refresh: Callable[[], Awaitable[None]] | None = None, read_timeout: float = 30.0,
                 min_transfer_rate: int = 1 << 20):
        """place_of(key) -> Place; credentials() -> (access key, secret key, token or None),
        called on CRT threads whenever it signs; refresh() is awaited before each request
        (renews what credentials() returns)."""
        if not AVAILABLE:
            raise RuntimeError("awscrt is not installed")
        self._place_of = place_of
        self._refresh = refresh
        # Sent with every request (SSE-C: the customer key's three headers)
        self.extra_headers: list[tuple[str, str]] = []
        self._read_timeout = read_timeout
        self._min_rate = min_transfer_rate
        self._live: set[_Exchange] = set()  # requests under way, for the watchdog
        self._watchdog_of: trio.lowlevel.TrioToken | None = None
        self._skew_of = skew_of or (lambda err, headers: None)
        elg = crtio.EventLoopGroup(0)
        bootstrap = crtio.ClientBootstrap(elg, crtio.DefaultHostResolver(elg))

        def current():
            key, secret, token = credentials()
            return auth.AwsCredentials(key, secret, token)
        provider = auth.AwsCredentialsProvider.new_delegate(current)
        # A part carrying Content-MD5 (signed) is sent UNSIGNED-PAYLOAD, as aiobotocore
        # does with payload signing off; one without gets its SHA-256 signed (content_md5 =
        # false), hashed by the caller (the CRT's own hashing of a DEFAULT request's body
        # is not done on every version).
        self._signing = auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4, signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=provider, region=region, service="s3",
            signed_body_value=auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
            signed_body_header_type=auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
            use_double_uri_encode=False, should_normalize_uri_path=False)
        tls_options = None
        if ca_bundle:
            ctx = crtio.TlsContextOptions()
            ctx.override_default_trust_store_from_path(ca_filepath=ca_bundle)
            tls_options = crtio.ClientTlsContext(ctx).new_connection_options()
        self._clients = {}
        for tls in (False, True):
            self._clients[tls] = s3.S3Client(
                bootstrap=bootstrap, region=region, signing_config=self._signing,
                tls_mode=s3.S3RequestTlsMode.ENABLED if tls else s3.S3RequestTlsMode.DISABLED,
                tls_connection_options=tls_options if tls else None,
                max_active_connections_override=connections,
                throughput_target_gbps=target_gbps_for(connections),
                retry_config=s3.S3RetryConfig(max_retries=max(1, max_attempts - 1)),
                connect_timeout_ms=int(connect_timeout * 1000))

    async def _request(self, op: str, method: str, key: str, query: str, headers: list[tuple[str, str]],
                       body=None, into: bytearray | None = None, limit: int = 0,
                       body_sha256: str | None = None, whole: bool = False) -> _Exchange:
        if self._refresh is not None:
            await self._refresh()
        place = self._place_of(key)
        ex = _Exchange(trio.lowlevel.current_trio_token(), into, limit)
        request = http.HttpRequest(method, place.path(key, query),
                                   http.HttpHeaders([("Host", place.host), *headers, *self.extra_headers]),
                                   _BodyReader(body) if body is not None else None)
        # A ranged GetObject as the CRT's own GET_OBJECT (its pooled buffers: a third less
        # CPU than a DEFAULT request, which grows a fresh buffer per answer); one range =
        # one GET. Everything else (and a whole small GET) is one DEFAULT request.
        kind = {"type": s3.S3RequestType.GET_OBJECT} if op == "GetObject" and not whole \
            else {"operation_name": op, "type": s3.S3RequestType.DEFAULT}
        meta = self._clients[place.tls].make_request(
            request=request, **kind,
            signing_config=self._signing.replace(signed_body_value=body_sha256) if body_sha256 else self._signing,
            on_headers=ex.on_headers, on_body=ex.on_body if into is not None else None, on_done=ex.on_done)
        ex.meta = meta
        ex.sending = len(body) / self._min_rate if body is not None else 0.0
        self._watched(ex)
        try:
            await ex.done.wait()
        except BaseException:  # cancelled (deadline, unmount): stop it, then let it end
            meta.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(_CANCEL_GRACE):
                await ex.done.wait()
            raise
        finally:
            self._live.discard(ex)
            # meta holds ex's callbacks: without this cycle broken, each request (and the
            # part body it sent) would wait for the cycle collector (RSS +2 GiB in the soak)
            ex.meta = None
            ex.let_go()
        if ex.stalled:
            raise StoreError(f"{_LABEL[op]} {key}: S3 went silent for {self._read_timeout:g} s (read_timeout)",
                             code="ReadTimeout", transient=True)
        if ex.error is not None:
            raise self._error(op, key, ex) from None
        return ex

    def _watched(self, ex: _Exchange) -> None:
        """Under the watchdog until its answer is done. One task watches every request
        (a task per request cost a tenth of the daemon's CPU in a content view)."""
        self._live.add(ex)
        token = trio.lowlevel.current_trio_token()
        if self._watchdog_of is not token:  # the first request of this trio run
            self._watchdog_of = token
            trio.lowlevel.spawn_system_task(self._watchdog, name="crt read_timeout watchdog")

    async def _watchdog(self) -> None:
        """read_timeout for the CRT, which has none: a request whose connection stays
        silent that long is cancelled (and retried by the caller), as botocore does."""
        while True:
            await trio.sleep(min(1.0, self._read_timeout / 4))
            now = time.monotonic()
            for ex in list(self._live):
                if now - ex.active > self._read_timeout + (0.0 if ex.answered else ex.sending):
                    ex.stalled = True
                    self._live.discard(ex)
                    ex.meta.cancel()

    def _error(self, op: str, key: str, ex: _Exchange) -> StoreError:
        status = ex.status or 0
        if ex.error_headers or status:
            fields = _error_fields(ex.error_body)
            code = fields.get("Code") or str(status)
            message = fields.get("Message") or code
            transient = status >= 500 or code in _TRANSIENT_CODES
            return StoreError(f"{_LABEL[op]} {key}: {code} ({status}) {message}", code=code, transient=transient,
                              skew=self._skew_of(fields, ex.error_headers))
        name = getattr(ex.error, "name", type(ex.error).__name__)
        return StoreError(f"{_LABEL[op]} {key}: {name}", code="Network", transient=True)

    async def upload_part(self, key: str, upload_id: str, number: int, body, checksum: tuple[str, str] | None,
                          body_sha256: str | None = None):
        """checksum: (header, value), e.g. ("Content-MD5", ...), signed; or body_sha256
        (hex), signed instead of UNSIGNED-PAYLOAD. Returns the part's ETag."""
        headers = [("Content-Length", str(len(body)))]
        if checksum:
            headers.append(checksum)
        ex = await self._request("UploadPart", "PUT", key,
                                 f"partNumber={number}&uploadId={quote(upload_id, safe='')}", headers, body=body,
                                 body_sha256=body_sha256)
        etag = ex.headers.get("etag", "").strip('"')
        if not etag:
            raise StoreError(f"UploadPart {key}: no ETag in the answer", code="NoETag", transient=True)
        return etag

    async def get_range(self, key: str, start: int, end: int, etag: str | None,
                        into: bytearray | None = None):
        """Bytes [start, end) of key; Changed when If-Match etag no longer holds. Into the
        caller's buffer when given (a view of it is returned), else a new bytearray."""
        headers = [("Range", f"bytes={start}-{end - 1}")]
        if etag:
            headers.append(("If-Match", f'"{etag}"'))
        buffer = into if into is not None and len(into) >= end - start else bytearray(end - start)
        try:
            ex = await self._request("GetObject", "GET", key, "", headers, into=buffer, limit=end - start)
        except StoreError as e:
            if etag and e.code in ("PreconditionFailed", "412"):
                raise Changed(f"get_object {key}: the object changed (If-Match {etag})") from None
            raise
        length = ex.headers.get("content-length", "")
        if ex.overflow or (length.isdigit() and int(length) != ex.received):
            # a server that ignored the Range (sent more than asked), or a body cut short
            raise StoreError(f"get_object {key}: {ex.received} bytes for a range of {end - start}"
                             f" (answer {ex.status}, Content-Length {length or '-'})", code="ShortRead", transient=True)
        if buffer is into:
            return memoryview(into)[:ex.received]
        if ex.received != end - start:  # the object ends inside the range
            del buffer[ex.received:]
        return buffer

    async def head(self, key: str) -> dict[str, str] | None:
        """HeadObject: the answer's headers (lower-case names), None when there is no such key."""
        try:
            ex = await self._request("HeadObject", "HEAD", key, "", [])
        except StoreError as e:
            if e.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ex.headers

    async def get_head(self, key: str, limit: int) -> tuple[dict[str, str], bytes | None] | None:
        """The first `limit` bytes of key and the answer's headers; bytes None when the
        server sent more than that (it ignored the Range). None when there is no such key;
        StoreError InvalidRange for an empty object (it has no byte 0)."""
        buffer = bytearray(limit)
        try:
            ex = await self._request("GetObject", "GET", key, "", [("Range", f"bytes=0-{limit - 1}")],
                                     into=buffer, limit=limit, whole=True)
        except StoreError as e:
            if e.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        length = ex.headers.get("content-length", "")
        if length.isdigit() and int(length) != ex.received and not ex.overflow:
            raise StoreError(f"get_object {key}: {ex.received} of {length} bytes",
                             code="ShortRead", transient=True)
        return ex.headers, None if ex.overflow else bytes(memoryview(buffer)[:ex.received])
