"""Direct S3 calls for the benchmark: the raw references (parallel multipart upload,
parallel ranged download, server-side copies, paginated LIST) and the bookkeeping
(creating, counting, waiting for and deleting objects).

Same stack as s3pvefs (aiobotocore's httpx backend on trio, path-style, SigV4,
checksums only when required), so the "ceiling" is what this client stack reaches
against the endpoint. Every request carries the user agent BENCH_UA, which the
request counter uses to leave the harness's own requests out of a phase's count.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

import aiobotocore.session
import botocore.exceptions
import trio
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession

MiB = 1 << 20
GiB = 1 << 30
BENCH_UA = "s3pvefs-bench/1"
MAX_SINGLE_COPY = 5 * GiB


class BenchError(Exception):
    """A failure to report in one line (no traceback)."""


class _StreamedBody(io.BytesIO):
    """Request body handed to httpx in 1 MiB pieces. A plain BytesIO would be iterated
    line by line, i.e. in tiny pieces for random data, which cripples throughput."""

    def __iter__(self):
        while True:
            piece = self.read(MiB)
            if not piece:
                return
            yield piece


@dataclass
class Endpoint:
    url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


class S3:
    def __init__(self, ep: Endpoint):
        self.ep = ep

    # -- plumbing -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client(self, pool: int = 32, attempts: int = 3, connect_timeout: float = 10,
                      read_timeout: float = 120) -> AsyncIterator:
        cfg = AioConfig(
            http_session_cls=HttpxSession,
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": attempts, "mode": "standard"},
            max_pool_connections=pool,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra=BENCH_UA,
        )
        session = aiobotocore.session.AioSession()
        async with session.create_client(
                "s3", endpoint_url=self.ep.url, region_name=self.ep.region,
                aws_access_key_id=self.ep.access_key, aws_secret_access_key=self.ep.secret_key,
                config=cfg) as client:
            yield client

    def _run(self, fn, *args):
        """Run one async operation to completion; botocore errors become BenchError."""
        try:
            return trio.run(fn, *args)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            raise BenchError(f"S3 at {self.ep.url}: {e}") from None

    # -- checks ---------------------------------------------------------------------

    def check(self) -> str | None:
        """None if the bucket answers, else a one-line reason."""
        async def go():
            async with self._client(attempts=1, connect_timeout=5, read_timeout=10) as c:
                await c.head_bucket(Bucket=self.ep.bucket)
        try:
            trio.run(go)
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            if code in ("404", "NoSuchBucket"):
                return f"bucket {self.ep.bucket!r} does not exist at {self.ep.url}"
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return f"access to bucket {self.ep.bucket!r} at {self.ep.url} denied ({code}): check the credentials"
            return f"HEAD bucket {self.ep.bucket!r} at {self.ep.url}: {code}"
        except botocore.exceptions.BotoCoreError as e:
            return f"cannot reach {self.ep.url}: {e}"
        return None

    # -- raw references -------------------------------------------------------------

    def upload(self, path: str, key: str, size: int, part: int, inflight: int) -> float:
        """Parallel multipart upload of the first `size` bytes of `path`; seconds."""
        async def go():
            async with self._client(pool=inflight + 4) as c:
                t0 = time.monotonic()
                mpu = await c.create_multipart_upload(Bucket=self.ep.bucket, Key=key)
                upload_id, etags = mpu["UploadId"], {}
                slots = trio.Semaphore(inflight)
                fd = os.open(path, os.O_RDONLY)
                try:
                    async def one(n: int, start: int, length: int) -> None:
                        try:
                            data = await trio.to_thread.run_sync(os.pread, fd, length, start)
                            r = await c.upload_part(Bucket=self.ep.bucket, Key=key, UploadId=upload_id,
                                                    PartNumber=n, Body=_StreamedBody(data))
                            etags[n] = r["ETag"]
                        finally:
                            slots.release()
                    try:
                        async with trio.open_nursery() as nursery:
                            for n in range(1, math.ceil(size / part) + 1):
                                start = (n - 1) * part
                                await slots.acquire()
                                nursery.start_soon(one, n, start, min(part, size - start))
                        await c.complete_multipart_upload(
                            Bucket=self.ep.bucket, Key=key, UploadId=upload_id,
                            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]})
                    except BaseException:
                        with trio.CancelScope(shield=True):
                            with contextlib.suppress(Exception):
                                await c.abort_multipart_upload(Bucket=self.ep.bucket, Key=key, UploadId=upload_id)
                        raise
                finally:
                    os.close(fd)
                return time.monotonic() - t0
        return self._run(go)

    def download(self, key: str, size: int, part: int, inflight: int) -> float:
        """Parallel ranged GETs of the whole object, bytes discarded; seconds."""
        async def go():
            async with self._client(pool=inflight + 4) as c:
                t0 = time.monotonic()
                got = 0
                slots = trio.Semaphore(inflight)

                async def one(start: int, end: int) -> None:
                    nonlocal got
                    try:
                        r = await c.get_object(Bucket=self.ep.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
                        async with r["Body"] as body:
                            async for piece in body.iter_chunks(MiB):
                                got += len(piece)
                    finally:
                        slots.release()

                async with trio.open_nursery() as nursery:
                    for start in range(0, size, part):
                        await slots.acquire()
                        nursery.start_soon(one, start, min(size, start + part))
                if got != size:
                    raise BenchError(f"raw download of {key}: got {got} bytes, expected {size}")
                return time.monotonic() - t0
        return self._run(go)

    def copy_single(self, src: str, dst: str) -> float:
        """One CopyObject (S3 allows it up to 5 GiB); seconds."""
        async def go():
            async with self._client(read_timeout=900) as c:
                t0 = time.monotonic()
                await c.copy_object(Bucket=self.ep.bucket, Key=dst,
                                    CopySource={"Bucket": self.ep.bucket, "Key": src})
                return time.monotonic() - t0
        return self._run(go)

    def copy_parts(self, src: str, dst: str, size: int, part: int, inflight: int) -> float:
        """Multipart upload whose parts are UploadPartCopy ranges of src, in parallel; seconds."""
        async def go():
            async with self._client(pool=inflight + 4, read_timeout=900) as c:
                t0 = time.monotonic()
                upload_id = (await c.create_multipart_upload(Bucket=self.ep.bucket, Key=dst))["UploadId"]
                etags = {}
                limiter = trio.CapacityLimiter(inflight)

                async def one(n: int, start: int, end: int) -> None:
                    async with limiter:
                        r = await c.upload_part_copy(
                            Bucket=self.ep.bucket, Key=dst, UploadId=upload_id, PartNumber=n,
                            CopySource={"Bucket": self.ep.bucket, "Key": src},
                            CopySourceRange=f"bytes={start}-{end - 1}")
                        etags[n] = r["CopyPartResult"]["ETag"]
                try:
                    async with trio.open_nursery() as nursery:
                        for n, start in enumerate(range(0, size, part), 1):
                            nursery.start_soon(one, n, start, min(size, start + part))
                    await c.complete_multipart_upload(
                        Bucket=self.ep.bucket, Key=dst, UploadId=upload_id,
                        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]})
                except BaseException:
                    with trio.CancelScope(shield=True):
                        with contextlib.suppress(Exception):
                            await c.abort_multipart_upload(Bucket=self.ep.bucket, Key=dst, UploadId=upload_id)
                    raise
                return time.monotonic() - t0
        return self._run(go)

    def list_dir(self, prefix: str) -> tuple[float, int, int]:
        """Paginated ListObjectsV2 (delimiter '/', 1000 per page) of one directory:
        (seconds, entries, pages)."""
        async def go():
            async with self._client() as c:
                t0 = time.monotonic()
                entries = pages = 0
                kwargs = {"Bucket": self.ep.bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": 1000}
                while True:
                    r = await c.list_objects_v2(**kwargs)
                    pages += 1
                    entries += len(r.get("Contents", [])) + len(r.get("CommonPrefixes", []))
                    if not r.get("IsTruncated"):
                        return time.monotonic() - t0, entries, pages
                    kwargs["ContinuationToken"] = r["NextContinuationToken"]
        return self._run(go)

    # -- bookkeeping ----------------------------------------------------------------

    async def _keys(self, c, prefix: str) -> list[tuple[str, int]]:
        out, kwargs = [], {"Bucket": self.ep.bucket, "Prefix": prefix, "MaxKeys": 1000}
        while True:
            r = await c.list_objects_v2(**kwargs)
            out += [(o["Key"], o["Size"]) for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = r["NextContinuationToken"]

    def count(self, prefix: str) -> tuple[int, int]:
        """(files, bytes) under prefix, not counting directory marker objects."""
        async def go():
            async with self._client() as c:
                keys = [(k, s) for k, s in await self._keys(c, prefix) if not k.endswith("/")]
                return len(keys), sum(s for _, s in keys)
        return self._run(go)

    def head_size(self, key: str) -> int | None:
        async def go():
            async with self._client() as c:
                try:
                    return (await c.head_object(Bucket=self.ep.bucket, Key=key))["ContentLength"]
                except botocore.exceptions.ClientError as e:
                    if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                        return None
                    raise
        return self._run(go)

    def marker(self) -> str:
        """A HEAD of a key that does not exist; its log line marks a point in time."""
        tag = f"bench-marker-{uuid.uuid4().hex}"
        self.head_size(tag)
        return tag

    def put_many(self, prefix: str, names: list[str], body: bytes, inflight: int = 32) -> float:
        async def go():
            async with self._client(pool=inflight + 4) as c:
                t0 = time.monotonic()
                limiter = trio.CapacityLimiter(inflight)

                async def one(name: str) -> None:
                    async with limiter:
                        await c.put_object(Bucket=self.ep.bucket, Key=prefix + name, Body=body)
                async with trio.open_nursery() as nursery:
                    for name in names:
                        nursery.start_soon(one, name)
                return time.monotonic() - t0
        return self._run(go)

    def put_files_one_by_one(self, src_dir: str, prefix: str) -> float:
        """PUT each file of src_dir, the next one only after the previous is stored:
        what a filesystem that commits every file before close() returns cannot beat
        with a sequential `cp -r`."""
        names = sorted(os.listdir(src_dir))

        async def go():
            async with self._client() as c:
                t0 = time.monotonic()
                for name in names:
                    with open(os.path.join(src_dir, name), "rb") as f:
                        body = _StreamedBody(f.read())
                    await c.put_object(Bucket=self.ep.bucket, Key=prefix + name, Body=body)
                return time.monotonic() - t0
        return self._run(go)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under prefix and abort its unfinished multipart uploads."""
        if not prefix or not prefix.endswith("/"):
            raise ValueError(f"refusing to delete prefix {prefix!r}")

        async def go():
            async with self._client() as c:
                keys = [k for k, _ in await self._keys(c, prefix)]
                for i in range(0, len(keys), 1000):
                    await c.delete_objects(Bucket=self.ep.bucket, Delete={
                        "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
                r = await c.list_multipart_uploads(Bucket=self.ep.bucket, Prefix=prefix)
                for u in r.get("Uploads", []):
                    await c.abort_multipart_upload(Bucket=self.ep.bucket, Key=u["Key"], UploadId=u["UploadId"])
                return len(keys)
        return self._run(go)

    def wait_objects(self, prefix: str, files: int, total: int, t0: float, timeout: float,
                     poll: float = 0.25) -> float:
        """Poll until `files` objects of `total` bytes are under prefix; seconds since t0
        (a time.monotonic() value) at the first poll that saw them all."""
        async def go():
            async with self._client() as c:
                while True:
                    keys = [(k, s) for k, s in await self._keys(c, prefix) if not k.endswith("/")]
                    now = time.monotonic()
                    if len(keys) >= files and sum(s for _, s in keys) >= total:
                        return now - t0
                    if now - t0 > timeout:
                        raise BenchError(f"after {timeout:.0f} s only {len(keys)}/{files} objects "
                                         f"({sum(s for _, s in keys)}/{total} bytes) under {prefix}")
                    await trio.sleep(poll)
        return self._run(go)
