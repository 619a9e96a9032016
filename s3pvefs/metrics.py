"""Optional Prometheus metrics on 127.0.0.1:metrics_port (0 = off), made from the same
snapshot as `s3pvefs status` (status.snapshot), in the trio loop: a scrape never
touches the filesystem's state from another thread."""

from __future__ import annotations

import logging

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)


class _Snapshot:
    def __init__(self, snap: dict):
        self.snap = snap

    def collect(self):
        s = self.snap
        files = s["files"]
        yield GaugeMetricFamily("s3pvefs_pending_files", "Files with changes not yet committed", len(files))
        yield GaugeMetricFamily("s3pvefs_pending_bytes", "Bytes written but not yet stored by S3",
                                sum(f["written"] - f["stored"] for f in files))
        yield GaugeMetricFamily("s3pvefs_parts_in_flight", "Part uploads running",
                                sum(f["parts_in_flight"] for f in files))
        memory = GaugeMetricFamily("s3pvefs_memory_bytes", "Buffered bytes by budget", labels=["budget", "what"])
        for budget in ("write", "read"):
            memory.add_metric([budget, "used"], s["memory"][f"{budget}_used"])
            memory.add_metric([budget, "limit"], s["memory"][f"{budget}_limit"])
        yield memory
        yield GaugeMetricFamily("s3pvefs_staging_bytes", "Local disk used by the write-back cache", s["staging_bytes"])
        requests = CounterMetricFamily("s3pvefs_s3_requests", "S3 requests by operation", labels=["operation"])
        for op, n in s["requests"].items():
            requests.add_metric([op], n)
        yield requests
        sent = CounterMetricFamily("s3pvefs_s3_bytes", "Body bytes moved to and from S3", labels=["direction"])
        sent.add_metric(["sent"], s["bytes"]["sent"])
        sent.add_metric(["received"], s["bytes"]["received"])
        yield sent
        errors = CounterMetricFamily("s3pvefs_s3_failures", "S3 requests failed after retries, by error code",
                                     labels=["code"])
        for code, n in s["errors"].items():
            errors.add_metric([code], n)
        yield errors
        if s.get("bandwidth"):
            limit = GaugeMetricFamily("s3pvefs_bandwidth_limit_bytes_per_second",
                                      "upload_limit / download_limit in force now (0: unlimited)",
                                      labels=["direction"])
            waited = CounterMetricFamily("s3pvefs_bandwidth_wait_seconds",
                                         "Seconds requests waited for their turn under the limit",
                                         labels=["direction"])
            for direction, b in s["bandwidth"].items():
                limit.add_metric([direction], b["rate_now"] or 0)
                waited.add_metric([direction], b["waited_seconds"])
            yield limit
            yield waited


def exposition(snap: dict) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snap))
    return generate_latest(registry)


async def serve(port: int, make_snapshot) -> None:
    """A minimal HTTP server on 127.0.0.1:port: GET /metrics."""
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.move_on_after(10):
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < 16384:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            return
                        request += chunk
                line = request.split(b"\r\n", 1)[0].split()
                if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                    body, status, ctype = exposition(make_snapshot()), b"200 OK", CONTENT_TYPE_LATEST.encode()
                else:
                    body, status, ctype = b"see /metrics\n", b"404 Not Found", b"text/plain"
                await stream.send_all(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype +
                                      b"\r\nContent-Length: " + str(len(body)).encode() +
                                      b"\r\nConnection: close\r\n\r\n" + body)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", port)
    await trio.serve_tcp(handle, port, host="127.0.0.1")
