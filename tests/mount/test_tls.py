"""TLS: certificates are always verified. A self-signed endpoint is refused with one
line, and accepted with ca_bundle naming its certificate."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
import ssl

import boto3
import pytest

from tests.mount.conftest import _bin, env, free_port, run_cli

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
                    "-days", "2"], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port), "-s", "-c", str(cert),
                             "-k", str(key)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    url = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cafile=str(cert))
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/", context=ctx, timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    e = env()
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", verify=str(cert),
                 aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket="tls")
    yield url, str(cert)
    proc.terminate()
    proc.wait(10)


def test_self_signed_is_refused_without_and_accepted_with_ca_bundle(tls_server, tmp_path):
    url, cert = tls_server
    mp = tmp_path / "mnt"
    mp.mkdir()
    base = ["mount", "tls/pve", str(mp), "--endpoint-url", url, "--log-file", str(tmp_path / "log")]
    r = run_cli(*base, "-o", f"cache_dir={tmp_path / 'c'},max_attempts=1")
    assert r.returncode != 0 and not os.path.ismount(mp)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "certificate" in r.stderr.lower() or "ssl" in r.stderr.lower(), r.stderr
    r = run_cli(*base, "-o", f"cache_dir={tmp_path / 'c'},ca_bundle={cert}")
    try:
        assert r.returncode == 0, r.stderr
        (mp / "f").write_text("over TLS")
        assert (mp / "f").read_text() == "over TLS"
    finally:
        run_cli("umount", str(mp))
    assert not os.path.ismount(mp)
