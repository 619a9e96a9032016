"""Bandwidth limits for the whole mount: upload and download bytes per second, one
rate or a timetable by time of day (upload_limit, download_limit).

A request waits for its turn before it is sent, then goes at the link's speed: the
limiter keeps the time at which the bytes already granted would have drained at the
rate, and a request of n bytes starts then (and moves that time n / rate on). So over
any stretch longer than one request the mount moves at most the rate; the wait is
outside the request's deadline (store/s3.py bounds only the request itself), and is
never longer than the bytes ahead of it take at the rate: no hang without a bound.
Server-side copies (renames, unchanged windows of a commit) cross no link and are not
counted.

A timetable is "HH:MM=RATE" entries separated by spaces or ';' (no commas: -o options
are comma-separated), e.g. "08:00=2M 18:00=off": 2 MiB/s from 8:00, unlimited from
18:00 to 8:00 the next day (local time). A single RATE holds all day; "", "off" and 0
mean unlimited. RATE is a size per second (512K, 10M, 1G).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

import trio

from s3pvefs.errors import ConfigError

_ENTRY = re.compile(r"(\d{1,2}):(\d{2})=(\S+)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)(?:i?B)?(?:/s)?", re.IGNORECASE)
_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _rate(text: str, setting: str) -> int | None:
    """Bytes per second; None: unlimited."""
    if text.lower() in ("off", "0", ""):
        return None
    m = _SIZE.fullmatch(text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{setting}: {text!r} is not a rate (use e.g. 512K, 10M, off)")
    rate = int(float(m.group(1)) * _UNIT[m.group(2).upper()])
    if rate < 1024:
        raise ConfigError(f"{setting}: {text!r} is below 1K per second")
    return rate


@dataclass(frozen=True)
class Schedule:
    """Rates by minute of the day: (minute, bytes per second or None), sorted."""
    entries: tuple[tuple[int, int | None], ...]
    text: str

    @classmethod
    def parse(cls, text: str, setting: str) -> Schedule:
        text = text.strip()
        words = [w for w in re.split(r"[\s;]+", text) if w]
        if len(words) <= 1 and (not words or "=" not in words[0]):
            return cls(((0, _rate(words[0] if words else "", setting)),), text)
        entries = {}
        for word in words:
            m = _ENTRY.fullmatch(word)
            if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
                raise ConfigError(f"{setting}: {word!r} is not HH:MM=RATE (e.g. 08:00=2M 18:00=off)")
            minute = int(m.group(1)) * 60 + int(m.group(2))
            if minute in entries:
                raise ConfigError(f"{setting}: {m.group(1)}:{m.group(2)} is given twice")
            entries[minute] = _rate(m.group(3), setting)
        return cls(tuple(sorted(entries.items())), text)

    def rate_at(self, minute_of_day: int) -> int | None:
        """The rate in force: the last entry at or before the minute, else (before the
        first entry of the day) the day's last entry, from the evening before."""
        current = self.entries[-1][1]
        for minute, rate in self.entries:
            if minute > minute_of_day:
                break
            current = rate
        return current

    @property
    def unlimited(self) -> bool:
        return all(rate is None for _, rate in self.entries)


def _local_minute() -> int:
    t = time.localtime()
    return t.tm_hour * 60 + t.tm_min


class Limiter:
    """One direction's limit for the mount (see the module's docstring)."""

    def __init__(self, schedule: Schedule, minute_of_day: Callable[[], int] = _local_minute):
        self.schedule = schedule
        self._minute = minute_of_day
        self._drained_at = 0.0  # trio time at which the bytes granted so far have drained
        self._off = schedule.unlimited  # no clock to read for each request
        self.waited = 0.0  # seconds requests spent waiting for their turn (status)

    def rate(self) -> int | None:
        return self.schedule.rate_at(self._minute())

    async def take(self, nbytes: int) -> None:
        """Wait until nbytes may be sent (or received) within the rate in force now."""
        if self._off:
            return
        rate = self.rate()
        now = trio.current_time()
        if rate is None or nbytes <= 0:
            self._drained_at = now
            return
        start = max(now, self._drained_at)
        self._drained_at = start + nbytes / rate
        if start > now:
            self.waited += start - now
            await trio.sleep_until(start)

    def snapshot(self) -> dict:
        return {"limit": self.schedule.text or "off", "rate_now": self.rate(), "waited_seconds": self.waited}


class Bandwidth:
    """The mount's two limiters."""

    def __init__(self, upload: str = "", download: str = "",
                 minute_of_day: Callable[[], int] = _local_minute):
        self.upload = Limiter(Schedule.parse(upload, "upload_limit"), minute_of_day)
        self.download = Limiter(Schedule.parse(download, "download_limit"), minute_of_day)

    def snapshot(self) -> dict:
        return {"upload": self.upload.snapshot(), "download": self.download.snapshot()}
