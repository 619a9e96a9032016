"""Mount tier: real FUSE mounts of s3pvefs against a local moto S3 server.

Fixtures:
- ``s3_server`` (session): a ``moto_server`` subprocess on a free local port; its URL.
- ``s3`` (session): a boto3 S3 client for that server, used to check the bucket from outside.
- ``mount`` (function): a factory. ``mount()`` creates a fresh bucket and mountpoint and
  mounts ``BUCKET/pve`` there; it returns a ``Mount`` (``.mp``, ``.bucket``, ``.prefix``,
  ``.log``, ``.remount()``, ``.umount()``, ``.keys()``, ``.get()``, ``.head()``).
  Every mount is unmounted at teardown; the daemon log is printed if the test failed.

Needs root and /dev/fuse (scripts/setup.sh checks for it): without them the tests fail,
they are never skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

ACCESS_KEY = "testing"
SECRET_KEY = "s3pvefs-test-secret-8f3a1c"  # distinctive, so a leak into a log is findable
PREFIX = "pve"


def _bin(name: str) -> str | None:
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else None


def s3pvefs_cmd() -> list[str]:
    exe = _bin("s3pvefs")
    return [exe] if exe else [sys.executable, "-m", "s3pvefs"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1")
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        e.pop(k, None)
    return e


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(s3pvefs_cmd() + list(args), env=env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_file(path, bufsize: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    port = free_port()
    exe = _bin("moto_server")
    cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)], stdout=logf, stderr=logf,
                                env=env(), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not answer on {url}")
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3(s3_server):
    from botocore.config import Config as BotoConfig
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=BotoConfig(max_pool_connections=32, retries={"max_attempts": 3}))


def _unmount(mp: str) -> None:
    if not os.path.ismount(mp):
        return
    r = run_cli("umount", mp, "--timeout", "120", timeout=180)
    if r.returncode != 0 and os.path.ismount(mp):
        subprocess.run(["fusermount3", "-uz", mp], capture_output=True)


@dataclass
class Mount:
    s3: object
    endpoint: str
    bucket: str
    mp: str
    log: str
    cache_dir: str
    options: list[str] = field(default_factory=list)
    prefix: str = PREFIX

    # ---- mount control
    def mount_args(self) -> list[str]:
        opts = ",".join([f"cache_dir={self.cache_dir}"] + self.options)
        return ["mount", f"{self.bucket}/{self.prefix}", self.mp, "--endpoint-url", self.endpoint,
                "--log-file", self.log, "-o", opts]

    def do_mount(self) -> None:
        r = run_cli(*self.mount_args())
        assert r.returncode == 0, f"mount failed ({r.returncode}): {r.stderr}\n{self.log_text()}"
        assert os.path.ismount(self.mp)

    def umount(self) -> None:
        r = run_cli("umount", self.mp, "--timeout", "120", timeout=180)
        assert r.returncode == 0, f"umount failed ({r.returncode}): {r.stderr}\n{self.log_text()}"
        assert not os.path.ismount(self.mp)

    def remount(self) -> None:
        self.umount()
        self.do_mount()

    def remount_through(self, endpoint: str) -> None:
        """Mount again, talking to S3 through endpoint (a fault proxy in front of the server)."""
        self.umount()
        self.endpoint = endpoint
        self.do_mount()

    def log_text(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")
        except OSError:
            return ""

    # ---- paths and the bucket seen from outside
    def path(self, *parts: str) -> str:
        return os.path.join(self.mp, *parts)

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def keys(self) -> set[str]:
        """Every key in the bucket (whole bucket, not just the prefix)."""
        keys, kwargs = set(), {"Bucket": self.bucket}
        while True:
            resp = self.s3.list_objects_v2(**kwargs)
            keys |= {o["Key"] for o in resp.get("Contents", [])}
            if not resp.get("IsTruncated"):
                return keys
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    def head(self, rel: str) -> dict:
        return self.s3.head_object(Bucket=self.bucket, Key=self.key(rel))

    def get(self, rel: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read()

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        body = self.s3.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"]
        for chunk in body.iter_chunks(8 << 20):
            h.update(chunk)
        return h.hexdigest()

    def put(self, rel: str, data: bytes = b"", **kwargs) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, **kwargs)

    def meta(self, rel: str) -> dict[str, str]:
        return self.head(rel)["Metadata"]


def _mounts(request, s3, endpoint: str, tmp_path):
    """The body of the mount fixtures: a factory, then unmount all (logs of a failed test)."""
    mounts: list[Mount] = []
    created: list[str] = []

    def factory(options: list[str] | tuple[str, ...] = (), *, bucket: str | None = None) -> Mount:
        n = len(mounts)
        name = bucket or f"t-{uuid.uuid4().hex[:16]}"
        if bucket is None:
            s3.create_bucket(Bucket=name)
            created.append(name)
        mp = tmp_path / f"mnt{n}"
        mp.mkdir()
        cache = tmp_path / f"cache{n}"
        cache.mkdir()
        m = Mount(s3=s3, endpoint=endpoint, bucket=name, mp=str(mp), log=str(tmp_path / f"s3pvefs{n}.log"),
                  cache_dir=str(cache), options=list(options))
        mounts.append(m)
        m.do_mount()
        return m

    yield factory

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for m in mounts:
        _unmount(m.mp)
        if failed:
            text = m.log_text()
            print(f"\n----- s3pvefs log {m.log} (last 20000 chars) -----\n{text[-20000:]}")
    for name in created:  # a session-long Ceph fills its disk otherwise (GC frees it later)
        _empty_bucket(s3, name)


def _empty_bucket(s3, name: str) -> None:
    try:
        for u in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        while True:
            keys = [{"Key": o["Key"]} for o in s3.list_objects_v2(Bucket=name).get("Contents", [])]
            if not keys:
                break
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=name)
    except Exception as e:  # best effort: a test's own failure is what matters
        print(f"could not empty bucket {name}: {e}")


@pytest.fixture
def mount(request, s3, s3_server, tmp_path):
    """Factory: mount(options=[...], bucket=None) -> Mount (already mounted), on moto."""
    yield from _mounts(request, s3, s3_server, tmp_path)


# ---------------------------------------------------------------------------- Ceph RGW (slow tier)

CEPH_ENV = {"BASE": "/tmp/s3pvefs-test-ceph", "RGW_PORT": "7490", "MON_V2_PORT": "3310", "MON_V1_PORT": "6799",
            "BUCKET": "tier", "BLUESTORE_BYTES": str(24 << 30)}


def _ceph_rgw(action: str, timeout: float) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parents[2] / "scripts" / "ceph-rgw.sh"
    e = {**env(), **CEPH_ENV, "ACCESS_KEY": ACCESS_KEY, "SECRET_KEY": SECRET_KEY}
    return subprocess.run([str(script), action], env=e, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def ceph_server():
    """A throwaway single-node Ceph RGW (scripts/ceph-rgw.sh, its own ports and state
    under /tmp/s3pvefs-test-ceph, this suite's credentials); installs ceph if missing."""
    r = _ceph_rgw("up", timeout=1800)
    assert r.returncode == 0, f"could not start Ceph RGW:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    yield f"http://127.0.0.1:{CEPH_ENV['RGW_PORT']}"
    _ceph_rgw("down", timeout=300)


@pytest.fixture(scope="session")
def ceph_s3(ceph_server):
    from botocore.config import Config as BotoConfig
    return boto3.client("s3", endpoint_url=ceph_server, region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=BotoConfig(max_pool_connections=32, retries={"max_attempts": 3},
                                          s3={"addressing_style": "path"},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))


def _ceph(*args: str, timeout: float = 300) -> str:
    conf = f"{CEPH_ENV['BASE']}/ceph.conf"
    r = subprocess.run([args[0], "-c", conf, *args[1:]], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr[-2000:]}"
    return r.stdout


def ceph_allocated_bytes() -> int:
    """What the test OSD's bluestore holds now (its admin socket; there is no manager)."""
    dump = json.loads(_ceph("ceph", "daemon", "osd.0", "perf", "dump", "bluestore", timeout=60))
    return dump["bluestore"]["bluestore_allocated"]


@pytest.fixture
def ceph_mount(request, ceph_s3, ceph_server, tmp_path):
    """Factory like mount(), on Ceph RGW. RGW frees deleted objects' data only when its
    garbage collector runs (60 s after the delete at the soonest, then in batches): the
    teardown runs it at once, or the next test's gigabytes met the last one's on the
    24 GiB OSD, which blocks every write when full (seen: tests 3 and 4 of test_ceph.py
    hung on CI). A test starts only with the OSD mostly free."""
    limit = int(CEPH_ENV["BLUESTORE_BYTES"]) // 4
    held = ceph_allocated_bytes()
    assert held < limit, (f"the test Ceph OSD holds {held / 2**30:.1f} GiB before this test "
                          f"(at most {limit / 2**30:.0f} GiB allowed): an earlier test's data was not freed")
    yield from _mounts(request, ceph_s3, ceph_server, tmp_path)
    _ceph("radosgw-admin", "gc", "process", "--include-all")



# ---------------------------------------------------------------------------- signatures checked

@contextlib.contextmanager
def auth_moto(users: dict[str, list[str]], setup_requests: int = 1):
    """A moto server of its own that checks signatures, with IAM users (name -> S3
    actions denied to it, on top of s3:*). moto lets INITIAL_NO_AUTH_ACTION_COUNT
    requests through unsigned: the user set-up, then `setup_requests` more the caller
    makes with setup_kw (the bucket, objects). Yields (endpoint, {user: (key id,
    secret)}, setup_kw)."""
    port = free_port()
    unsigned = 3 * len(users) + setup_requests  # per user: create, policy, access key
    e = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(unsigned))
    exe = _bin("moto_server")
    cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # a TCP probe, not a request: it does not count as one
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        setup_kw = dict(endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="x" * 40)
        iam = boto3.client("iam", **setup_kw)
        keys = {}
        for user, denied in users.items():
            statements = [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]
            if denied:
                statements.append({"Effect": "Deny", "Action": denied, "Resource": "*"})
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": statements}))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        yield endpoint, keys, setup_kw
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------------------- s3fs beside us

@pytest.fixture
def s3fs_mount(s3_server, tmp_path):
    """An s3fs mount of a bucket/prefix (the other tool on the same bucket)."""
    from tests.conftest import need
    need("s3fs")
    mounted = []

    def make(bucket: str, prefix: str) -> str:
        mp = tmp_path / f"s3fs-{len(mounted)}"
        mp.mkdir()
        passwd = tmp_path / "passwd-s3fs"
        passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        passwd.chmod(0o600)
        _sh(f"s3fs {bucket}:/{prefix} {mp} -o url={s3_server},use_path_request_style,passwd_file={passwd},"
           f"stat_cache_expire=1")
        mounted.append(str(mp))
        for _ in range(100):
            if os.path.ismount(mp):
                break
            time.sleep(0.1)
        return str(mp)

    yield make
    for mp in mounted:
        subprocess.run(["fusermount3", "-uz", mp], capture_output=True)


def _sh(script: str) -> None:
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{script!r} failed: {r.stderr[-2000:]}"
