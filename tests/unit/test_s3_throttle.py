"""A provider's own throttling answers (throttle_codes, e.g. R2's 403) are retried by
the S3 adapter with backoff; anything else fails at once. The client is a stand-in
that answers like botocore (the HTTP side is tested against real servers)."""

from __future__ import annotations

import botocore.exceptions
import pytest
import trio
import trio.testing

from s3pvefs.errors import StoreError
from s3pvefs.store.s3 import S3Store


class Client:
    def __init__(self, failures: int, code: str = "AccessDenied", status: int = 403):
        self.failures, self.code, self.status, self.calls, self.bodies = failures, code, status, 0, []

    async def put_object(self, **kwargs):
        self.calls += 1
        self.bodies.append(kwargs["Body"].read())
        if self.calls <= self.failures:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": self.code, "Message": "slow down"},
                 "ResponseMetadata": {"HTTPStatusCode": self.status}}, "PutObject")
        return {"ETag": '"abc"'}


def run(store: S3Store):
    async def main():
        t0 = trio.current_time()
        await store.put("k", b"data", {})
        return trio.current_time() - t0
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_throttle_codes_are_retried_with_backoff_and_the_body_resent():
    client = Client(failures=2)
    store = S3Store(client, "b", throttle_codes=frozenset({"AccessDenied", "403"}))
    store._rand = lambda: 1.0  # the top of the jitter range (tests/unit/test_backoff.py: the range)
    waited = run(store)
    assert client.calls == 3 and client.bodies == [b"data"] * 3
    assert waited == pytest.approx(0.5 + 1.0)
    assert store.retries["put_object"] == 2 and not store.errors


def test_other_codes_and_exhausted_attempts_fail():
    client = Client(failures=1)
    store = S3Store(client, "b")  # no throttle codes: a 403 is a 403
    with pytest.raises(StoreError) as e:
        run(store)
    assert e.value.code == "AccessDenied" and client.calls == 1 and store.errors["AccessDenied"] == 1
    client = Client(failures=10)
    store = S3Store(client, "b", throttle_codes=frozenset({"AccessDenied"}), max_attempts=3)
    with pytest.raises(StoreError):
        run(store)
    assert client.calls == 3
