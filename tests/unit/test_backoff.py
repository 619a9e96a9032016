"""The S3 adapter's own retries (a provider's throttle_codes, a 429 botocore left
alone, GET bodies that broke off): full-jitter exponential backoff, capped, a
server's Retry-After honoured within the cap, never a wait past the request
deadline. And the reading of a refusal for a clock that is off. No real sleeping:
trio's MockClock jumps over the waits, the jitter is injected."""

from __future__ import annotations

import email.utils
import random

import botocore.exceptions
import httpx
import pytest
import trio
import trio.testing

from s3pvefs.errors import StoreError
from s3pvefs.store import s3 as s3mod
from s3pvefs.store.s3 import (BACKOFF_BASE, BACKOFF_CAP, S3Store, translate_error, backoff_delay, clock_skewed,
                              retry_after, skew_message)


# ------------------------------------------------------------------ the delay itself

@pytest.mark.parametrize("attempt", range(1, 40))
def test_delay_is_within_zero_and_the_capped_exponential(attempt):
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    assert backoff_delay(attempt, rand=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, rand=lambda: 1.0) == pytest.approx(ceiling)
    rng = random.Random(attempt)
    for _ in range(200):
        assert 0.0 <= backoff_delay(attempt, rand=rng.random) <= ceiling <= BACKOFF_CAP


def test_ceiling_doubles_from_half_a_second_up_to_the_cap():
    tops = [backoff_delay(n, rand=lambda: 1.0) for n in range(1, 8)]
    assert tops == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff_delay(10_000, rand=lambda: 1.0) == BACKOFF_CAP  # no overflow for absurd attempts


def test_jitter_spreads_the_waits():
    rng = random.Random(7)
    waits = [backoff_delay(4, rand=rng.random) for _ in range(1000)]
    assert len({round(w, 6) for w in waits}) > 900  # not one value for every client
    assert min(waits) < 0.5 and max(waits) > 3.5  # the whole range [0, 4] is used
    assert 1.6 < sum(waits) / len(waits) < 2.4  # uniform: mean half the ceiling


@pytest.mark.parametrize("asked, expected", [(3.0, 3.0), (0.2, 0.2), (3600.0, BACKOFF_CAP), (None, 0.0),
                                              (0.0, 0.0), (-5.0, 0.0)])
def test_retry_after_is_a_floor_bounded_by_the_cap(asked, expected):
    assert backoff_delay(1, asked, rand=lambda: 0.0) == pytest.approx(expected)
    # the jitter still applies above the floor
    assert backoff_delay(3, asked, rand=lambda: 1.0) == pytest.approx(max(2.0, expected))


def test_retry_after_headers_are_read():
    now = 1_800_000_000.0
    assert retry_after({"x-amz-retry-after": "1500"}) == 1.5  # milliseconds (AWS)
    assert retry_after({"Retry-After": "7"}) == 7.0  # seconds
    http_date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after({"retry-after": http_date}, now=now) == pytest.approx(30.0)
    assert retry_after({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    for garbage in ({}, {"retry-after": "soon"}, {"retry-after": ""}, {"x-amz-retry-after": "x"}):
        assert retry_after(garbage) is None


# ------------------------------------------------------------------ through the store

def client_error(code: str, status: int, headers: dict | None = None, retried: int = 0, **extra):
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code, **extra},
         "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}, "RetryAttempts": retried}},
        "PutObject")


class Client:
    """Fails put_object with `errors` in turn, then succeeds; notes when each call came."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.times: list[float] = []

    async def put_object(self, **kwargs):
        self.times.append(trio.current_time())
        kwargs["Body"].read()
        if self.errors:
            raise self.errors.pop(0)
        return {"ETag": '"abc"'}


def run_put(store: S3Store):
    async def main():
        await store.put("k", b"data", {})
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(main, clock=clock)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def test_throttle_retries_wait_with_jitter_within_bounds():
    client = Client(*[client_error("AccessDenied", 403) for _ in range(4)])
    store = S3Store(client, "b", throttle_codes=frozenset({"AccessDenied"}), request_deadline=60)
    draws = iter([0.9, 0.1, 0.5, 0.25])
    store._rand = lambda: next(draws)
    run_put(store)
    assert gaps(client.times) == pytest.approx([0.9 * 0.5, 0.1 * 1.0, 0.5 * 2.0, 0.25 * 4.0])
    assert store.retries["put_object"] == 4


def test_retry_after_of_a_throttling_answer_is_honoured_up_to_the_cap():
    client = Client(client_error("SlowDown", 503, {"retry-after": "3"}),
                    client_error("SlowDown", 503, {"x-amz-retry-after": "2500"}),
                    client_error("SlowDown", 503, {"retry-after": "86400"}))
    store = S3Store(client, "b", throttle_codes=frozenset({"SlowDown"}), request_deadline=60)
    store._rand = lambda: 0.0
    run_put(store)
    assert gaps(client.times) == pytest.approx([3.0, 2.5, BACKOFF_CAP])


def test_a_429_botocore_did_not_retry_is_retried_here():
    client = Client(client_error("TooManyRequests", 429, {"retry-after": "1"}))
    store = S3Store(client, "b")
    store._rand = lambda: 0.0
    run_put(store)
    assert gaps(client.times) == pytest.approx([1.0])
    # ...but not one botocore already retried max_attempts times (no 5 x 5 attempts)
    client = Client(client_error("SlowDown", 429, retried=4))
    store = S3Store(client, "b")
    with pytest.raises(StoreError) as e:
        run_put(store)
    assert e.value.code == "SlowDown" and len(client.times) == 1


def test_no_wait_runs_past_the_request_deadline():
    """Deadline 3 s, waits of 0.5, 1, 2 (top of the jitter): the third would end at 3.5 s,
    so the request fails at 1.5 s with the server's own error, not a timeout later."""
    client = Client(*[client_error("AccessDenied", 403) for _ in range(10)])
    store = S3Store(client, "b", throttle_codes=frozenset({"AccessDenied"}), request_deadline=3,
                    max_attempts=10)
    store._rand = lambda: 1.0
    with pytest.raises(StoreError) as e:
        run_put(store)
    assert e.value.code == "AccessDenied"
    assert client.times[-1] - client.times[0] == pytest.approx(1.5) and len(client.times) == 3
    assert store.errors == {"AccessDenied": 1}


class Body:
    def __init__(self, outcome):
        self.outcome = outcome

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def read(self):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class GetClient:
    def __init__(self, broken: int):
        self.broken, self.times = broken, []

    async def get_object(self, **kwargs):
        self.times.append(trio.current_time())
        outcome = ConnectionResetError("cut") if len(self.times) <= self.broken else b"0123456789"
        return {"Body": Body(outcome), "ContentLength": 10}


def test_broken_bodies_are_retried_with_capped_jittered_backoff():
    client = GetClient(broken=4)
    store = S3Store(client, "b", request_deadline=60)
    store._rand = lambda: 1.0

    async def main():
        return await store.get_range("k", 0, 10)
    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == b"0123456789"
    assert gaps(client.times) == pytest.approx([0.5, 1.0, 2.0, 4.0])
    assert store.retries["get_object body"] == 4


def test_broken_bodies_stop_at_the_deadline_with_the_real_error():
    client = GetClient(broken=100)
    store = S3Store(client, "b", request_deadline=2, min_transfer_rate=1 << 30, max_attempts=50)
    store._rand = lambda: 1.0

    async def main():
        return await store.get_range("k", 0, 10)
    with pytest.raises(StoreError) as e:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert e.value.code == "Network" and "cut" in str(e.value)  # not "no answer within 2 s"
    assert len(client.times) == 3  # waits 0.5 + 1: the next (2) would pass the deadline


class RawStream:
    """httpx's response as _body_into reads it: aiter_raw() pieces, or a cut."""

    def __init__(self, pieces, cut: bool):
        self.pieces, self.cut = pieces, cut

    async def aiter_raw(self):
        for piece in self.pieces:
            yield piece
        if self.cut:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class StreamClient(GetClient):
    """GETs whose bodies come in pieces; the first `broken` are cut after one piece."""

    async def get_object(self, **kwargs):
        self.times.append(trio.current_time())
        cut = len(self.times) <= self.broken
        body = Body(b"")
        body.raw_stream = RawStream([b"0123", b"4567", b"89"][:1 if cut else 3], cut)
        return {"Body": body, "ContentLength": 10}


def test_a_body_read_into_the_callers_buffer_is_retried_when_cut_and_comes_back_as_a_view_of_it():
    client = StreamClient(broken=2)
    store = S3Store(client, "b", request_deadline=60)
    store._rand = lambda: 1.0
    buffer = bytearray(16)

    async def main():
        return await store.get_range("k", 0, 10, into=buffer)
    data = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert isinstance(data, memoryview) and data.obj is buffer and bytes(data) == b"0123456789"
    assert store.retries["get_object body"] == 2 and len(client.times) == 3


def test_a_body_longer_than_the_range_is_refused_not_written_past_it():
    client = StreamClient(broken=0)
    store = S3Store(client, "b", request_deadline=60, max_attempts=1)

    async def main():
        return await store.get_range("k", 0, 6, into=bytearray(6))
    with pytest.raises(StoreError) as e:
        trio.run(main)
    assert e.value.code == "ShortRead" and "more than the 6 bytes" in str(e.value)


# ------------------------------------------------------------------ a clock that is off

def test_request_time_too_skewed_is_read_exactly():
    e = translate_error("head_bucket", "b", client_error(
        "RequestTimeTooSkewed", 403, {"date": email.utils.formatdate(usegmt=True)},
        RequestTime="20260101T100000Z", ServerTime="2026-01-01T12:00:00Z", MaxAllowedSkewMilliseconds="900000"))
    assert e.skew == pytest.approx(-7200.0) and clock_skewed(e)
    text = skew_message(e)
    assert "2.0 h behind the S3 server's" in text and "timedatectl" in text and "\n" not in text


def test_a_bare_403_from_a_far_away_clock_is_a_skew_a_near_one_is_not():
    far = email.utils.formatdate(email.utils.time.time() + 3 * 3600, usegmt=True)
    e = translate_error("head_bucket", "b", client_error("403", 403, {"Date": far}))
    assert clock_skewed(e) and e.skew == pytest.approx(-3 * 3600, abs=5)
    assert "3.0 h behind" in skew_message(e)
    near = email.utils.formatdate(email.utils.time.time() - 120, usegmt=True)
    e = translate_error("head_bucket", "b", client_error("403", 403, {"Date": near}))
    assert not clock_skewed(e) and e.skew == pytest.approx(120, abs=5)
    assert not clock_skewed(translate_error("head_bucket", "b", client_error("AccessDenied", 403)))
    assert clock_skewed(translate_error("x", "k", client_error("RequestExpired", 400)))
    e = translate_error("x", "k", client_error("InvalidSignatureException", 400))
    assert not clock_skewed(e)


class HeadClient:
    """HeadBucket refused (a bare 403: HEAD has no body), ListObjectsV2 as given."""

    def __init__(self, head: Exception, listing):
        self.head, self.listing, self.calls = head, listing, []

    async def head_bucket(self, **kwargs):
        self.calls.append("head_bucket")
        raise self.head

    async def list_objects_v2(self, **kwargs):
        self.calls.append("list_objects_v2")
        if isinstance(self.listing, Exception):
            raise self.listing
        return self.listing


@pytest.mark.parametrize("listing, code", [
    (client_error("RequestTimeTooSkewed", 403), "RequestTimeTooSkewed"),
    (client_error("SignatureDoesNotMatch", 403), "SignatureDoesNotMatch"),
    ({"Contents": []}, "403"),  # listing allowed: the HeadBucket refusal stands
])
def test_a_bare_403_of_head_bucket_asks_again_for_the_code(listing, code):
    client = HeadClient(client_error("403", 403), listing)
    store = S3Store(client, "b")
    with pytest.raises(StoreError) as e:
        trio.run(store.check_bucket)
    assert e.value.code == code and client.calls == ["head_bucket", "list_objects_v2"]


def test_a_404_of_head_bucket_is_final():
    client = HeadClient(client_error("404", 404), {"Contents": []})
    with pytest.raises(StoreError) as e:
        trio.run(S3Store(client, "b").check_bucket)
    assert e.value.code == "404" and client.calls == ["head_bucket"]


def test_skew_is_logged_once_a_minute_not_per_request(caplog):
    client = HeadClient(client_error("RequestTimeTooSkewed", 403, RequestTime="20260101T100000Z",
                                     ServerTime="2026-01-01T10:20:00Z"), {})
    store = S3Store(client, "b")

    async def main():
        for _ in range(5):
            with pytest.raises(StoreError):
                await store.check_bucket()
    with caplog.at_level("ERROR", logger=s3mod.__name__):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    lines = [r.getMessage() for r in caplog.records if "clock of this node" in r.getMessage()]
    assert lines == ["the clock of this node is 20 min behind the S3 server's (RequestTimeTooSkewed): "
                     "S3 refuses requests signed with it; sync it (timedatectl set-ntp true, chrony)"]
