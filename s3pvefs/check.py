"""`s3pvefs check`: test the way to a bucket step by step, and say what is wrong.

Each step is a small async function of a shared ``Probe``; STEPS lists them in order
with the steps each one needs. A step returns a PASS detail, raises ``Failed`` (what
happened and its likely cause) or ``Skipped``; a step whose needs did not pass is
skipped. The S3 requests go through the same client as the mount (S3Store.open, the
same settings: addressing style, checksums, Content-MD5, timeouts, retries), so what
passes here is what the mount sends.

Objects written: ``<prefix>/.s3pvefs-check-<random>`` and two siblings (``-multipart``,
``-copy``), each deleted at the end, also after a failure or an interruption.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable, TextIO

import botocore.exceptions
import trio

from s3pvefs import bucketaccess
from s3pvefs.config import Config, MiB
from s3pvefs.errors import ConfigError, MountError, StoreError
from s3pvefs.store.base import PartEtag
from s3pvefs.store.s3 import MAX_SKEW, S3Store, translate_error
from s3pvefs.write.uploader import copy_object

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


class Failed(Exception):
    """A step failed: ``what`` happened, ``cause`` is the likely reason."""

    def __init__(self, what: str, cause: str = ""):
        super().__init__(what)
        self.what, self.cause = what, cause


class Skipped(Exception):
    """A step that does not apply (TLS on http): it does not hold the later ones back."""


class ProbeStore(S3Store):
    """S3Store plus the one request whose raw answer (headers, error code) the check
    reads: a signed ListObjectsV2 of at most one key."""

    @property
    def endpoint_url(self) -> str:
        return self._client.meta.endpoint_url

    async def signed_list(self, prefix: str) -> dict:
        """The response (with ResponseMetadata.HTTPHeaders); on an error a StoreError
        with ``.response``, the error's own response (its headers: Date, bucket region)."""
        try:
            with self._bounded("list_objects_v2", prefix):
                return await self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            err = translate_error("list_objects_v2", prefix, e)
            err.response = getattr(e, "response", None) or {}
            raise err from None


@dataclass
class Probe:
    """What the steps share."""

    config: Config
    endpoint: str
    store: ProbeStore | None = None
    client_problem: str = ""  # the client could not be made (no credentials...): why
    addresses: list[tuple] = field(default_factory=list)  # getaddrinfo results
    connected: tuple | None = None  # the sockaddr the TCP step reached
    server_date: float | None = None  # the Date of the authentication answer, epoch seconds
    local_date: float | None = None  # local time when that answer arrived
    skewed: bool = False  # the server said RequestTimeTooSkewed
    listing: dict | None = None  # the authentication step's successful ListObjectsV2
    key: str = ""
    data: bytes = b""
    created: set[str] = field(default_factory=set)  # probe keys perhaps in the bucket
    uploads: dict[str, str] = field(default_factory=dict)  # key -> multipart upload id to abort

    @property
    def url(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.endpoint)

    @property
    def host(self) -> str:
        host = self.url.hostname or ""
        s = self.config.store
        virtual = s.addressing_style == "virtual" or (
            s.addressing_style == "auto" and re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", s.bucket))
        if virtual and host and not _is_ip(host):  # the bucket's own name is what is resolved
            host = f"{s.bucket}.{host}"
        return host

    @property
    def port(self) -> int:
        return self.url.port or (443 if self.url.scheme == "https" else 80)

    @property
    def timeout(self) -> float:
        return self.config.store.connect_timeout


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


def _ms(t0: float) -> str:
    dt = time.monotonic() - t0
    return f"{dt * 1000:.0f} ms" if dt < 1 else f"{dt:.1f} s"


def _addr(sockaddr: tuple) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------- network steps

async def step_dns(p: Probe) -> str:
    host = p.host
    if not host:
        raise Failed(f"endpoint URL {p.endpoint!r} has no host name", "a typo in endpoint_url")
    t0 = time.monotonic()
    with trio.move_on_after(p.timeout) as scope:
        try:
            infos = await trio.socket.getaddrinfo(host, p.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise Failed(f"{host}: no such host ({e.strerror})",
                             "a typo in the endpoint URL's host name, or a name only another DNS server "
                             "knows (check /etc/resolv.conf)") from None
            raise Failed(f"{host}: {e.strerror}", "the DNS server does not answer: check /etc/resolv.conf "
                                                  "and the network") from None
    if scope.cancelled_caught:
        raise Failed(f"{host}: no answer from DNS within {p.timeout:.0f} s",
                     "the DNS server does not answer: check /etc/resolv.conf and the network")
    seen = []
    for info in infos:
        if info[4] not in seen:
            seen.append(info[4])
    p.addresses = [i for i in infos if i[4] in seen]
    if _is_ip(host):
        return f"{host} is an IP address: nothing to resolve"
    shown = ", ".join(a[0] for a in seen[:3]) + (f" (+{len(seen) - 3})" if len(seen) > 3 else "")
    return f"{host} -> {shown} ({_ms(t0)})"


_CONNECT_ERRORS = {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout",
                   errno.ENETUNREACH: "network unreachable", errno.EHOSTUNREACH: "host unreachable"}


async def step_tcp(p: Probe) -> str:
    errors = []
    for family, type_, proto, _, sockaddr in p.addresses[:4]:
        sock = trio.socket.socket(family, type_, proto)
        t0 = time.monotonic()
        try:
            with trio.move_on_after(p.timeout) as scope:
                await sock.connect(sockaddr)
            if scope.cancelled_caught:
                errors.append((sockaddr, "timeout"))
                continue
        except OSError as e:
            errors.append((sockaddr, _CONNECT_ERRORS.get(e.errno, os.strerror(e.errno) if e.errno else str(e))))
            continue
        finally:
            sock.close()
        p.connected = sockaddr
        return f"connected to {_addr(sockaddr)} ({_ms(t0)})"
    where = ", ".join(f"{_addr(a)}: {why}" for a, why in errors)
    reasons = {why for _, why in errors}
    if reasons == {"refused"}:
        cause = (f"nothing listens on port {p.port}: a wrong port in the endpoint URL, "
                 "or the S3 server is not running")
    elif "timeout" in reasons:
        cause = (f"no answer within {p.timeout:.0f} s: a firewall drops the packets, "
                 "or the host is down (connect_timeout)")
    else:
        cause = "no route to the server: check the network, the routes and the firewall"
    raise Failed(f"cannot connect to {where}", cause)


def _ca_bundle(config: Config) -> str:
    """The CA certificates botocore verifies with: AWS_CA_BUNDLE / the profile's
    ca_bundle, else certifi's (botocore's default), so the answer is the mount's."""
    import botocore.httpsession
    import botocore.session
    try:
        session = botocore.session.Session(profile=config.store.profile)
        bundle = session.get_config_variable("ca_bundle")
    except botocore.exceptions.BotoCoreError:
        bundle = None
    return bundle or botocore.httpsession.get_cert_path(True)


async def step_tls(p: Probe) -> str:
    if p.url.scheme != "https":
        raise Skipped("http endpoint: no TLS")
    host = p.host
    ctx = ssl.create_default_context(cafile=_ca_bundle(p.config))
    family = socket.AF_INET6 if ":" in p.connected[0] else socket.AF_INET
    t0 = time.monotonic()
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(p.timeout) as scope:
            await sock.connect(p.connected)
            stream = trio.SSLStream(trio.SocketStream(sock), ctx, server_hostname=host)
            await stream.do_handshake()
            cert = stream.getpeercert() or {}
            version = stream.version()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.aclose()
        if scope.cancelled_caught:
            raise Failed(f"no TLS handshake within {p.timeout:.0f} s",
                         "the server does not speak TLS on this port (an http:// endpoint?)")
    except (ssl.SSLError, trio.BrokenResourceError, OSError) as e:
        inner = e.__cause__ if isinstance(e, trio.BrokenResourceError) and e.__cause__ else e
        if isinstance(inner, ssl.SSLCertVerificationError):
            raise _certificate_failure(p, inner) from None
        text = str(inner) or inner.__class__.__name__
        cause = ("the server does not speak TLS on this port: an http:// endpoint, or the wrong port"
                 if "WRONG_VERSION_NUMBER" in text or "record layer" in text.lower()
                 else "the server or a proxy in between broke off the handshake")
        raise Failed(f"TLS handshake failed: {text}", cause) from None
    finally:
        sock.close()
    expires = cert.get("notAfter")
    issuer = dict(x[0] for x in cert.get("issuer", ()) if x)
    by = issuer.get("organizationName") or issuer.get("commonName")
    return (f"{version}, certificate for {host} valid" + (f" until {_date(expires)}" if expires else "")
            + (f", issued by {by}" if by else "") + f" ({_ms(t0)})")


def _certificate_failure(p: Probe, e: ssl.SSLCertVerificationError) -> Failed:
    why = e.verify_message or str(e)
    if "hostname" in why.lower() or "ip address mismatch" in why.lower():
        cause = f"the certificate is not for {p.host}: use the name it was issued for in the endpoint URL"
        if p.config.store.addressing_style != "path":
            cause += ", or addressing_style=path (a wildcard certificate does not cover bucket.host)"
    elif "expired" in why.lower():
        cause = "the server's certificate has expired (or the local clock is wrong)"
    else:
        cause = ("the certificate is not signed by a trusted CA: a self-signed or private CA needs "
                 "AWS_CA_BUNDLE=/path/to/ca.pem (or ca_bundle in the AWS config file)")
    return Failed(f"certificate verification failed: {why}", cause)


def _date(cert_time: str) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ssl.cert_time_to_seconds(cert_time)))


# ---------------------------------------------------------------------------- S3 steps

def _headers(resp: dict | None) -> dict:
    return (resp or {}).get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}


def _note_date(p: Probe, resp: dict | None) -> None:
    date = _headers(resp).get("date")
    if date:
        with contextlib.suppress(TypeError, ValueError):
            p.server_date = parsedate_to_datetime(date).timestamp()
            p.local_date = time.time()


def _region_hint(message: str, headers: dict) -> str:
    m = re.search(r"expecting '([^']+)'", message)
    region = headers.get("x-amz-bucket-region") or (m.group(1) if m else "")
    return f" (the server expects {region}: --region {region})" if region else ""


async def step_auth(p: Probe) -> str:
    if p.store is None:
        raise Failed(p.client_problem, "no credentials to sign with: see the message")
    s = p.config.store
    prefix = f"{s.prefix}/" if s.prefix else ""
    try:
        resp = await p.store.signed_list(prefix)
    except StoreError as e:
        resp = getattr(e, "response", {}) or {}
        _note_date(p, resp)
        code, headers = e.code, _headers(resp)
        message = str(resp.get("Error", {}).get("Message", "")) or str(e)
        if code == "SignatureDoesNotMatch":
            raise Failed(f"{code}", "wrong secret key (AWS_SECRET_ACCESS_KEY, or aws_secret_access_key "
                                    "of the profile)") from None
        if code == "InvalidAccessKeyId":
            raise Failed(f"{code}", "unknown access key: the server has no such key id (AWS_ACCESS_KEY_ID, "
                                    "or aws_access_key_id of the profile), or it was deleted") from None
        if code in ("AuthorizationHeaderMalformed", "InvalidRegion", "IllegalLocationConstraintException",
                    "AuthorizationQueryParametersError") or "region" in message.lower():
            raise Failed(f"{code}: {message}", f"wrong region{_region_hint(message, headers)}") from None
        if code in ("PermanentRedirect", "301", "TemporaryRedirect", "307", "IncorrectEndpoint"):
            raise Failed(f"{code}: the server redirects to another endpoint",
                         f"wrong region or addressing style{_region_hint(message, headers)}; "
                         "self-hosted servers need addressing_style=path") from None
        if code == "RequestTimeTooSkewed":
            p.skewed = True
            raise Failed(code, "the local clock is off: see the clock skew line (NTP: timedatectl, chrony)") \
                from None
        if code in ("InvalidToken", "ExpiredToken", "TokenRefreshRequired"):
            raise Failed(code, "the session token (AWS_SESSION_TOKEN) is invalid or expired") from None
        if code in ("NoSuchBucket", "AccessDenied", "403"):
            return f"the server accepted the signature (ListObjectsV2: {code}, see below)"
        if code in ("Network", "Timeout"):
            raise Failed(str(e), "the connection broke during the request: a proxy or the server") from None
        raise Failed(str(e), "the server refused the signed request") from None
    _note_date(p, resp)
    if resp.get("Name") != p.config.store.bucket:  # a 200 from something that is not S3
        raise Failed("the answer is not an S3 ListObjectsV2 result",
                     "not an S3 endpoint (a web server, a portal or a proxy?): check the endpoint URL")
    p.listing = resp
    return "signed request accepted (ListObjectsV2)"


async def step_clock(p: Probe) -> str:
    if p.server_date is None:
        if p.skewed:
            raise Failed("RequestTimeTooSkewed without a Date header",
                         "the local clock is off by more than the server allows: fix NTP")
        raise Failed("the server sent no Date header to compare with", "not an S3 server?")
    skew = p.local_date - p.server_date  # > 0: the local clock is ahead
    text = f"local clock {abs(skew):.0f} s {'ahead of' if skew >= 0 else 'behind'} the server"
    if abs(skew) > MAX_SKEW or p.skewed:  # the same limit mount refuses at
        raise Failed(text, f"S3 refuses requests signed more than {MAX_SKEW / 60:.0f} minutes off: "
                           "sync the clock (timedatectl set-ntp true, chrony)")
    near = "; sync the clock before it gets there" if abs(skew) > MAX_SKEW / 3 else ""
    return f"{text} (Date header; at most {MAX_SKEW:.0f} s allowed{near})"


async def step_bucket(p: Probe) -> str:
    s = p.config.store
    try:
        await bucketaccess.check_bucket(p.store, p.config)  # what mount does before mounting
    except MountError as e:
        cause = {bucketaccess.EXIT_NO_BUCKET: "create it first, or fix a typo in the bucket name or the endpoint",
                 bucketaccess.EXIT_CREDENTIALS: "access denied by the bucket policy or user permissions "
                                          "(needs s3:ListBucket on the bucket)",
                 bucketaccess.EXIT_UNREACHABLE: "the connection broke during the request"}.get(e.exit_code, "")
        raise Failed(str(e), cause) from None
    where = f"{s.prefix}/" if s.prefix else "the bucket"
    if p.listing is not None:
        contents = "holds objects" if p.listing.get("KeyCount") or p.listing.get("Contents") else "is empty"
        return f"bucket {s.bucket!r} exists (HeadBucket); {where} {contents}"
    return f"bucket {s.bucket!r} exists (HeadBucket)"


def _rules(rules: list[dict]) -> tuple[int | None, int | None]:
    """Days after which enabled lifecycle rules for the whole bucket (or no filter)
    expire noncurrent versions and abort incomplete multipart uploads (None: no rule)."""
    noncurrent = incomplete = None
    for r in rules:
        if r.get("Status") != "Enabled":
            continue
        f = r.get("Filter", {"Prefix": r.get("Prefix", "")})
        if f.get("Prefix", "") != "" or set(f) - {"Prefix"}:
            continue  # a rule for part of the bucket only
        if (days := r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")) is not None:
            noncurrent = days if noncurrent is None else min(noncurrent, days)
        if (days := r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")) is not None:
            incomplete = days if incomplete is None else min(incomplete, days)
    return noncurrent, incomplete


async def _bucket_setting(p: Probe, op: str, absent: tuple[str, ...]) -> dict | str | None:
    """A bucket configuration; None: not set; a string: why it cannot be read."""
    try:
        return await p.store._call(op, p.config.store.bucket)
    except StoreError as e:
        if e.code in absent:
            return None
        if e.code in ("AccessDenied", "403"):
            return f"cannot tell: {op} denied"
        if e.code in ("NotImplemented", "501", "405", "MethodNotAllowed"):
            return "not supported by the server"
        return f"cannot tell: {e.code or e}"


async def step_features(p: Probe) -> str:
    """Versioning, Object Lock and lifecycle rules: what renames, rewrites and deletes
    leave behind on this bucket, and whether the mount's object lock settings fit."""
    s = p.config.store
    versioning = await _bucket_setting(p, "get_bucket_versioning", ())
    lock = await _bucket_setting(p, "get_object_lock_configuration", ("ObjectLockConfigurationNotFoundError",
                                                                        "InvalidRequest"))
    lifecycle = await _bucket_setting(p, "get_bucket_lifecycle_configuration",
                                      ("NoSuchLifecycleConfiguration",))
    state = versioning.get("Status", "never enabled") if isinstance(versioning, dict) else versioning
    locked = isinstance(lock, dict) and lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
    parts = [f"versioning: {state}",
             f"Object Lock: {'on' if locked else (lock if isinstance(lock, str) else 'off')}"]
    if s.object_lock_days and lock is None:
        raise Failed("; ".join(parts), "object_lock_days is set but the bucket has no Object Lock: the mount "
                                       "refuses it (Object Lock is chosen when a bucket is created)")
    if isinstance(lifecycle, str):
        parts.append(f"lifecycle: {lifecycle}")
    else:
        noncurrent, incomplete = _rules((lifecycle or {}).get("Rules", []))
        parts.append("incomplete uploads aborted after " + (f"{incomplete} days" if incomplete is not None else
                                                             "never (no lifecycle rule: they stay billed)"))
        if state in ("Enabled", "Suspended"):
            parts.append("noncurrent versions expire after " + (
                f"{noncurrent} days" if noncurrent is not None else
                "never: every rename, rewrite and delete keeps a billed old version (docs/PROXMOX.md section 7)"))
    return "; ".join(parts)


NEEDS = {
    "put": "s3:PutObject",
    "get": "s3:GetObject",
    "head": "s3:GetObject",
    "multipart": "s3:PutObject, s3:AbortMultipartUpload, s3:DeleteObject",
    "copy": "s3:GetObject on the source, s3:PutObject, s3:DeleteObject",
    "delete": "s3:DeleteObject",
}


def _write_failure(p: Probe, step: str, e: StoreError) -> Failed:
    """The likely cause of a failed object request."""
    code, text = e.code, str(e)
    if code in ("AccessDenied", "403"):
        return Failed(text, f"access denied by the bucket policy or user permissions (needs {NEEDS[step]})")
    checksum_codes = {"XAmzContentSHA256Mismatch", "InvalidDigest", "BadDigest"}
    if code in checksum_codes or (code in ("InvalidRequest", "InvalidArgument", "NotImplemented")
                                  and "checksum" in text.lower()):
        if p.config.store.checksums != "when_required":
            return Failed(text, "the server rejects checksum headers: set checksums=when_required")
        return Failed(text, "the server rejects checksum headers (Content-MD5 or the signed body hash): "
                            "try content_md5=false")
    s = p.config.store
    if s.sse == "SSE-C" and ("secure" in text.lower() or "ssl" in text.lower() or "https" in text.lower()):
        return Failed(text, "the server takes SSE-C keys over https only: use an https endpoint_url")
    if s.sse and (code.startswith("KMS.") or code in ("InvalidEncryptionAlgorithmError", "KMSNotFoundException")
                  or "kms" in text.lower() or "encrypt" in text.lower()):
        return Failed(text, f"the server refuses sse = {s.sse!r}" + (
            f" with key {s.sse_kms_key_id!r} (does it exist, may this user kms:GenerateDataKey and kms:Decrypt?)"
            if s.sse == "aws:kms" else "") + ", or does not support it")
    if code == "InvalidStorageClass" or "storage class" in text.lower() or (
            code == "InvalidArgument" and s.storage_class):  # Ceph RGW: an unknown class, no message
        return Failed(text, f"the server does not take storage class {s.storage_class!r} (storage_class)")
    if code == "NotImplemented":
        return Failed(text, "the server does not implement this operation")
    if code == "EntityTooSmall":
        return Failed(text, "the server wants bigger parts than 5 MiB: raise min_part_size")
    if code in ("QuotaExceeded", "XMinioStorageFull", "StorageFull"):
        return Failed(text, "the bucket or the server is full (quota)")
    if code in ("Network", "Timeout"):
        return Failed(text, "the connection broke or stalled during the request (request_deadline, "
                            "min_transfer_rate)")
    if code in ("SlowDown", "Throttling", "503"):
        return Failed(text, "the server throttles requests: try again later")
    return Failed(text, "the server refused the request")


async def step_put(p: Probe) -> str:
    p.created.add(p.key)
    t0 = time.monotonic()
    await p.store.put(p.key, p.data, {"s3pvefs-check": "1"}, content_type="application/octet-stream")
    s = p.config.store
    extras = "".join([f", sse={s.sse}" if s.sse else "", f", class {s.storage_class}" if s.storage_class else ""])
    return f"{p.key} ({len(p.data)} bytes{extras}, {_ms(t0)})"


async def step_get(p: Probe) -> str:
    t0 = time.monotonic()
    got = await p.store.get_range(p.key, 0, len(p.data))
    if got != p.data:
        raise Failed(f"GET returned {len(got)} bytes that differ from the {len(p.data)} written",
                     "a proxy or the server altered the body")
    return f"content verified ({_ms(t0)})"


async def step_head(p: Probe) -> str:
    info = await p.store.head(p.key)
    if info is None:
        raise Failed("HEAD says the object just written does not exist",
                     "the server is not read-after-write consistent, or the key was rewritten")
    if info.size != len(p.data):
        raise Failed(f"HEAD says {info.size} bytes, {len(p.data)} were written", "the server altered the object")
    if (info.metadata or {}).get("s3pvefs-check") != "1":
        raise Failed("the x-amz-meta-s3pvefs-check header was not kept",
                     "the server drops user metadata: modes and times will not persist")
    sse = p.config.store.sse
    if sse and info.encryption != sse:
        raise Failed(f"the probe was written with sse = {sse!r} but the server says it is "
                     f"{'not encrypted' if not info.encryption else repr(info.encryption)}",
                     "the server accepts the header and ignores it (Ceph RGW 16 does for AES256): "
                     "use SSE-C or aws:kms there, or the server's own default encryption")
    return f"size and metadata verified (ETag {info.etag[:16]})"


async def step_multipart(p: Probe) -> str:
    key = f"{p.key}-multipart"
    first = os.urandom(5 * MiB)
    last = b"\x5a"
    t0 = time.monotonic()
    p.created.add(key)
    upload_id = await p.store.create_multipart(key, {"s3pvefs-check": "1"})
    p.uploads[key] = upload_id
    parts = [PartEtag(1, await p.store.upload_part(key, upload_id, 1, first)),
             PartEtag(2, await p.store.upload_part(key, upload_id, 2, last))]
    await p.store.complete_multipart(key, upload_id, parts)
    del p.uploads[key]
    info = await p.store.head(key)
    size = len(first) + len(last)
    if info is None or info.size != size:
        raise Failed(f"the completed upload has {info.size if info else 'no'} bytes, not {size}",
                     "the server assembled the parts wrongly")
    if await p.store.get_range(key, len(first) - 1, size) != first[-1:] + last:
        raise Failed("the completed upload's bytes around the part boundary differ",
                     "the server assembled the parts wrongly")
    await p.store.delete(key)
    p.created.discard(key)
    return f"2 parts (5 MiB + 1 byte) completed, {size} bytes verified, deleted ({_ms(t0)})"


async def step_copy(p: Probe) -> str:
    key = f"{p.key}-copy"
    t0 = time.monotonic()
    p.created.add(key)
    parts_before = p.store.requests["upload_part_copy"]
    await copy_object(p.store, p.key, key, len(p.data), None, p.config.write)  # as a rename does
    by_parts = p.store.requests["upload_part_copy"] > parts_before
    info = await p.store.head(key)
    if info is None or info.size != len(p.data):
        raise Failed(f"the copy has {info.size if info else 'no'} bytes, not {len(p.data)}",
                     "the server copied wrongly")
    if await p.store.get_range(key, 0, len(p.data)) != p.data:
        raise Failed("the copy's content differs from the original", "the server copied wrongly")
    await p.store.delete(key)
    p.created.discard(key)
    if by_parts:  # Ceph RGW before 17 cannot CopyObject an encrypted object
        return f"CopyObject refused (NotImplemented): copied by UploadPartCopy instead, verified, deleted ({_ms(t0)})"
    return f"CopyObject verified, deleted ({_ms(t0)})"


async def step_checksum(p: Probe) -> str:
    """The checksum every body carries must be checked by the server, or a body corrupted
    on the way would be stored. Content-MD5 (md5) every S3 server checks. crc32c: a PUT
    whose x-amz-checksum-crc32c is wrong must be refused (Ceph RGW before 19 ignores
    the header). content_md5 = false: a part whose body is not the one its signed
    x-amz-content-sha256 names must be refused (moto, for one, stores it)."""
    s = p.config.store
    key = f"{p.key}-checksum"
    if not s.content_md5:
        return await _signed_sha256_checked(p, key)
    if s.checksum_algorithm != "crc32c":
        raise Skipped("checksum_algorithm = md5: Content-MD5, which every S3 server checks")
    p.created.add(key)
    try:
        await p.store._call("put_object", key, Key=key, Body=b"s3pvefs checksum probe", ChecksumCRC32C="AAAAAA==")
    except StoreError as e:
        if e.code in ("BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "InvalidRequest", "400"):
            p.created.discard(key)
            return f"a body with a wrong x-amz-checksum-crc32c was refused ({e.code})"
        raise
    raise Failed("the server stored a body whose x-amz-checksum-crc32c was wrong",
                 "it does not check CRC32C: set checksum_algorithm = md5")


async def _signed_sha256_checked(p: Probe, key: str) -> str:
    plane = getattr(p.store, "_plane", None)  # the CRT signs whatever hash it is given
    if plane is None:
        raise Skipped("content_md5 = false: each body's SHA-256 is signed (data_plane = python: not probed)")
    upload = await p.store.create_multipart(key, {})
    try:
        await plane.upload_part(key, upload, 1, b"s3pvefs checksum probe", None,
                                body_sha256=hashlib.sha256(b"another body").hexdigest())
    except StoreError as e:
        if e.code in ("XAmzContentSHA256Mismatch", "BadDigest", "InvalidDigest", "400"):
            return f"a part whose body differs from its signed SHA-256 was refused ({e.code})"
        raise
    finally:
        with contextlib.suppress(StoreError):
            await p.store.abort_multipart(key, upload)
    raise Failed("the server stored a part whose body differs from its signed SHA-256",
                 "it does not check the signed body hash: set content_md5 = true")


async def step_delete(p: Probe) -> str:
    await p.store.delete(p.key)
    p.created.discard(p.key)
    try:
        gone = await p.store.head(p.key) is None
    except StoreError:  # HEAD denied (no s3:GetObject): that failure is reported above
        return "probe object deleted (not verified: HEAD failed)"
    if not gone:
        raise Failed("the probe object is still there after DeleteObject",
                     "the server ignored the delete")
    return "probe object deleted, HEAD says 404"


@dataclass(frozen=True)
class Step:
    name: str
    label: str
    run: Callable[[Probe], Awaitable[str]]
    needs: tuple[str, ...] = ()
    writes: bool = False  # S3 object request: its StoreErrors go through _write_failure


STEPS = (
    Step("dns", "DNS resolution", step_dns),
    Step("tcp", "TCP connect", step_tcp, ("dns",)),
    Step("tls", "TLS handshake", step_tls, ("tcp",)),
    Step("auth", "authentication", step_auth, ("tcp", "tls")),
    Step("clock", "clock skew", step_clock, ("tcp", "tls")),
    Step("bucket", "bucket exists", step_bucket, ("auth",)),
    Step("features", "bucket features", step_features, ("bucket",)),
    Step("put", "put probe object", step_put, ("bucket",), writes=True),
    Step("get", "get probe object", step_get, ("put",), writes=True),
    Step("head", "head probe object", step_head, ("put",), writes=True),
    Step("multipart", "multipart upload", step_multipart, ("bucket",), writes=True),
    Step("copy", "server-side copy", step_copy, ("put",), writes=True),
    Step("checksum", "checksum checked", step_checksum, ("bucket",), writes=True),
    Step("delete", "delete probe object", step_delete, ("put",), writes=True),
)


@dataclass(frozen=True)
class Result:
    step: Step
    status: str
    text: str
    blocks: bool  # later steps needing this one are skipped
    root: str = ""  # the failed step that blocks this one (itself when it failed)

    def line(self) -> str:
        return f"{self.status}  {self.step.label:<20} {self.text}"


async def run_step(step: Step, p: Probe, done: dict[str, Result]) -> Result:
    roots = list(dict.fromkeys(done[n].root for n in step.needs if done[n].blocks))
    if roots:
        return Result(step, SKIP, f"not run: {' and '.join(roots)} failed", True, roots[0])
    try:
        return Result(step, PASS, await step.run(p), False)
    except Skipped as e:
        return Result(step, SKIP, str(e), False)
    except (Failed, StoreError) as e:
        if isinstance(e, StoreError):
            e = _write_failure(p, step.name, e) if step.writes else Failed(str(e))
        text = f"{e.what}; likely cause: {e.cause}" if e.cause else e.what
        return Result(step, FAIL, text, True, step.label)


def default_endpoint(config: Config) -> str:
    """Where botocore sends requests when no endpoint_url is given (AWS)."""
    r = config.store.region
    return "https://s3.amazonaws.com" if r == "us-east-1" else f"https://s3.{r}.amazonaws.com"


async def _cleanup(p: Probe) -> list[str]:
    """Abort and delete whatever the steps left behind; what could not be removed, and why."""
    with trio.CancelScope(shield=True), trio.move_on_after(2 * p.config.store.request_deadline):
        for key, upload_id in list(p.uploads.items()):
            with contextlib.suppress(StoreError):
                await p.store.abort_multipart(key, upload_id)
                del p.uploads[key]
        for key in sorted(p.created):
            with contextlib.suppress(StoreError):
                await p.store.delete(key)
                p.created.discard(key)
    return [f"{k} (multipart upload not aborted)" for k in p.uploads] + sorted(p.created)


async def check(config: Config, out: TextIO) -> int:
    """Run every step, print a line for each; 0 when all passed, 1 otherwise.
    ConfigError (exit 2) when the client cannot be made for a configuration mistake."""
    s = config.store
    async with contextlib.AsyncExitStack() as stack:
        store, problem = None, ""
        try:  # aiobotocore creates the client, and looks for credentials, only here
            store = await stack.enter_async_context(ProbeStore.open(s))
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            err = bucketaccess.client_error(e, config)
            if isinstance(err, ConfigError):
                raise err from None
            problem = str(err)  # no credentials: the network steps still run
        p = Probe(config, store.endpoint_url if store else (s.endpoint_url or default_endpoint(config)),
                  store=store, client_problem=problem)
        p.key = (f"{s.prefix}/" if s.prefix else "") + f".s3pvefs-check-{os.urandom(6).hex()}"
        p.data = os.urandom(4096) + b"s3pvefs check\n"
        name = f"{s.bucket}/{s.prefix}" if s.prefix else s.bucket
        print(f"s3pvefs check of {name} at {p.endpoint} (region {s.region}, {s.addressing_style} addressing)",
              file=out, flush=True)
        done: dict[str, Result] = {}
        try:
            for step in STEPS:
                done[step.name] = r = await run_step(step, p, done)
                print(r.line(), file=out, flush=True)
        finally:
            left = await _cleanup(p) if store is not None and (p.created or p.uploads) else []
        for what in left:
            print(f"WARN  could not remove {what}: delete it by hand", file=out)
    failed = [r for r in done.values() if r.status == FAIL]
    skipped = [r for r in done.values() if r.status == SKIP and r.blocks]
    if not failed:
        print(f"all checks passed: {name} is ready for s3pvefs mount", file=out)
        return 0
    print(f"{len(failed)} failed, {len(skipped)} skipped: fix the first failure "
          f"({failed[0].step.label}) first", file=out)
    return 1
