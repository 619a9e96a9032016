"""`s3pvefs mount` mistakes: a distinct exit code, one line on stderr, no traceback,
nothing left mounted; and the secret key never shows in logs or on stderr.

Also what the node gets wrong rather than the user: a clock S3 refuses (exit 8; the
real daemon under libfaketime, against a gate that checks the signed time as AWS and
Ceph do, and against Ceph RGW itself in the slow tier) and no usable /dev/fuse (exit
7; in a private mount namespace)."""

from __future__ import annotations

import calendar
import contextlib
import http.client
import http.server
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest

from tests.mount.conftest import SECRET_KEY, env, free_port, run_cli, s3pvefs_cmd

pytestmark = pytest.mark.mount


def one_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr, r.stderr
    assert len(err.splitlines()) == 1, r.stderr
    assert err.startswith("s3pvefs: "), r.stderr
    return err


def mount_cli(endpoint: str, spec: str, mp, tmp_path, *options: str, timeout: float = 120):
    opts = ",".join([f"cache_dir={tmp_path / 'cache'}", *options])
    return run_cli("mount", spec, str(mp), "--endpoint-url", endpoint, "--log-file", str(tmp_path / "log"),
                   "-o", opts, timeout=timeout)


@pytest.fixture
def mp(tmp_path):
    p = tmp_path / "mnt"
    p.mkdir()
    yield p
    if os.path.ismount(p):
        subprocess.run(["fusermount3", "-uz", str(p)], capture_output=True)


def test_missing_bucket_is_exit_4(s3_server, mp, tmp_path):
    r = mount_cli(s3_server, "no-such-bucket-s3pvefs/pve", mp, tmp_path)
    assert r.returncode == 4, r.stderr
    err = one_line(r)
    assert "no-such-bucket-s3pvefs" in err and "does not exist" in err
    assert not os.path.ismount(mp)


@contextlib.contextmanager
def silent_endpoint():
    """A port that accepts connections and never answers (a hung server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_endpoint_is_exit_5_within_5_s(mp, tmp_path, kind):
    """With the default settings (retries, 20 s request deadline), as a newcomer runs it."""
    with silent_endpoint() if kind == "silent" else contextlib.nullcontext(f"http://127.0.0.1:{free_port()}") \
            as endpoint:
        t0 = time.monotonic()
        r = mount_cli(endpoint, "bucket/pve", mp, tmp_path, timeout=60)
        took = time.monotonic() - t0
    assert took < 5, f"{kind}: {took:.1f} s"
    assert r.returncode == 5, r.stderr
    err = one_line(r)
    assert "cannot reach" in err and endpoint in err
    assert not os.path.ismount(mp)


def test_busy_mountpoint_is_exit_6(mount, tmp_path):
    m = mount()
    r = run_cli(*m.mount_args())
    assert r.returncode == 6, r.stderr
    err = one_line(r)
    assert "busy" in err
    assert os.path.ismount(m.mp)  # the first mount is untouched
    with open(m.path("still-works"), "wb") as f:
        f.write(b"ok")
    assert m.get("still-works") == b"ok"


def test_missing_mountpoint_is_exit_6(s3_server, s3, tmp_path):
    s3.create_bucket(Bucket="cli-missing-mp")
    r = mount_cli(s3_server, "cli-missing-mp/pve", tmp_path / "nowhere", tmp_path)
    assert r.returncode == 6, r.stderr
    assert "does not exist" in one_line(r)


@pytest.mark.parametrize("option, words", [
    ("no_such_option=1", ["no_such_option", "unknown"]),
    ("bogus", ["bogus", "unknown"]),
    ("file_mode=rwx", ["file_mode", "octal"]),
    ("max_attempts=many", ["max_attempts"]),
])
def test_bad_option_is_exit_2(s3_server, mp, tmp_path, option, words):
    r = mount_cli(s3_server, "bucket/pve", mp, tmp_path, option)
    assert r.returncode == 2, r.stderr
    err = one_line(r)
    for w in words:
        assert w in err
    assert not os.path.ismount(mp)


def test_bad_bucket_name_is_exit_2(s3_server, mp, tmp_path):
    r = mount_cli(s3_server, "bad bucket!/pve", mp, tmp_path)
    assert r.returncode == 2, r.stderr
    one_line(r)


def test_umount_of_something_not_mounted(tmp_path):
    r = run_cli("umount", str(tmp_path))
    assert r.returncode != 0
    assert "not mounted" in one_line(r)


def test_secret_never_in_log_or_stderr(s3_server, s3, tmp_path):
    """A full mount / write / read / umount with --debug: the secret appears nowhere."""
    bucket = "cli-secret"
    s3.create_bucket(Bucket=bucket)
    mp = tmp_path / "mnt"
    mp.mkdir()
    log = tmp_path / "debug.log"
    out = tmp_path / "cli.out"
    with open(out, "wb") as f:  # a file, not a pipe: with --debug the daemon keeps stderr open
        r = subprocess.run(s3pvefs_cmd() + ["mount", f"{bucket}/pve", str(mp), "--endpoint-url", s3_server,
                                            "--log-file", str(log), "--debug",
                                            "-o", f"cache_dir={tmp_path / 'cache'}"],
                           env=env(), stdout=f, stderr=f, timeout=120)
    try:
        assert r.returncode == 0, out.read_text()
        (mp / "d").mkdir()
        (mp / "d" / "f.bin").write_bytes(os.urandom(200_000))
        assert len((mp / "d" / "f.bin").read_bytes()) == 200_000
        os.rename(mp / "d" / "f.bin", mp / "d" / "g.bin")
        os.listdir(mp / "d")
        with pytest.raises(FileNotFoundError):
            (mp / "missing").read_bytes()
    finally:
        u = run_cli("umount", str(mp))
    assert u.returncode == 0, u.stderr
    assert not os.path.ismount(mp)
    texts = {"log": log.read_text(errors="replace"), "cli output": out.read_text(errors="replace"),
             "umount stderr": u.stderr + u.stdout}
    assert texts["log"], "the log file is empty"
    for what, text in texts.items():
        assert SECRET_KEY not in text, f"the secret key appears in the {what}"


@pytest.mark.parametrize("case", ["no-profile", "no-credentials", "partial-credentials", "bad-endpoint-url"])
def test_client_setup_mistakes_are_one_line(s3_server, mp, tmp_path, case):
    """Errors botocore raises while making the client (the credential chain, the
    profile, the endpoint URL) are a one-line message and the right exit code."""
    e = env()
    args = ["mount", "bucket/pve", str(mp), "--log-file", str(tmp_path / "log"),
            "-o", f"cache_dir={tmp_path / 'cache'}", "--endpoint-url", s3_server]
    if case == "no-profile":
        args += ["--profile", "no-such-profile-s3pvefs"]
        e["AWS_CONFIG_FILE"] = e["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    elif case == "no-credentials":
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            e.pop(k)
        e["AWS_CONFIG_FILE"] = e["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    elif case == "partial-credentials":
        e.pop("AWS_SECRET_ACCESS_KEY")
    else:
        args[args.index(s3_server)] = "http://[::1"
    r = subprocess.run(s3pvefs_cmd() + args, env=e, capture_output=True, text=True, timeout=120)
    err = one_line(r)
    expected = {"no-profile": (2, "no-such-profile-s3pvefs"), "no-credentials": (3, "no credentials"),
                "partial-credentials": (3, "credentials"), "bad-endpoint-url": (2, "endpoint_url")}[case]
    assert (r.returncode, expected[1] in err) == (expected[0], True), err
    assert SECRET_KEY not in r.stderr
    assert not os.path.ismount(mp)


# ---------------------------------------------------------------------------- a clock that is off

FAKETIME = shutil.which("faketime") or "faketime"  # scripts/setup.sh installs it: missing is a failure


def faked(offset: str) -> list[str]:
    """The command prefix that runs s3pvefs (and the daemon it starts, which inherits
    LD_PRELOAD) with its wall clock moved by offset ("-2h", "+3h", "-5m"). The monotonic
    clock is left alone: trio's timeouts stay real."""
    return [FAKETIME, "-f", offset]


def faked_env() -> dict[str, str]:
    return {**env(), "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def run_faked(offset: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(faked(offset) + s3pvefs_cmd() + list(args), env=faked_env(), capture_output=True,
                          text=True, timeout=timeout)


class SkewGate:
    """What moto does not check: the time a request was signed. A tiny HTTP/1.1 gate in
    front of an S3 server: a request whose x-amz-date is more than max_skew seconds
    from the gate's clock is answered 403 RequestTimeTooSkewed as AWS and Ceph RGW
    answer it (the XML error with RequestTime and ServerTime; no body for a HEAD),
    anything else is forwarded. ``code="AccessDenied"`` answers a plain AccessDenied
    instead (a provider that does not say why). ``skews`` holds, for every request,
    its signed time minus the gate's clock in seconds (None: not signed)."""

    def __init__(self, upstream: str, max_skew: float = 900.0, code: str = "RequestTimeTooSkewed"):
        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port or 80)
        self.max_skew, self.code = max_skew, code
        self.skews: list[float | None] = []
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                body = self._body()
                signed = self.headers.get("x-amz-date")
                skew = calendar.timegm(time.strptime(signed, "%Y%m%dT%H%M%SZ")) - time.time() if signed else None
                gate.skews.append(skew)
                if skew is None or abs(skew) > gate.max_skew:
                    return self._refuse(signed or "")
                self._forward(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _refuse(self, signed: str):
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                if gate.code == "RequestTimeTooSkewed":
                    detail = (f"<Message>The difference between the request time and the current time is too "
                              f"large.</Message><RequestTime>{signed}</RequestTime><ServerTime>{now}</ServerTime>"
                              f"<MaxAllowedSkewMilliseconds>{gate.max_skew * 1000:.0f}</MaxAllowedSkewMilliseconds>")
                else:
                    detail = "<Message>Access Denied</Message>"
                xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{gate.code}</Code>{detail}'
                       f"<RequestId>skewgate</RequestId></Error>").encode()
                self.send_response(403)  # with the gate's own Date header, as every S3 server sends
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(xml)

            def _forward(self, body: bytes):
                conn = http.client.HTTPConnection(*gate.upstream, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection", "expect"):
                            conn.putheader(k, v)
                    conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                if self.command == "HEAD":
                    if resp.getheader("Content-Length") is not None:
                        self.send_header("Content-Length", resp.getheader("Content-Length"))
                elif resp.status not in (204, 304):
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD" and resp.status not in (204, 304):
                    self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="skewgate", daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def skew_bucket(s3):
    s3.create_bucket(Bucket="cli-skew")
    return "cli-skew"


@pytest.mark.parametrize("offset, words", [("-2h", "2.0 h behind"), ("+3h", "3.0 h ahead of")])
def test_clock_off_is_exit_8_with_one_line(s3_server, skew_bucket, mp, tmp_path, offset, words):
    """The real CLI and daemon under libfaketime: botocore signs with the faked clock
    (the gate sees the offset), does not retry or correct it, and the mount fails at
    once with exit 8 and one line that says what to fix."""
    with SkewGate(s3_server) as gate:
        t0 = time.monotonic()
        r = run_faked(offset, "mount", f"{skew_bucket}/pve", str(mp), "--endpoint-url", gate.url,
                      "--log-file", str(tmp_path / "log"), "-o", f"cache_dir={tmp_path / 'cache'}")
        elapsed = time.monotonic() - t0
    assert r.returncode == 8, r.stderr
    err = one_line(r)
    assert f"the clock of this node is {words} the S3 server's (RequestTimeTooSkewed)" in err, err
    assert "timedatectl" in err and "chrony" in err
    assert not os.path.ismount(mp)
    expected = {"-2h": -7200, "+3h": 10800}[offset]
    assert gate.skews and all(s is not None and abs(s - expected) < 120 for s in gate.skews), gate.skews
    # HeadBucket (a bare 403, no code) and the ListObjectsV2 that asks for the code; no retries
    assert len(gate.skews) == 2, gate.skews
    assert elapsed < 30


def test_clock_off_without_a_code_is_told_by_the_date_header(s3_server, skew_bucket, mp, tmp_path):
    """A server that refuses a skewed request with a plain AccessDenied: its Date header,
    two hours from the local clock, says it is the clock and not the credentials."""
    with SkewGate(s3_server, code="AccessDenied") as gate:
        r = run_faked("-2h", "mount", f"{skew_bucket}/pve", str(mp), "--endpoint-url", gate.url,
                      "--log-file", str(tmp_path / "log"), "-o", f"cache_dir={tmp_path / 'cache'}")
    assert r.returncode == 8, r.stderr
    assert "the clock of this node is 2.0 h behind the S3 server's (AccessDenied)" in one_line(r)


def test_clock_within_the_allowed_skew_mounts_and_works(s3_server, s3, skew_bucket, mp, tmp_path):
    """Five minutes off, under the 15 S3 allows: the daemon (its clock faked too) mounts
    and commits through the gate; every request was signed five minutes back."""
    with SkewGate(s3_server) as gate:
        r = run_faked("-5m", "mount", f"{skew_bucket}/pve", str(mp), "--endpoint-url", gate.url,
                      "--log-file", str(tmp_path / "log"), "-o", f"cache_dir={tmp_path / 'cache'}")
        assert r.returncode == 0, r.stderr + (tmp_path / "log").read_text()
        try:
            data = os.urandom(300_000)
            (mp / "f.bin").write_bytes(data)
            assert (mp / "f.bin").read_bytes() == data
        finally:
            u = run_cli("umount", str(mp))
        assert u.returncode == 0, u.stderr
    assert s3.get_object(Bucket=skew_bucket, Key="pve/f.bin")["Body"].read() == data
    assert len(gate.skews) >= 3 and all(s is not None and abs(s + 300) < 60 for s in gate.skews), gate.skews


def test_ls_and_check_with_a_clock_off(s3_server, skew_bucket, tmp_path):
    with SkewGate(s3_server) as gate:
        ls = run_faked("-2h", "ls", f"{skew_bucket}/pve", "--endpoint-url", gate.url)
        check = run_faked("-2h", "check", f"{skew_bucket}/pve", "--endpoint-url", gate.url,
                          "-o", "checksums=when_required")
    assert ls.returncode == 8, ls.stderr
    assert "the clock of this node is 2.0 h behind" in one_line(ls) and ls.stdout == ""
    # check reports each step (exit 1 when one failed): authentication and the clock fail
    assert check.returncode == 1, check.stdout + check.stderr
    assert re.search(r"^FAIL\s+authentication\s+RequestTimeTooSkewed", check.stdout, re.M), check.stdout
    assert re.search(r"^FAIL\s+clock skew\s+local clock 7\d\d\d s behind the server", check.stdout, re.M), \
        check.stdout
    assert "Traceback" not in check.stderr + check.stdout


@pytest.mark.slow
def test_ceph_refuses_a_clock_two_hours_off_and_takes_five_minutes(ceph_server, ceph_s3, mp, tmp_path):
    """Ceph RGW checks the signed time itself (15 minutes): the real thing, no gate."""
    bucket = "skew"
    ceph_s3.create_bucket(Bucket=bucket)
    args = ["mount", f"{bucket}/pve", str(mp), "--endpoint-url", ceph_server, "--log-file", str(tmp_path / "log"),
            "-o", f"cache_dir={tmp_path / 'cache'},checksums=when_required"]
    r = run_faked("-2h", *args)
    assert r.returncode == 8, r.stderr
    err = one_line(r)
    assert "the clock of this node is" in err and "behind the S3 server's (RequestTimeTooSkewed)" in err, err
    assert not os.path.ismount(mp)
    r = run_faked("+2h", "ls", f"{bucket}/pve", "--endpoint-url", ceph_server, "-o", "checksums=when_required")
    assert r.returncode == 8 and "ahead of the S3 server's" in one_line(r), r.stderr
    r = run_faked("-5m", *args)
    assert r.returncode == 0, r.stderr
    try:
        (mp / "f.bin").write_bytes(b"x" * 100_000)
        assert (mp / "f.bin").read_bytes() == b"x" * 100_000
    finally:
        assert run_cli("umount", str(mp)).returncode == 0
    assert ceph_s3.head_object(Bucket=bucket, Key="pve/f.bin")["ContentLength"] == 100_000


# ---------------------------------------------------------------------------- no usable /dev/fuse

FUSE_CASES = {
    # /dev a fresh tmpfs holding only what the CLI needs: no /dev/fuse at all
    "absent": "mount -t tmpfs -o mode=755 tmpfs /dev && "
              "mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 && "
              "mknod -m 666 /dev/random c 1 8 && mknod -m 666 /dev/urandom c 1 9",
    # something that is not the device in its place (a container bind-mounting a file)
    "not-a-device": 'touch "$T/notfuse" && mount --bind "$T/notfuse" /dev/fuse',
    # the real device on a nodev mount: open() is refused (EACCES), as a container's device policy does
    "not-allowed": "mount --bind /dev/fuse /dev/fuse && mount -o remount,bind,nodev /dev/fuse",
}


@pytest.mark.parametrize("case", FUSE_CASES)
def test_no_usable_dev_fuse_is_exit_7(mp, tmp_path, case):
    """In a private mount namespace (the host's /dev/fuse is untouched): exit 7, one
    line, before any request to S3 (the endpoint has nobody listening: 5 otherwise)."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    script = f"set -e; mount --make-rprivate /; {FUSE_CASES[case]}; exec \"$@\""
    r = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", *s3pvefs_cmd(), "mount", "bucket/pve",
                        str(mp), "--endpoint-url", endpoint, "--log-file", str(tmp_path / "log"),
                        "-o", f"cache_dir={tmp_path / 'cache'},max_attempts=1,connect_timeout=2"],
                       env={**env(), "T": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 7, r.stderr
    err = one_line(r)
    expected = {"absent": "/dev/fuse is missing: load the fuse module",
                "not-a-device": "/dev/fuse is missing: load the fuse module",
                "not-allowed": "cannot open /dev/fuse: Permission denied: a container needs the device allowed"}
    assert expected[case] in err, err
    assert not os.path.ismount(mp)
    assert os.path.exists("/dev/fuse") and os.stat("/dev/fuse").st_rdev == os.makedev(10, 229)  # host untouched


@pytest.mark.parametrize("command", ["mount", "ls", "check"])
def test_a_config_file_that_is_not_utf8_is_exit_2_in_one_line(tmp_path, mp, command):
    conf = tmp_path / "pve.toml"
    conf.write_bytes('[store]\nbucket = "b"\nendpoint_url = "http://127.0.0.1:1"\n# r\xe9sum\xe9\n'.encode("latin-1"))
    args = ["--config", str(conf)] + ([str(mp)] if command == "mount" else [])
    r = run_cli(command, *args, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "not UTF-8" in one_line(r) and str(conf) in one_line(r)
    assert "Traceback" not in r.stderr
