"""The AWS CRT S3 client (awscrt, the C runtime behind the AWS SDKs' "CRT transfer
manager") as a reference beside the aiobotocore one: the fastest client there is for one
big object, so s3pvefs's throughput is judged against what the server can take, not
against a Python stack's own limit.

Upload: a file of known size split by the CRT into `part` parts, as many connections
as it chooses for throughput_target_gbps. Download: ranged GETs of `part`, written to
/dev/null (as `dd of=/dev/null` does on a mount). Both block until done; CPU time is
the CRT's threads in this process (bench.main's own_cpu counts them).
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlsplit

from bench.raw import BENCH_UA, BenchError, Endpoint

try:
    from awscrt import auth, http, io, s3
    from awscrt.exceptions import AwsCrtError
except ImportError:  # pragma: no cover - preflight says what to install
    s3 = None


def available() -> bool:
    return s3 is not None


class Crt:
    def __init__(self, ep: Endpoint, throughput_gbps: float = 10.0):
        if s3 is None:
            raise BenchError("awscrt is not installed: .venv/bin/pip install awscrt (scripts/setup.sh does)")
        url = urlsplit(ep.url)
        self.ep = ep
        self.host = url.netloc  # host:port: the CRT connects where the Host header says
        self.tls = s3.S3RequestTlsMode.ENABLED if url.scheme == "https" else s3.S3RequestTlsMode.DISABLED
        self.throughput_gbps = throughput_gbps
        elg = io.EventLoopGroup(0)  # one thread per CPU, as the SDKs do
        self.bootstrap = io.ClientBootstrap(elg, io.DefaultHostResolver(elg))
        creds = auth.AwsCredentialsProvider.new_static(ep.access_key, ep.secret_key)
        self.signing = s3.create_default_s3_signing_config(region=ep.region, credential_provider=creds)

    def _client(self, part: int):
        return s3.S3Client(bootstrap=self.bootstrap, region=self.ep.region, tls_mode=self.tls,
                           signing_config=self.signing, part_size=part, multipart_upload_threshold=part,
                           throughput_target_gbps=self.throughput_gbps)

    def _path(self, key: str) -> str:
        return f"/{self.ep.bucket}/{quote(key)}"

    def _run(self, what: str, client, **request) -> float:
        t0 = time.monotonic()
        try:
            client.make_request(**request).finished_future.result()
        except AwsCrtError as e:
            raise BenchError(f"CRT {what} at {self.ep.url}: {e.name}: {e.message}") from None
        return time.monotonic() - t0

    def upload(self, path: str, key: str, size: int, part: int) -> float:
        headers = http.HttpHeaders([("Host", self.host), ("Content-Length", str(size)),
                                    ("Content-Type", "application/octet-stream"), ("User-Agent", BENCH_UA)])
        return self._run("upload", self._client(part), type=s3.S3RequestType.PUT_OBJECT,
                         request=http.HttpRequest("PUT", self._path(key), headers), send_filepath=path)

    def download(self, key: str, part: int) -> float:
        headers = http.HttpHeaders([("Host", self.host), ("User-Agent", BENCH_UA)])
        return self._run("download", self._client(part), type=s3.S3RequestType.GET_OBJECT,
                         request=http.HttpRequest("GET", self._path(key), headers), recv_filepath="/dev/null")
