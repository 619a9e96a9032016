"""A fault-injecting HTTP/1.1 proxy for the mount tier.

``FaultProxy(upstream_url)`` listens on 127.0.0.1:<free port> and forwards every
request to the S3 server behind it (moto), byte for byte apart from the hop-by-hop
headers, except:

- ``fail_parts_after = N``: after N UploadPart requests (PUT with ``partNumber=`` and
  ``uploadId=`` in the query, no ``x-amz-copy-source``) were passed through, every
  further UploadPart is answered ``500 InternalError`` without reaching the server;
- ``fail_complete = True``: every CompleteMultipartUpload (POST with ``uploadId=``)
  is answered ``500 InternalError`` the same way.

Random faults: ``fault_rate = 0.1`` answers that share of requests (drawn from
``random.Random(seed)``) with one of ``fault_kinds``: "500" (InternalError), "503"
(SlowDown), "reset" (the connection is cut with a TCP RST, no answer), "truncated"
(forwarded, but the answer stops halfway through its body and the connection is
cut), "slow" (answered after 0.5 s). ``faults`` counts them by kind.

Outages: ``stall = True`` holds every request that arrives (read, never answered)
until it is set back to False, then forwards it (a server that hangs, then recovers);
``refuse()`` stops listening and drops every connection (connection refused, as a
server that is down) until ``listen_again()`` listens on the same port.

A refused request's body is still read and discarded (Content-Length or chunked), so
the connection stays usable; ``Expect: 100-continue`` is answered with ``100 Continue``
before the body is read. Counters (``parts_passed``, ``parts_failed``,
``completes_failed``, ``requests``) say what happened; ``seen`` holds
(method, target, headers) of every request (headers as a lower-cased dict).
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
              b"<Error><Code>InternalError</Code>"
              b"<Message>We encountered an internal error. Please try again.</Message>"
              b"<RequestId>faultproxy</RequestId></Error>")

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "te", "upgrade"}


class _BadRequest(Exception):
    pass


class FaultProxy:
    def __init__(self, upstream_url: str):
        u = urlsplit(upstream_url)
        self.upstream = (u.hostname, u.port or 80)
        self.fail_parts_after: int | None = None
        self.fail_complete = False
        self.parts_passed = 0
        self.parts_failed = 0
        self.completes_failed = 0
        self.requests = 0
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.stall = False
        self.fault_rate = 0.0
        self.fault_kinds = ("500", "503", "reset", "truncated", "slow")
        self.faults: collections.Counter[str] = collections.Counter()
        self._rng = random.Random(1)
        self._lock = threading.Lock()
        self._closed = False
        self._conns: set[socket.socket] = set()
        self._listen(0)
        self.url = f"http://127.0.0.1:{self.port}"

    def _listen(self, port: int) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._sock,), name="faultproxy-accept", daemon=True).start()

    def refuse(self) -> None:
        """Down: nothing listens on the port, open connections are cut."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
        except OSError:
            pass
        self._sock.close()
        self._drop_connections()

    def listen_again(self) -> None:
        self._listen(self.port)

    def _drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------ control
    def close(self) -> None:
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass
        self._drop_connections()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ serving
    def _accept(self, sock: socket.socket) -> None:
        while not self._closed:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="faultproxy-conn", daemon=True).start()

    def _random_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate and self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.fault_kinds)
                self.faults[kind] += 1
                return kind
        return None

    def _decide(self, method: str, target: str, headers: list[tuple[str, str]]) -> str | None:
        """'part' / 'complete' when this request is to be refused, else None (counted)."""
        query = target.partition("?")[2]
        params = {p.partition("=")[0] for p in query.split("&") if p}
        names = {k.lower() for k, _ in headers}
        with self._lock:
            self.requests += 1
            self.seen.append((method, target, {k.lower(): v for k, v in headers}))
            if method == "PUT" and {"partNumber", "uploadId"} <= params and "x-amz-copy-source" not in names:
                if self.fail_parts_after is not None and self.parts_passed >= self.fail_parts_after:
                    self.parts_failed += 1
                    return "part"
                self.parts_passed += 1
            elif method == "POST" and "uploadId" in params and self.fail_complete:
                self.completes_failed += 1
                return "complete"
        return None

    def _serve(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        upstream: http.client.HTTPConnection | None = None
        try:
            while True:
                line = rfile.readline(65537)
                while line in (b"\r\n", b"\n"):  # stray CRLF between requests
                    line = rfile.readline(65537)
                if not line:
                    return
                method, target, _version = line.decode("latin-1").split(None, 2)
                headers = _read_headers(rfile)
                lower = {k.lower(): v for k, v in headers}
                if lower.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(rfile, lower)
                while self.stall and not self._closed:
                    time.sleep(0.02)
                fault = self._random_fault()
                if fault in ("500", "503"):
                    code, reason, text = (("500 Internal Server Error", "InternalError", "internal error")
                                          if fault == "500" else ("503 Slow Down", "SlowDown", "slow down"))
                    err = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{reason}</Code>'
                           f"<Message>{text}</Message><RequestId>faultproxy</RequestId></Error>").encode()
                    conn.sendall(f"HTTP/1.1 {code}\r\nContent-Type: application/xml\r\n"
                                 f"Content-Length: {len(err)}\r\n\r\n".encode() + err)
                    continue
                if fault == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # finally: close -> RST
                if fault == "slow":
                    time.sleep(0.5)
                if self._decide(method, target, headers) is not None:
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\n"
                                 b"Content-Type: application/xml\r\n"
                                 b"x-amz-request-id: faultproxy\r\n"
                                 + f"Content-Length: {len(ERROR_BODY)}\r\n\r\n".encode() + ERROR_BODY)
                    continue
                for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
                    if upstream is None:
                        upstream = http.client.HTTPConnection(*self.upstream, timeout=300)
                    try:
                        upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                        for k, v in headers:
                            if k.lower() not in _HOP and k.lower() != "content-length":
                                upstream.putheader(k, v)
                        if body or "content-length" in lower or "transfer-encoding" in lower:
                            upstream.putheader("Content-Length", str(len(body)))
                        upstream.endheaders(body)
                        resp = upstream.getresponse()
                        data = resp.read()
                        break
                    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                        upstream.close()
                        upstream = None
                        if attempt == 2:
                            raise
                out = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n".encode("latin-1")]
                for k, v in resp.getheaders():
                    if k.lower() in _HOP or (k.lower() == "content-length" and method != "HEAD"):
                        continue
                    out.append(f"{k}: {v}\r\n".encode("latin-1"))
                if method != "HEAD" and resp.status not in (204, 304) and resp.status >= 200:
                    out.append(f"Content-Length: {len(data)}\r\n".encode())
                out.append(b"\r\n")
                if fault == "truncated" and method != "HEAD" and len(data) > 1:
                    conn.sendall(b"".join(out) + data[:len(data) // 2])
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                conn.sendall(b"".join(out) + (data if method != "HEAD" else b""))
        except (OSError, ValueError, _BadRequest, http.client.HTTPException):
            return
        finally:
            if upstream is not None:
                upstream.close()
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass


def _read_headers(rfile) -> list[tuple[str, str]]:
    headers = []
    while True:
        line = rfile.readline(65537)
        if not line:
            raise _BadRequest("connection closed in the headers")
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))


def _read_exact(rfile, n: int) -> bytes:
    data = rfile.read(n)
    if len(data) != n:
        raise _BadRequest("connection closed in the body")
    return data


def _read_body(rfile, lower: dict[str, str]) -> bytes:
    if "chunked" in lower.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = rfile.readline(65537)
            if not size_line:
                raise _BadRequest("connection closed in a chunk size")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(_read_exact(rfile, size))
            rfile.readline(65537)  # the CRLF after the chunk
    n = int(lower.get("content-length", "0") or 0)
    return _read_exact(rfile, n) if n else b""
