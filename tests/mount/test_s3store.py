"""The S3 adapter (store/s3.py) against moto's server over HTTP: integrity headers.

Every PUT and part carries a Content-MD5 (hashed in a worker thread for big bodies),
which the server checks; with it the body is sent as UNSIGNED-PAYLOAD (the signed
MD5 header binds it to the signature instead of a SHA-256 on the event loop).
content_md5=false goes back to botocore's own way (SHA-256 of the body, signed).
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import pytest
import trio

from s3pvefs.config import StoreConfig
from s3pvefs.store import s3 as s3mod
from s3pvefs.store.base import PartEtag
from tests.mount.conftest import ACCESS_KEY, SECRET_KEY
from tests.mount.faultproxy import FaultProxy

MiB = 1 << 20


@pytest.fixture
def bucket(s3):
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)


def with_store(s3_server, bucket, body, **cfg):
    async def main():
        async with s3mod.S3Store.open(StoreConfig(bucket=bucket, endpoint_url=s3_server,
                                                  **{"max_attempts": 1, **cfg})) as store:
            return await body(store)
    return trio.run(main)


@pytest.mark.parametrize("content_md5", [True, False])
def test_put_and_parts_round_trip(s3, s3_server, bucket, content_md5):
    small, big = os.urandom(1000), os.urandom(6 * MiB + 3)  # big is hashed in a thread

    async def body(store):
        etag = await store.put("small", small, {"mode": "33188"})
        upload = await store.create_multipart("big", {})
        e1 = await store.upload_part("big", upload, 1, big[:5 * MiB])
        e2 = await store.upload_part("big", upload, 2, big[5 * MiB:])
        await store.complete_multipart("big", upload, [PartEtag(1, e1), PartEtag(2, e2)])
        return etag, e1, e2

    etag, e1, e2 = with_store(s3_server, bucket, body, content_md5=content_md5)
    assert etag == hashlib.md5(small).hexdigest()
    assert (e1, e2) == (hashlib.md5(big[:5 * MiB]).hexdigest(), hashlib.md5(big[5 * MiB:]).hexdigest())
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == small
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big


def test_every_put_and_part_carries_its_md5_and_no_body_hash(s3_server, bucket):
    """Seen on the wire (a proxy in front of moto): Content-MD5 of the exact body, and
    UNSIGNED-PAYLOAD instead of a SHA-256 computed on the event loop. That Ceph RGW
    refuses a body not matching its MD5 is tested in the Ceph tier (moto does not check)."""
    small, part = os.urandom(1000), os.urandom(5 * MiB)

    async def body(store):
        await store.put("small", small, {})
        upload = await store.create_multipart("big", {})
        await store.upload_part("big", upload, 1, part)
        await store.abort_multipart("big", upload)

    with FaultProxy(s3_server) as proxy:
        with_store(proxy.url, bucket, body)
    puts = [(target, h) for method, target, h in proxy.seen if method == "PUT"]
    assert len(puts) == 2, proxy.seen
    for (target, h), data in zip(puts, (small, part)):
        assert h["content-md5"] == base64.b64encode(hashlib.md5(data).digest()).decode(), target
        assert h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD", target
        assert "content-md5" in h["authorization"].lower(), "the MD5 header must be signed"


def test_big_bodies_are_hashed_off_the_event_loop(s3_server, bucket, monkeypatch):
    threads = []
    real = s3mod._md5_b64

    def spy(data: bytes) -> str:
        threads.append((len(data), trio.lowlevel.in_trio_run()))
        return real(data)
    monkeypatch.setattr(s3mod, "_md5_b64", spy)

    async def body(store):
        await store.put("small", b"x" * 1000, {})
        await store.put("big", b"y" * MiB, {})

    with_store(s3_server, bucket, body)
    assert threads == [(1000, True), (MiB, False)]


def test_without_content_md5_botocore_signs_the_body_hash(s3_server, bucket):
    data = os.urandom(3000)

    async def body(store):
        await store.put("f", data, {})

    with FaultProxy(s3_server) as proxy:
        with_store(proxy.url, bucket, body, content_md5=False)
    (h,) = [h for method, _, h in proxy.seen if method == "PUT"]
    assert "content-md5" not in h
    assert h["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("data_plane", ["crt", "python"])
def test_get_small_brings_headers_and_at_most_limit_bytes(s3, s3_server, bucket, data_plane):
    """The header read of a listed small file (namespace/headers.py): one ranged GET.
    An object that grew since the listing is never fetched whole. Through the CRT by
    default (a tenth of botocore's CPU per request), aiobotocore with data_plane=python."""
    s3.put_object(Bucket=bucket, Key="notes", Body=b"before upgrade\n", Metadata={"mode": "33188"})
    s3.put_object(Bucket=bucket, Key="grown", Body=b"x" * (3 * MiB), Metadata={"mode": "33261"})
    s3.put_object(Bucket=bucket, Key="empty", Body=b"", Metadata={"mode": "33188"})

    async def body(store):
        out = {}
        for key in ("notes", "grown", "empty", "missing"):
            before = store.bytes_received
            got = await store.get_small(key, 16 * 1024)
            out[key] = (got, store.bytes_received - before)
        return out

    out = with_store(s3_server, bucket, body, data_plane=data_plane)
    (info, data), _ = out["notes"]
    assert data == b"before upgrade\n" and info.size == 15 and info.metadata == {"mode": "33188"}
    (info, data), received = out["grown"]
    assert data is None and info.size == 3 * MiB and info.metadata == {"mode": "33261"}
    assert received <= 16 * 1024 + 1
    (info, data), _ = out["empty"]
    assert data == b"" and info.size == 0
    assert out["missing"][0] is None


@pytest.mark.parametrize("data_plane", ["crt", "python"])
def test_head_reads_size_etag_time_and_metadata(s3, s3_server, bucket, data_plane):
    """HeadObject through either plane gives the same ObjectInfo as the listing and
    botocore would, for awkward names too; a missing key is None, not an error."""
    names = ["dump/vzdump-qemu-100-2026_11_01-00_00_00.vma.zst", "a b+c%d/é~!$&'()*,;=@.txt", "dir/"]
    for name in names:
        s3.put_object(Bucket=bucket, Key=name, Body=b"12345", Metadata={"mode": "33188", "uid": "0"})

    async def body(store):
        return [await store.head(n) for n in [*names, "missing", "dir"]], dict(store.requests), dict(store.errors)

    with FaultProxy(s3_server) as proxy:
        infos, requests, errors = with_store(proxy.url, bucket, body, data_plane=data_plane)
    for name, info in zip(names, infos):
        truth = s3.head_object(Bucket=bucket, Key=name)
        assert (info.key, info.size, info.etag) == (name, 5, truth["ETag"].strip('"'))
        assert info.last_modified == truth["LastModified"].timestamp()
        assert info.metadata == {"mode": "33188", "uid": "0"}
        assert info.content_type == truth["ContentType"]
    assert infos[-2:] == [None, None]
    assert requests["head_object"] == 5 and not errors
    agents = {h.get("user-agent", "").split("/")[0] for method, _, h in proxy.seen if method == "HEAD"}
    assert (agents == {"CRTS3NativeClient"}) == (data_plane == "crt"), agents


# ----------------------------------------------------------------------------- the CRT data plane

def test_ranged_gets_through_the_crt(s3, s3_server, bucket):
    """data_plane = crt: ranged GETs through the CRT give the same answers as through
    aiobotocore: a range inside, one running past the end, If-Match that holds and one
    that no longer does (Changed), a missing key and a range past the end (StoreError
    codes); with into=, the caller's buffer is filled and a view of it returned."""
    data = os.urandom(3 * MiB + 17)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    etag = s3.head_object(Bucket=bucket, Key="obj")["ETag"].strip('"')

    async def body(store):
        assert (store.data_plane, store.read_plane) == ("crt", "crt")
        buffer = bytearray(4 * MiB)
        view = await store.get_range("obj", 0, MiB, etag, into=buffer)
        assert isinstance(view, memoryview) and view.obj is buffer and bytes(view) == data[:MiB]
        out = {"inside": await store.get_range("obj", 1000, 2 * MiB, etag),
               "past end": await store.get_range("obj", len(data) - 10, len(data) + 100)}
        with pytest.raises(s3mod.Changed):
            await store.get_range("obj", 0, 10, "0" * 32)
        for key, start in (("missing", 0), ("obj", len(data) + 5)):
            with pytest.raises(s3mod.StoreError) as e:
                await store.get_range(key, start, start + 10)
            out[key] = e.value.code
        return out

    out = with_store(s3_server, bucket, body, data_plane="crt")
    assert bytes(out["inside"]) == data[1000:2 * MiB]
    assert bytes(out["past end"]) == data[-10:]
    assert out["missing"] in ("NoSuchKey", "404")
    assert out["obj"] in ("InvalidRange", "416")


@pytest.mark.parametrize("content_md5", [True, False])
def test_crt_parts_carry_a_signed_md5_or_a_signed_body_hash(s3_server, bucket, content_md5):
    """Through the CRT as through aiobotocore: Content-MD5 of the exact part, signed, with
    UNSIGNED-PAYLOAD; without content_md5 the part's SHA-256 is signed instead."""
    part = os.urandom(5 * MiB)

    async def body(store):
        upload = await store.create_multipart("big", {})
        await store.upload_part("big", upload, 1, bytearray(part))
        await store.abort_multipart("big", upload)

    with FaultProxy(s3_server) as proxy:
        with_store(proxy.url, bucket, body, content_md5=content_md5)
    (h,) = [h for method, target, h in proxy.seen if method == "PUT" and "partNumber=1" in target]
    if content_md5:
        assert h["content-md5"] == base64.b64encode(hashlib.md5(part).digest()).decode()
        assert h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert "content-md5" in h["authorization"].lower()
    else:
        assert "content-md5" not in h
        assert h["x-amz-content-sha256"] == hashlib.sha256(part).hexdigest()
    assert "aws-crt" in h.get("user-agent", "").lower() or "crt" in h.get("user-agent", "").lower()


def test_a_silent_server_is_given_up_after_read_timeout_and_retried(s3, s3_server, bucket):
    """The CRT has no read timeout of its own: the plane's watchdog cancels a request
    whose connection stays silent for read_timeout, and the adapter tries again."""
    data = os.urandom(MiB)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)

    async def body(store):
        t0 = trio.current_time()
        got = await store.get_range("obj", 0, MiB)
        return got, trio.current_time() - t0, dict(store.retries), dict(store.errors)

    with FaultProxy(s3_server) as proxy:
        proxy.fault_once = {("stall", lambda method, target: method == "GET")}
        got, took, retries, errors = with_store(proxy.url, bucket, body, read_timeout=2, max_attempts=3,
                                                data_plane="crt")
    assert bytes(got) == data
    assert 2 <= took < 15, took
    assert retries == {"get_object": 1} and not errors
    assert proxy.faults["stall"] == 1


def test_python_data_plane_still_carries_the_bytes(s3, s3_server, bucket):
    data = os.urandom(2 * MiB)

    async def body(store):
        assert (store.data_plane, store.read_plane) == ("python", "python")
        upload = await store.create_multipart("big", {})
        e1 = await store.upload_part("big", upload, 1, data)
        await store.complete_multipart("big", upload, [PartEtag(1, e1)])
        return await store.get_range("big", 5, MiB)

    assert bytes(with_store(s3_server, bucket, body, data_plane="python")) == data[5:MiB]


@pytest.mark.parametrize("data_plane", ["crt", "python"])
def test_crc32c_on_every_put_and_part(s3, s3_server, bucket, data_plane):
    """checksum_algorithm = crc32c: x-amz-checksum-crc32c of the exact body on PUTs and
    parts, no Content-MD5, UNSIGNED-PAYLOAD; the object reads back whole."""
    from awscrt.checksums import crc32c
    small, part = os.urandom(1000), os.urandom(5 * MiB)

    async def body(store):
        await store.put("small", small, {})
        upload = await store.create_multipart("big", {})
        e1 = await store.upload_part("big", upload, 1, part)
        await store.complete_multipart("big", upload, [PartEtag(1, e1)])

    with FaultProxy(s3_server) as proxy:
        with_store(proxy.url, bucket, body, checksum_algorithm="crc32c", data_plane=data_plane)
    puts = [h for method, _, h in proxy.seen if method == "PUT"]
    assert len(puts) == 2
    for h, data in zip(puts, (small, part)):
        assert h["x-amz-checksum-crc32c"] == base64.b64encode(crc32c(data).to_bytes(4, "big")).decode()
        assert "content-md5" not in h
        assert h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == part


def test_by_default_parts_go_through_the_crt_and_gets_through_aiobotocore(s3_server, bucket):
    async def body(store):
        return store.data_plane, store.read_plane, store.reads_held_twice

    assert with_store(s3_server, bucket, body) == ("crt", "python", False)
