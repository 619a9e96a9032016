"""S3 requests per phase, counted from Ceph RGW's log.

With `debug rgw = 1` (the default level 1/5 of Ceph 16), radosgw writes one access
line per finished request, e.g.

  ... 1 beast: 0x7f..: 127.0.0.1 - test [24/Nov/2026:18:16:09.794 +0000] "PUT /test/a/b HTTP/1.1" 200 1 - "UA" - latency=0.004s

A phase is bracketed by two marker requests (a HEAD of a unique missing key sent by
the harness): the lines between them are the phase's requests. Only lines whose
request target names the phase's key prefix are counted, and the harness's own
requests (user agent BENCH_UA) never are, so other clients of a shared server do
not pollute the count. Operations are classified from method, path and query:
the line does not show the x-amz-copy-source header, so CopyObject is counted as
PutObject and UploadPartCopy as UploadPart.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from bench.raw import BENCH_UA, S3

_LINE = re.compile(r' beast: \S+: \S+ - \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d+) (\d+) - "([^"]*)"')


@dataclass
class Requests:
    total: int = 0
    by_op: Counter = field(default_factory=Counter)
    bytes: int = 0          # request + response body bytes, as RGW logs them
    errors: int = 0         # HTTP status >= 400

    def as_dict(self) -> dict:
        return {"total": self.total, "by_op": dict(self.by_op.most_common()), "bytes": self.bytes,
                "errors": self.errors}


def classify(method: str, target: str, bucket: str) -> str:
    parts = urlsplit(target)
    path = unquote(parts.path).lstrip("/")
    query = parse_qs(parts.query, keep_blank_values=True)
    on_bucket = path in (bucket, bucket + "/")
    if on_bucket:
        if method == "GET":
            if "uploads" in query:
                return "ListMultipartUploads"
            if query.get("list-type") == ["2"]:
                return "ListObjectsV2"
            if "location" in query:
                return "GetBucketLocation"
            return "ListObjects(v1)"
        if method == "HEAD":
            return "HeadBucket"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return f"{method} bucket"
    if method == "GET":
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return f"{method} object"


@dataclass
class Rgw:
    """The local radosgw process serving the endpoint's port."""
    pid: int
    conf: str
    name: str
    log: str
    asok: str
    frontends: str = ""


def find_rgw(port: int) -> Rgw | None:
    """Found from the radosgw command line (-c CONF -n NAME) and `ceph-conf --lookup`;
    only in this process's network namespace (bench/run --rtt runs one of its own)."""
    own_net = os.readlink("/proc/self/ns/net")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != own_net:
                continue
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "radosgw":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        conf = name = None
        for i, a in enumerate(argv[:-1]):
            if a in ("-c", "--conf"):
                conf = argv[i + 1]
            elif a in ("-n", "--name"):
                name = argv[i + 1]
        if not conf or not name:
            continue

        def lookup(key: str) -> str:
            r = subprocess.run(["ceph-conf", "-c", conf, "-n", name, "--lookup", key],
                               capture_output=True, text=True, timeout=10)
            return r.stdout.strip()
        try:
            frontends = lookup("rgw_frontends")
            if f":{port}" not in frontends:
                continue
            log, asok = lookup("log_file"), lookup("admin_socket")
        except (OSError, subprocess.TimeoutExpired):
            continue
        if log and os.path.isfile(log):
            return Rgw(int(pid), conf, name, log, asok, frontends)
    return None


class RgwLog:
    def __init__(self, path: str, s3: S3):
        self.path = path
        self.s3 = s3

    def _size(self) -> int:
        return os.path.getsize(self.path)

    def sync(self, timeout: float = 10.0) -> int:
        """Send a marker request and return the log offset just past its line."""
        start = max(0, self._size() - 4096)
        tag = self.s3.marker()
        deadline = time.monotonic() + timeout
        while True:
            with open(self.path, "rb") as f:
                f.seek(start)
                data = f.read()
            i = data.find(tag.encode())
            if i >= 0:
                j = data.find(b"\n", i)
                if j >= 0:
                    return start + j + 1
            if time.monotonic() > deadline:
                # The log is not being written (level too low?): count from here anyway.
                return self._size()
            time.sleep(0.05)

    def count(self, start: int, end: int, prefix: str) -> Requests:
        """Requests logged between two offsets whose target names `prefix` (a key prefix
        such as 'bench-s3pvefs/'), leaving out the harness's own."""
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(max(0, end - start)).decode(errors="replace")
        bare = prefix.rstrip("/")
        out = Requests()
        bucket = self.s3.ep.bucket
        for line in data.splitlines():
            m = _LINE.search(line)
            if not m:
                continue
            method, target, status, nbytes, agent = m.groups()
            if BENCH_UA in agent:
                continue
            plain = unquote(target)
            if f"/{bucket}/{bare}" not in plain and f"prefix={bare}" not in plain:
                continue
            out.total += 1
            out.by_op[classify(method, target, bucket)] += 1
            out.bytes += int(nbytes)
            out.errors += int(status) >= 400
        return out


def ensure_logging(asok: str) -> None:
    """Best effort: make sure radosgw logs its access lines (debug_rgw >= 1)."""
    if not os.path.exists(asok):
        return
    try:
        r = subprocess.run(["ceph", "--admin-daemon", asok, "config", "get", "debug_rgw"],
                           capture_output=True, text=True, timeout=10)
        if '"0/' in r.stdout:
            subprocess.run(["ceph", "--admin-daemon", asok, "config", "set", "debug_rgw", "1/5"],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass
