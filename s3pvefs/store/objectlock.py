"""S3 Object Lock for Proxmox backups (object_lock_mode, object_lock_days).

On a bucket with Object Lock enabled:
- a backup archive committed under its final name in dump/ (a PUT, a multipart upload,
  or vzdump's rename of the .dat: a copy) gets a retention of object_lock_days in
  object_lock_mode (GOVERNANCE or COMPLIANCE) right after the commit, by
  PutObjectRetention: a .dat, logs and notes never do;
- Proxmox's protection flag is a legal hold: creating ``<archive>.protected`` puts one
  on the archive, removing it lifts it;
- a DELETE of a name whose current version is retained or held is refused here
  (EACCES, the lock named in the log) rather than sent: on a locked (hence versioned)
  bucket S3 would answer a plain DELETE by hiding the object behind a delete marker,
  and the name would look gone while its bytes stay. A rename checks the same before
  copying, so a locked file is never left at both names.

The rules of which names are archives are Proxmox's (proxmox/names.py).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from s3pvefs.errors import ConfigError
from s3pvefs.proxmox.names import Backup, SideFile, classify

MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_DAYS = 36500


@dataclass(frozen=True)
class Retention:
    mode: str = ""  # "" = none set here (a bucket's default retention still applies)
    days: int = 0

    @classmethod
    def parse(cls, mode: str, days: int) -> Retention:
        mode = mode.upper()
        if mode and mode not in MODES:
            raise ConfigError(f"object_lock_mode: expected GOVERNANCE or COMPLIANCE, got {mode!r}")
        if bool(mode) != bool(days):
            raise ConfigError("object_lock_mode, object_lock_days: give both (a mode and a number of days) or neither")
        if days > MAX_DAYS:
            raise ConfigError(f"object_lock_days: at most {MAX_DAYS}, got {days}")
        return cls(mode, days)

    def until(self, now: datetime.datetime | None = None) -> datetime.datetime:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return now + datetime.timedelta(days=self.days)


class Placement:
    """Which keys are backup archives and protection flags, below the mount's prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix.strip("/")

    def _rel(self, key: str) -> str | None:
        if not self.prefix:
            return key
        return key[len(self.prefix) + 1:] if key.startswith(self.prefix + "/") else None

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def is_archive(self, key: str) -> bool:
        rel = self._rel(key)
        return rel is not None and isinstance(classify(rel), Backup)

    def archive_of_flag(self, key: str) -> str | None:
        """The archive's key for ``dump/<archive>.protected``; None for other keys."""
        rel = self._rel(key)
        kind = classify(rel) if rel is not None else None
        if isinstance(kind, SideFile) and kind.kind == "protected":
            return self._key(f"dump/{kind.of}")
        return None


@dataclass(frozen=True)
class LockState:
    """What protects an object's current version now."""
    mode: str | None
    until: float | None  # epoch seconds
    legal_hold: bool

    @classmethod
    def of(cls, info) -> LockState:
        """From a HEAD's ObjectInfo."""
        return cls(info.lock_mode, info.lock_until, info.legal_hold)

    @property
    def locked(self) -> bool:
        now = datetime.datetime.now(datetime.timezone.utc).timestamp()
        return self.legal_hold or (self.until is not None and self.until > now)

    def describe(self) -> str:
        parts = []
        if self.until is not None and self.until > datetime.datetime.now(datetime.timezone.utc).timestamp():
            end = datetime.datetime.fromtimestamp(self.until, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            parts.append(f"retention {self.mode or '?'} until {end}")
        if self.legal_hold:
            parts.append("a legal hold (remove the backup's protection first)")
        return " and ".join(parts)
