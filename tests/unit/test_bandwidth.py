"""Bandwidth limits: the timetable's syntax and the limiter's pacing (trio's MockClock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from s3pvefs.config import Config, StoreConfig, apply_options, validate
from s3pvefs.errors import ConfigError
from s3pvefs.store.bandwidth import Bandwidth, Limiter, Schedule

MiB = 1 << 20


def test_one_rate_holds_all_day():
    s = Schedule.parse("10M", "upload_limit")
    assert s.rate_at(0) == s.rate_at(23 * 60 + 59) == 10 * MiB
    assert Schedule.parse("512K", "upload_limit").rate_at(600) == 512 << 10
    assert Schedule.parse("1.5M/s", "upload_limit").rate_at(0) == int(1.5 * MiB)


@pytest.mark.parametrize("text", ["", "off", "OFF", "0"])
def test_unlimited(text):
    s = Schedule.parse(text, "download_limit")
    assert s.unlimited and s.rate_at(720) is None


def test_timetable_by_local_time_wraps_over_midnight():
    s = Schedule.parse("08:00=2M 18:00=off;22:30=512K", "upload_limit")
    assert s.rate_at(7 * 60 + 59) == 512 << 10  # before the first entry: last night's
    assert s.rate_at(8 * 60) == 2 * MiB
    assert s.rate_at(17 * 60 + 59) == 2 * MiB
    assert s.rate_at(18 * 60) is None
    assert s.rate_at(22 * 60 + 30) == 512 << 10


@pytest.mark.parametrize("text, says", [
    ("fast", "'fast' is not a rate"),
    ("-1M", "not a rate"),
    ("100", "below 1K per second"),
    ("25:00=1M", "'25:00=1M' is not HH:MM=RATE"),
    ("08:00=1M,18:00=off", "not a rate"),
    ("08:00=1M 08:00=2M", "08:00 is given twice"),
    ("08:00=lots", "'lots' is not a rate"),
])
def test_bad_limits_are_one_line_naming_the_setting(text, says):
    with pytest.raises(ConfigError) as e:
        validate(Config(store=StoreConfig(bucket="b", upload_limit=text)))
    assert str(e.value).startswith("upload_limit: ") and says in str(e.value)
    assert "\n" not in str(e.value)


def test_limits_are_mount_options():
    config = apply_options(Config(store=StoreConfig(bucket="b")),
                           ["upload_limit=08:00=2M;18:00=off", "download_limit=50M"])
    validate(config)
    assert config.store.upload_limit == "08:00=2M;18:00=off"
    assert Bandwidth(config.store.upload_limit, config.store.download_limit,
                     lambda: 9 * 60).snapshot()["upload"]["rate_now"] == 2 * MiB


def test_limiter_paces_requests_at_the_rate():
    starts = []

    async def main():
        limiter = Limiter(Schedule.parse("4M", "upload_limit"))
        t0 = trio.current_time()

        async def request():
            await limiter.take(8 * MiB)
            starts.append(trio.current_time() - t0)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(request)
        # 32 MiB at 4 MiB/s: the fourth request starts once three have drained (6 s)
        assert sorted(starts) == pytest.approx([0, 2, 4, 6])
        assert limiter.waited == pytest.approx(12)
        await trio.sleep(100)  # idle time is not saved up for a burst later
        t1 = trio.current_time()
        await limiter.take(8 * MiB)
        await limiter.take(8 * MiB)
        assert trio.current_time() - t1 == pytest.approx(2)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_limiter_follows_the_timetable():
    minute = [8 * 60]

    async def main():
        limiter = Limiter(Schedule.parse("08:00=1M 18:00=off", "upload_limit"), lambda: minute[0])
        t0 = trio.current_time()
        await limiter.take(MiB)
        await limiter.take(MiB)
        assert trio.current_time() - t0 == pytest.approx(1)
        minute[0] = 18 * 60
        t1 = trio.current_time()
        for _ in range(10):
            await limiter.take(64 * MiB)
        assert trio.current_time() == t1  # unlimited: no waits

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
