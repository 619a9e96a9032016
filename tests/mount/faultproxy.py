"""A fault-injecting HTTP/1.1 proxy for the mount tier.

``FaultProxy(upstream_url)`` listens on 127.0.0.1:<free port> and forwards every
request to the S3 server behind it (moto, Ceph RGW), byte for byte apart from the
hop-by-hop headers, except:

- ``fail_parts_after = N``: after N UploadPart requests (PUT with ``partNumber=`` and
  ``uploadId=`` in the query, no ``x-amz-copy-source``) were passed through, every
  further UploadPart is answered ``500 InternalError`` without reaching the server;
- ``fail_complete = True``: every CompleteMultipartUpload (POST with ``uploadId=``)
  is answered ``500 InternalError`` the same way.

Random faults: ``fault_rate = 0.1`` answers that share of requests (drawn from
``random.Random(1)``: the n-th draw is the same in every run) with one of
``fault_kinds``:

- "500" (InternalError) and "503" (SlowDown): answered by the proxy, the request never
  reaches the server;
- "reset": the connection is cut with a TCP RST, no answer, the request never reaches
  the server; the cut comes at a random point of the request body (or after the head
  when there is none), so the client may still be sending;
- "truncated": forwarded (the server acts on it), but the answer stops halfway through
  its body (halfway through its head when it has no body) and the connection is cut
  (RST): the client cannot know whether the request took effect;
- "slow": forwarded and answered after ``slow_seconds`` (0.5 s);
- "stall": the request is read and never answered (not forwarded): the client has
  to give up on its own (read timeout); the connection is cut after
  ``stall_seconds`` (60 s) or when the client closes it.

``faults`` counts them by kind, ``fault_log`` holds (kind, method, target) of each.
``fault_filter(kind, method, target) -> bool`` (default: all) drops a drawn fault for
some requests; ``fault_once = {(kind, predicate), ...}`` is not random: the next
request for which ``predicate(method, target)`` is true gets ``kind``, once (e.g. the
answer to CreateMultipartUpload cut off: ``is_create_upload`` below).

Outages: ``stall = True`` holds every request that arrives (read, never answered)
until it is set back to False, then forwards it (a server that hangs, then recovers);
``refuse()`` stops listening and drops every connection (connection refused, as a
server that is down) until ``listen_again()`` listens on the same port.

Speed: bodies are not held whole (but for requests held by ``stall``). They are
passed through as they arrive, in pieces of up to ``CHUNK`` (1 MiB) through one
preallocated buffer per connection (``recv_into`` + ``sendall``: no per-byte Python
work, no concatenation), request and response alike; only the heads are parsed.
Each client connection has its own thread and its own kept-alive connection to the
server. In front of Ceph RGW on the 2-core test machine a 2 GiB write and read-back
go as fast as without the proxy (docs/PERFORMANCE.md, "Under faults, after a crash,
and over time").

A refused request's body is still read and discarded (Content-Length or chunked), so
the connection stays usable; ``Expect: 100-continue`` is answered with ``100 Continue``
by the proxy before the body is read (the header is not forwarded). Counters:
``requests`` (every request received, faulted or not), ``parts_passed``,
``parts_failed``, ``completes_failed``, ``upstream_failures`` (the server closed a
connection without answering: the client's connection is cut too), ``bytes_up`` /
``bytes_down`` (body bytes forwarded to the server / to the client); ``seen`` holds
(method, target, headers) of every request (headers as a lower-cased dict).
"""

from __future__ import annotations

import collections
import random
import select
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
              b"<Error><Code>InternalError</Code>"
              b"<Message>We encountered an internal error. Please try again.</Message>"
              b"<RequestId>faultproxy</RequestId></Error>")

_HOP = {"connection", "keep-alive", "proxy-connection", "expect", "te", "upgrade"}
CHUNK = 1 << 20
_MAX_HEAD = 1 << 16


class _BadRequest(Exception):
    pass


class _UpstreamBroken(Exception):
    pass


def _error_answer(status: str, code: str, message: str) -> bytes:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>faultproxy</RequestId></Error>").encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nx-amz-request-id: faultproxy\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


_ANSWERS = {
    "500": _error_answer("500 Internal Server Error", "InternalError",
                         "We encountered an internal error. Please try again."),
    "503": _error_answer("503 Slow Down", "SlowDown", "Please reduce your request rate."),
}


def _rst(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class _Counter:
    """Bytes moved, added to from every connection's thread."""

    def __init__(self):
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class _Conn:
    """A blocking socket with a read buffer: heads are parsed from it, bodies are moved
    in big pieces through one preallocated buffer (recv_into), never accumulated."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pending = bytearray()  # read but not consumed (a head's tail, the start of a body)
        self._buf = bytearray(CHUNK)
        self._view = memoryview(self._buf)

    def _recv_more(self) -> bool:
        n = self.sock.recv_into(self._buf, CHUNK)
        if n:
            self.pending += self._view[:n]
        return n > 0

    def readline(self, limit: int = _MAX_HEAD) -> bytes:
        while True:
            i = self.pending.find(b"\n")
            if i >= 0:
                line = bytes(self.pending[:i + 1])
                del self.pending[:i + 1]
                return line
            if len(self.pending) > limit:
                raise _BadRequest("line too long")
            if not self._recv_more():
                line = bytes(self.pending)
                self.pending.clear()
                return line

    def read_head(self) -> bytes | None:
        """Everything up to and including the blank line; None at a clean EOF before it."""
        while True:
            i = self.pending.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.pending[:i + 4])
                del self.pending[:i + 4]
                return head
            if len(self.pending) > _MAX_HEAD:
                raise _BadRequest("head too long")
            if not self._recv_more():
                if self.pending.strip():
                    raise _BadRequest("connection closed in a head")
                return None

    def pipe(self, n: int, out: socket.socket | None, counter: _Counter | None = None) -> None:
        """Move exactly n body bytes to `out` (None: discard)."""
        if self.pending:
            take = min(n, len(self.pending))
            if out is not None:
                out.sendall(self.pending[:take])
            del self.pending[:take]
            n -= take
            if counter is not None:
                counter.add(take)
        while n > 0:
            k = self.sock.recv_into(self._buf, min(n, CHUNK))
            if not k:
                raise _BadRequest("connection closed in a body")
            if out is not None:
                out.sendall(self._view[:k])
            n -= k
            if counter is not None:
                counter.add(k)

    def pipe_until_eof(self, out: socket.socket, counter: _Counter) -> None:
        if self.pending:
            out.sendall(self.pending)
            counter.add(len(self.pending))
            self.pending.clear()
        while k := self.sock.recv_into(self._buf, CHUNK):
            out.sendall(self._view[:k])
            counter.add(k)

    def pipe_chunked(self, out: socket.socket | None, counter: _Counter | None = None) -> None:
        """Move a chunked body as it is (sizes, chunks, trailers) to `out` (None: discard)."""
        while True:
            size_line = self.readline()
            if not size_line.endswith(b"\n"):
                raise _BadRequest("connection closed in a chunk size")
            if out is not None:
                out.sendall(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    line = self.readline()
                    if not line.endswith(b"\n"):
                        raise _BadRequest("connection closed in the trailers")
                    if out is not None:
                        out.sendall(line)
                    if line in (b"\r\n", b"\n"):
                        return
            self.pipe(size, out, counter)
            crlf = self.readline()
            if out is not None:
                out.sendall(crlf)


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


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
        self.upstream_failures = 0
        self._up, self._down = _Counter(), _Counter()  # body bytes forwarded
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.faulted: list[tuple[str, int]] = []  # (fault kind, index of the request in seen)
        self.stall = False
        self.fault_rate = 0.0
        self.fault_kinds: tuple[str, ...] = ("500", "503", "reset", "truncated", "slow")
        self.fault_filter = None
        self.fault_once: set = set()
        self.slow_seconds = 0.5
        self.stall_seconds = 60.0
        self.faults: collections.Counter[str] = collections.Counter()
        self.fault_log: list[tuple[str, str, str]] = []
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
        self._sock.listen(128)
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

    @property
    def bytes_up(self) -> int:
        return self._up.value

    @property
    def bytes_down(self) -> int:
        return self._down.value

    def unretried(self, since: int = 0) -> list[tuple[str, str, str]]:
        """Faulted requests (from seen[since:] on; a slow answer is no failure) that were
        never sent again: no later request with the same method, target and Range.
        Counted here, at the server's door, whatever the client counts."""
        with self._lock:
            seen, faulted = list(self.seen), list(self.faulted)
        missing = []
        for kind, i in faulted:
            if i < since or kind == "slow":
                continue
            method, target, headers = seen[i]
            if not any(m == method and t == target and h.get("range") == headers.get("range")
                       for m, t, h in seen[i + 1:]):
                missing.append((kind, method, target))
        return missing

    def summary(self) -> str:
        return (f"{self.requests} requests, {sum(self.faults.values())} faulted "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.faults.items())) or 'none'}); "
                f"bodies {self.bytes_up / 2**20:.0f} MiB to the server, {self.bytes_down / 2**20:.0f} MiB back")

    # ------------------------------------------------------------------ serving
    def _accept(self, sock: socket.socket) -> None:
        while not self._closed:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="faultproxy-conn", daemon=True).start()

    def _fault(self, method: str, target: str) -> str | None:
        with self._lock:
            for entry in list(self.fault_once):
                kind, pred = entry
                if pred(method, target):
                    self.fault_once.discard(entry)
                    break
            else:
                kind = None
                if self.fault_rate and self._rng.random() < self.fault_rate:
                    kind = self._rng.choice(self.fault_kinds)
                    if self.fault_filter is not None and not self.fault_filter(kind, method, target):
                        kind = None  # not redrawn: the sequence of draws stays the seed's
            if kind is not None:
                self.faults[kind] += 1
                self.fault_log.append((kind, method, target))
            return kind

    def _decide(self, method: str, target: str, headers: list[tuple[str, str]]) -> bool:
        """True when this request is to be refused (fail_parts_after, fail_complete)."""
        query = target.partition("?")[2]
        params = {p.partition("=")[0] for p in query.split("&") if p}
        names = {k.lower() for k, _ in headers}
        with self._lock:
            if method == "PUT" and {"partNumber", "uploadId"} <= params and "x-amz-copy-source" not in names:
                if self.fail_parts_after is not None and self.parts_passed >= self.fail_parts_after:
                    self.parts_failed += 1
                    return True
                self.parts_passed += 1
            elif method == "POST" and "uploadId" in params and self.fail_complete:
                self.completes_failed += 1
                return True
        return False

    def _upstream(self, current: socket.socket | None) -> socket.socket:
        """A connection to the server: the kept-alive one unless the server closed it
        meanwhile (readable while idle means EOF or garbage), else a new one."""
        if current is not None:
            try:
                readable = select.select([current], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [current]
            if not readable:
                return current
            current.close()
        sock = socket.create_connection(self.upstream, timeout=600)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _serve(self, sock: socket.socket) -> None:
        client = _Conn(sock)
        up: socket.socket | None = None
        upc: _Conn | None = None
        try:
            while True:
                head = client.read_head()
                while head is not None and head.startswith(b"\r\n"):  # stray CRLF between requests
                    client.pending[:0] = head[2:]
                    head = client.read_head()
                if head is None:
                    return
                request_line, headers = _parse_head(head)
                method, target, _version = request_line.split(None, 2)
                lower = {k.lower(): v for k, v in headers}
                with self._lock:
                    self.requests += 1
                    index = len(self.seen)
                    self.seen.append((method, target, lower))
                chunked = "chunked" in lower.get("transfer-encoding", "").lower()
                length = -1 if chunked else int(lower.get("content-length", "0") or 0)
                if lower.get("expect", "").lower() == "100-continue":
                    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

                fault = self._fault(method, target)
                if fault is not None:
                    with self._lock:
                        self.faulted.append((fault, index))
                if fault == "reset":
                    if length > 0:  # cut while the client is still sending
                        client.pipe(self._rng_below(length), None)
                    _rst(sock)
                    return
                if fault in ("500", "503", "stall"):
                    self._discard_body(client, chunked, length)
                    if fault == "stall":
                        self._hold(sock)
                        _rst(sock)
                        return
                    sock.sendall(_ANSWERS[fault])
                    continue
                body: bytes | None = None  # None: streamed from the client as it comes
                if self.stall:  # an outage: held (body read) until it ends, then forwarded
                    body = self._read_body(client, chunked, length)
                    while self.stall and not self._closed:
                        time.sleep(0.02)
                    if self._closed:
                        return
                if self._decide(method, target, headers):
                    if body is None:
                        self._discard_body(client, chunked, length)
                    sock.sendall(_ANSWERS["500"])
                    continue
                if fault == "slow":
                    time.sleep(self.slow_seconds)

                # ---- forward the request, its body streamed
                out_head = [f"{request_line}\r\n"]
                for k, v in headers:
                    if k.lower() not in _HOP and not (body is not None and k.lower() in (
                            "transfer-encoding", "content-length")):
                        out_head.append(f"{k}: {v}\r\n")
                if body is not None and (body or "content-length" in lower or chunked):
                    out_head.append(f"Content-Length: {len(body)}\r\n")
                out_head.append("\r\n")
                try:
                    up = self._upstream(up)
                    if upc is None or upc.sock is not up:
                        upc = _Conn(up)
                    up.sendall("".join(out_head).encode("latin-1"))
                    if body is not None:
                        up.sendall(body)
                        self._up.add(len(body))
                    elif chunked:
                        client.pipe_chunked(up, self._up)
                    elif length:
                        client.pipe(length, up, self._up)
                    status, resp_headers, resp_head = self._response_head(upc)
                    keep = self._answer(sock, upc, method, status, resp_headers, resp_head, fault)
                except _UpstreamBroken:
                    with self._lock:
                        self.upstream_failures += 1
                    _rst(sock)
                    return
                if fault == "truncated" or keep == "close":
                    return
                if not keep:
                    up.close()
                    up = upc = None
        except (OSError, ValueError, _BadRequest, _UpstreamBroken):
            return
        finally:
            if up is not None:
                up.close()
            with self._lock:
                self._conns.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _read_body(client: _Conn, chunked: bool, length: int) -> bytes:
        """A whole request body, de-chunked (only for requests held by an outage)."""
        parts: list[bytes] = []

        class _Sink:
            @staticmethod
            def sendall(data) -> None:
                parts.append(bytes(data))
        if chunked:
            while True:
                size_line = client.readline()
                if not size_line.endswith(b"\n"):
                    raise _BadRequest("connection closed in a chunk size")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while client.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(parts)
                client.pipe(size, _Sink)
                client.readline()  # the CRLF after the chunk
        if length > 0:
            client.pipe(length, _Sink)
        return b"".join(parts)

    def _rng_below(self, n: int) -> int:
        with self._lock:
            return self._rng.randrange(n)

    @staticmethod
    def _discard_body(client: _Conn, chunked: bool, length: int) -> None:
        if chunked:
            client.pipe_chunked(None)
        elif length > 0:
            client.pipe(length, None)

    def _hold(self, sock: socket.socket) -> None:
        """Answer nothing until the client gives up (closes) or stall_seconds pass."""
        deadline = time.monotonic() + self.stall_seconds
        while not self._closed and (left := deadline - time.monotonic()) > 0:
            if select.select([sock], [], [], min(left, 0.5))[0]:
                try:
                    if not sock.recv(65536):
                        return
                except OSError:
                    return

    @staticmethod
    def _response_head(upc: _Conn) -> tuple[int, list[tuple[str, str]], bytes]:
        while True:
            head = upc.read_head()
            if head is None:
                raise _UpstreamBroken("the server closed the connection without an answer")
            status_line, headers = _parse_head(head)
            status = int(status_line.split(None, 2)[1])
            if status >= 200 or status == 101:
                return status, headers, head
            # 1xx (100 Continue): not forwarded, the proxy answered it already

    def _answer(self, sock: socket.socket, upc: _Conn, method: str, status: int,
                headers: list[tuple[str, str]], head: bytes, fault: str | None) -> bool | str:
        """Send the server's answer to the client, its body streamed; cut off halfway
        (then RST) for a "truncated" fault. True: both connections stay; False: the
        server's is not reusable; "close": the answer ended with the server's
        connection, so the client's ends too."""
        lower = {k.lower(): v for k, v in headers}
        keep = lower.get("connection", "").lower() != "close"
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        chunked = not no_body and "chunked" in lower.get("transfer-encoding", "").lower()
        length = -1
        if not no_body and not chunked:
            length = int(lower["content-length"]) if "content-length" in lower else -1
        until_eof = not no_body and not chunked and length < 0
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        out = [f"{status_line}\r\n"]
        for k, v in headers:
            if k.lower() not in _HOP:
                out.append(f"{k}: {v}\r\n")
        if until_eof:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        out_head = "".join(out).encode("latin-1")

        if fault == "truncated":
            if length > 1:
                sock.sendall(out_head)
                upc.pipe(length // 2, sock, self._down)
            elif chunked or until_eof:
                sock.sendall(out_head)
                first = upc.readline() if chunked else b""
                sock.sendall(first)
            else:  # no body: the head itself breaks off
                sock.sendall(out_head[:len(out_head) // 2])
            _rst(sock)
            return False

        sock.sendall(out_head)
        if no_body:
            pass
        elif chunked:
            upc.pipe_chunked(sock, self._down)
        elif length >= 0:
            upc.pipe(length, sock, self._down)
        else:
            upc.pipe_until_eof(sock, self._down)
            return "close"
        return keep


# ---------------------------------------------------------------------- request kinds

def _params(target: str) -> set[str]:
    return {p.partition("=")[0] for p in target.partition("?")[2].split("&") if p}


def is_create_upload(method: str, target: str) -> bool:
    """CreateMultipartUpload: POST KEY?uploads."""
    return method == "POST" and "uploads" in _params(target)


def is_complete_upload(method: str, target: str) -> bool:
    """CompleteMultipartUpload: POST KEY?uploadId=..."""
    return method == "POST" and "uploadId" in _params(target)
