"""`s3pvefs check`: the real CLI against moto's S3 server, no mount. Every step passes
on a healthy bucket and leaves nothing behind; each kind of mistake fails at its own
step with its likely cause, the later steps are skipped, the exit code is 1; usage
mistakes are one line and exit 2; the secret never shows."""

from __future__ import annotations

import subprocess
import time
import uuid

import boto3
import pytest

from tests.mount.conftest import SECRET_KEY, auth_moto, env, free_port, run_cli, s3pvefs_cmd

STEPS = ["DNS resolution", "TCP connect", "TLS handshake", "authentication", "clock skew", "bucket exists",
         "bucket features", "put probe object", "get probe object", "head probe object", "multipart upload", "server-side copy",
         "checksum checked", "delete probe object"]
OPTIONAL = ("TLS handshake", "checksum checked")  # skipped on plain http, and with checksum_algorithm = md5


def statuses(r: subprocess.CompletedProcess) -> dict[str, str]:
    """{step label: PASS/FAIL/SKIP}, checking the report's shape on the way."""
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert SECRET_KEY not in r.stderr + r.stdout
    lines = r.stdout.splitlines()
    assert lines[0].startswith("s3pvefs check of "), r.stdout
    steps = lines[1:1 + len(STEPS)]
    found = {}
    for line in steps:
        status, rest = line.split("  ", 1)
        label = next(s for s in STEPS if rest.startswith(s))
        found[label] = status
    assert list(found) == STEPS, r.stdout
    return found


def line_of(r: subprocess.CompletedProcess, label: str) -> str:
    return next(line for line in r.stdout.splitlines() if line[6:].startswith(label))


def check(endpoint: str, spec: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli("check", spec, "--endpoint-url", endpoint, *args, timeout=timeout)


def keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def bucket(s3):
    name = f"check-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="pve/dump/keep.txt", Body=b"untouched")
    return name


def test_all_pass_and_nothing_left_behind(s3_server, s3, bucket):
    r = check(s3_server, f"{bucket}/pve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    found = statuses(r)
    assert found == {s: "SKIP" if s in OPTIONAL else "PASS" for s in STEPS}, r.stdout
    assert "http endpoint" in line_of(r, "TLS handshake")
    assert "5 MiB + 1 byte" in line_of(r, "multipart upload")
    assert "pve/.s3pvefs-check-" in line_of(r, "put probe object")
    assert "versioning: never enabled; Object Lock: off; incomplete uploads aborted after never" \
        in line_of(r, "bucket features")
    assert r.stdout.splitlines()[-1].startswith("all checks passed")
    assert keys(s3, bucket) == ["pve/dump/keep.txt"]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_crc32c_on_a_server_that_does_not_check_it_fails_with_the_remedy(s3_server, s3, bucket):
    """checksum_algorithm = crc32c is only safe where the server checks the header: moto
    (like Ceph RGW before 19) stores a body whose CRC32C is wrong, and check says so."""
    r = check(s3_server, f"{bucket}/pve", "-o", "checksum_algorithm=crc32c")
    assert r.returncode == 1, r.stdout + r.stderr
    found = statuses(r)
    assert found["checksum checked"] == "FAIL"
    assert found["multipart upload"] == "PASS"  # the CRC32C header itself is accepted
    assert "set checksum_algorithm = md5" in line_of(r, "checksum checked")
    assert keys(s3, bucket) == ["pve/dump/keep.txt"]  # the probe with the wrong CRC was removed


def test_signed_sha256_on_a_server_that_does_not_check_it_fails_with_the_remedy(s3_server, s3, bucket):
    """content_md5 = false (the ceph preset) leaves each body to its signed SHA-256:
    safe only where the server compares it with the body. moto does not, and check
    says so; nothing of the probe's upload is left."""
    r = check(s3_server, f"{bucket}/pve", "-o", "content_md5=false")
    assert r.returncode == 1, r.stdout + r.stderr
    assert statuses(r)["checksum checked"] == "FAIL"
    assert "set content_md5 = true" in line_of(r, "checksum checked")
    assert keys(s3, bucket) == ["pve/dump/keep.txt"]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_versioning_lock_and_lifecycle_are_reported(s3_server, s3):
    """What renames and deletes leave behind: a versioned bucket without a rule for
    noncurrent versions is named, with the rules that fix it; Object Lock is seen; sse
    and a storage class are what the probe is written with."""
    plain = f"check-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=plain)
    s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    r = check(s3_server, f"{plain}/pve")
    assert r.returncode == 0, r.stdout
    line = line_of(r, "bucket features")
    assert "versioning: Enabled" in line and "noncurrent versions expire after never" in line
    s3.put_bucket_lifecycle_configuration(Bucket=plain, LifecycleConfiguration={"Rules": [
        {"ID": "noncurrent", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
        {"ID": "uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}}]})
    r = check(s3_server, f"{plain}/pve", "-o", "sse=AES256,storage_class=STANDARD_IA")
    assert r.returncode == 0, r.stdout
    line = line_of(r, "bucket features")
    assert "incomplete uploads aborted after 2 days" in line and "noncurrent versions expire after 1 days" in line
    assert "sse=AES256, class STANDARD_IA" in line_of(r, "put probe object")

    locked = f"check-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    r = check(s3_server, f"{locked}/pve", "-o", "object_lock_mode=GOVERNANCE,object_lock_days=7")
    assert r.returncode == 0, r.stdout
    assert "Object Lock: on" in line_of(r, "bucket features")
    r = check(s3_server, f"{plain}/pve", "-o", "object_lock_mode=GOVERNANCE,object_lock_days=7")
    assert r.returncode == 1, r.stdout
    assert statuses(r)["bucket features"] == "FAIL"
    assert "the bucket has no Object Lock" in line_of(r, "bucket features") or \
        "the bucket has no Object Lock" in r.stdout


def test_whole_bucket_from_a_config_file(s3_server, s3, bucket, tmp_path):
    cfg = tmp_path / "s3pvefs.toml"
    cfg.write_text(f'[store]\nbucket = "{bucket}"\nendpoint_url = "{s3_server}"\n')
    r = run_cli("check", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(statuses(r).values()) == {"PASS", "SKIP"}
    assert "/.s3pvefs-check-" not in line_of(r, "put probe object")  # at the top of the bucket
    assert keys(s3, bucket) == ["pve/dump/keep.txt"]


def test_missing_bucket(s3_server):
    r = check(s3_server, "no-such-bucket-s3pvefs-check/pve")
    assert r.returncode == 1, r.stdout + r.stderr
    found = statuses(r)
    assert found["bucket exists"] == "FAIL"
    line = line_of(r, "bucket exists")
    assert "bucket 'no-such-bucket-s3pvefs-check' does not exist" in line and "create it" in line
    assert all(found[s] == "SKIP" for s in STEPS[STEPS.index("bucket exists") + 1:])
    assert "not run: bucket exists failed" in line_of(r, "put probe object")


def test_closed_port_fails_at_tcp():
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    r = check(f"http://127.0.0.1:{port}", "bucket/pve", "-o", "connect_timeout=2", timeout=60)
    assert time.monotonic() - t0 < 20
    assert r.returncode == 1, r.stdout + r.stderr
    found = statuses(r)
    assert (found["DNS resolution"], found["TCP connect"]) == ("PASS", "FAIL")
    line = line_of(r, "TCP connect")
    assert f"nothing listens on port {port}" in line and "refused" in line
    assert all(found[s] == "SKIP" for s in STEPS[2:])


def test_unknown_host_fails_at_dns():
    r = check("http://no-such-host.invalid", "bucket/pve", "-o", "connect_timeout=5", timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    found = statuses(r)
    assert found["DNS resolution"] == "FAIL"
    assert "no-such-host.invalid" in line_of(r, "DNS resolution")
    assert all(found[s] == "SKIP" for s in STEPS[1:])


def test_no_tls_on_an_http_port(s3_server):
    r = check(s3_server.replace("http://", "https://"), "bucket/pve", "-o", "max_attempts=1", timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    found = statuses(r)
    assert found["TLS handshake"] == "FAIL"
    assert "does not speak TLS" in line_of(r, "TLS handshake")
    assert found["authentication"] == "SKIP"


@pytest.mark.parametrize("args, words", [
    (["-o", "no_such_option=1"], ["no_such_option", "unknown"]),
    (["-o", "max_attempts=many"], ["max_attempts"]),
    (["-o", "upload_limit=08:00=2M;25:00=off"], ["upload_limit", "HH:MM=RATE"]),
    (["-o", "download_limit=fast"], ["download_limit", "not a rate"]),
    (["--config", "/nonexistent/s3pvefs.toml"], ["no such file"]),
    (["--endpoint-url", "not a url"], ["endpoint_url"]),
])
def test_usage_mistakes_are_exit_2(s3_server, args, words):
    r = run_cli("check", "bucket/pve", *(["--endpoint-url", s3_server] if "--endpoint-url" not in args else []),
                *args)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("s3pvefs: "), err
    for w in words:
        assert w in err
    assert r.stdout == ""


def test_no_bucket_at_all_is_exit_2():
    r = run_cli("check", "--endpoint-url", "http://127.0.0.1:1")
    assert r.returncode == 2
    assert "no bucket given" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- signatures checked

USERS = {"pve": [], "noget": ["s3:GetObject"], "noput": ["s3:PutObject"]}


@pytest.fixture(scope="module")
def auth_server():
    """(endpoint, {user: (key id, secret)}, admin boto3 client of user "pve")."""
    with auth_moto(USERS, setup_requests=1) as (endpoint, users, setup_kw):
        boto3.client("s3", **setup_kw).create_bucket(Bucket="authbucket")
        admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                             aws_access_key_id=users["pve"][0], aws_secret_access_key=users["pve"][1])
        yield endpoint, users, admin


def check_as(endpoint: str, key_id: str, secret: str, *args: str) -> subprocess.CompletedProcess:
    e = {**env(), "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    return subprocess.run(s3pvefs_cmd() + ["check", "authbucket/pve", "--endpoint-url", endpoint, *args],
                          env=e, capture_output=True, text=True, timeout=120)


def test_signed_all_pass(auth_server):
    endpoint, users, admin = auth_server
    key_id, secret = users["pve"]
    r = check_as(endpoint, key_id, secret, "--debug")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(statuses(r).values()) == {"PASS", "SKIP"}
    assert secret not in r.stdout + r.stderr
    assert keys(admin, "authbucket") == []


def test_wrong_secret_fails_at_authentication(auth_server):
    endpoint, users, _ = auth_server
    wrong = "WrongSecretWrongSecretWrongSecret0123456"
    for extra in ([], ["--debug"]):  # not even in debug logs
        r = check_as(endpoint, users["pve"][0], wrong, *extra)
        assert r.returncode == 1, r.stdout + r.stderr
        found = statuses(r)
        assert found["authentication"] == "FAIL"
        assert "wrong secret key" in line_of(r, "authentication")
        assert found["bucket exists"] == "SKIP" and found["put probe object"] == "SKIP"
        assert wrong not in r.stdout + r.stderr


def test_unknown_access_key(auth_server):
    endpoint, users, _ = auth_server
    r = check_as(endpoint, "AKIANOSUCHKEY0000000", users["pve"][1])
    assert r.returncode == 1, r.stdout + r.stderr
    assert statuses(r)["authentication"] == "FAIL"
    assert "unknown access key" in line_of(r, "authentication")
    assert users["pve"][1] not in r.stdout + r.stderr


def test_put_denied(auth_server):
    endpoint, users, admin = auth_server
    r = check_as(endpoint, *users["noput"])
    assert r.returncode == 1, r.stdout + r.stderr
    found = statuses(r)
    assert found["bucket exists"] == "PASS" and found["put probe object"] == "FAIL"
    line = line_of(r, "put probe object")
    assert "access denied by the bucket policy or user permissions" in line and "s3:PutObject" in line
    assert found["get probe object"] == "SKIP"
    assert keys(admin, "authbucket") == []


def test_get_denied_still_deletes_everything(auth_server):
    """Reads fail after the writes succeeded: the probe objects are removed all the same."""
    endpoint, users, admin = auth_server
    r = check_as(endpoint, *users["noget"])
    assert r.returncode == 1, r.stdout + r.stderr
    found = statuses(r)
    assert found["put probe object"] == "PASS"
    assert found["get probe object"] == "FAIL"
    assert "s3:GetObject" in line_of(r, "get probe object")
    assert found["delete probe object"] == "PASS"
    assert keys(admin, "authbucket") == []
    assert not admin.list_multipart_uploads(Bucket="authbucket").get("Uploads")


# ---------------------------------------------------------------------------- causes, in-process

def _probe(**store):
    from dataclasses import replace

    from s3pvefs.check import Probe
    from s3pvefs.config import Config
    config = Config()
    return Probe(replace(config, store=replace(config.store, bucket="b", **store)), "http://127.0.0.1:1")


@pytest.mark.parametrize("skew, fails", [(2, False), (-250, False), (400, False), (-890, False), (910, True),
                                         (-3600, True)])
def test_clock_skew(skew, fails):
    """check fails where mount is refused (store/s3.py MAX_SKEW, 15 minutes), not sooner."""
    import trio

    from s3pvefs.check import Failed, step_clock
    p = _probe()
    p.local_date = time.time()
    p.server_date = p.local_date - skew
    if fails:
        with pytest.raises(Failed, match="ahead of|behind"):
            trio.run(step_clock, p)
    else:
        assert "allowed" in trio.run(step_clock, p)


@pytest.mark.parametrize("code, message, response, cause", [
    ("SignatureDoesNotMatch", "", {}, "wrong secret key"),
    ("InvalidAccessKeyId", "", {}, "unknown access key"),
    ("AuthorizationHeaderMalformed", "the region 'us-east-1' is wrong; expecting 'eu-west-1'", {},
     "wrong region (the server expects eu-west-1: --region eu-west-1)"),
    ("PermanentRedirect", "", {"ResponseMetadata": {"HTTPHeaders": {"x-amz-bucket-region": "eu-central-1"}}},
     "wrong region or addressing style (the server expects eu-central-1"),
    ("RequestTimeTooSkewed", "", {}, "the local clock is off"),
])
def test_authentication_causes(code, message, response, cause):
    import trio

    from s3pvefs.check import Failed, step_auth
    from s3pvefs.errors import StoreError

    class Store:
        async def signed_list(self, prefix):
            e = StoreError(f"list_objects_v2 {prefix}: {code} (400) {message}", code=code)
            e.response = {**response, "Error": {"Code": code, "Message": message}}
            raise e

    p = _probe()
    p.store = Store()
    with pytest.raises(Failed) as e:
        trio.run(step_auth, p)
    assert cause in e.value.cause


def test_encryption_and_class_causes():
    from s3pvefs.check import _write_failure
    from s3pvefs.errors import StoreError
    f = _write_failure(_probe(sse="aws:kms", sse_kms_key_id="alias/x"), "put",
                       StoreError("put_object k: KMS.NotFoundException (400) Invalid keyId alias/x",
                                  code="KMS.NotFoundException"))
    assert "refuses sse = 'aws:kms' with key 'alias/x'" in f.cause and "kms:GenerateDataKey" in f.cause
    f = _write_failure(_probe(storage_class="GLACIER_IR"), "put",
                       StoreError("put_object k: InvalidStorageClass (400) The storage class you specified "
                                  "is not valid", code="InvalidStorageClass"))
    assert "storage class 'GLACIER_IR'" in f.cause
    f = _write_failure(_probe(sse="SSE-C"), "put",
                       StoreError("put_object k: InvalidRequest (400) Requests specifying Server Side Encryption "
                                  "with Customer provided keys must be made over a secure connection.",
                                  code="InvalidRequest"))
    assert "over https only" in f.cause


@pytest.mark.parametrize("code, message, checksums, cause", [
    ("AccessDenied", "Access Denied", "when_required", "needs s3:PutObject"),
    ("XAmzContentSHA256Mismatch", "", "when_supported", "set checksums=when_required"),
    ("InvalidRequest", "x-amz-checksum-crc32 is not supported", "when_supported", "set checksums=when_required"),
    ("InvalidDigest", "", "when_required", "rejects checksum headers"),
])
def test_write_causes(code, message, checksums, cause):
    from s3pvefs.check import _write_failure
    from s3pvefs.errors import StoreError
    f = _write_failure(_probe(checksums=checksums), "put", StoreError(f"put_object k: {code} (400) {message}",
                                                                      code=code))
    assert cause in f.cause
