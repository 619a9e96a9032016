"""All settings in one frozen object, with documented defaults.

Loaded from an optional TOML file (sections [store], [cache], [write], [read],
[mount]) and then overridden by command-line arguments and ``-o`` options.
Unknown keys and wrong types are ConfigError naming the file, key and expected type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from s3pvefs.errors import ConfigError
from s3pvefs.store.bandwidth import Schedule
from s3pvefs.store.classes import StorageClasses
from s3pvefs.store.encryption import Encryption
from s3pvefs.store.objectlock import Retention

KiB, MiB, GiB, TiB, PiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40, 1 << 50

_SIZE = {"size": True}
_MODE = {"mode": True}


@dataclass(frozen=True)
class StoreConfig:
    bucket: str = ""
    prefix: str = ""  # key prefix without leading/trailing '/'; "" = whole bucket
    endpoint_url: str | None = None
    region: str = "us-east-1"
    profile: str | None = None
    addressing_style: str = "path"  # path | virtual | auto; self-hosted servers need path
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # a connection silent this long is dropped (and retried)
    max_attempts: int = 5  # botocore "standard" retry mode, exponential backoff with jitter
    # Every request, retries included, ends within request_deadline plus the time to
    # move its bytes at min_transfer_rate (an 8 MiB part: 28 s); then EIO, never a hang.
    request_deadline: float = 20.0
    min_transfer_rate: int = field(default=1 * MiB, metadata=_SIZE)
    # botocore >= 1.36 sends CRC32 headers by default; many S3 compatibles reject them.
    checksums: str = "when_required"  # when_required | when_supported
    # Content-MD5 on every PUT and part, hashed in a worker thread; the header is signed,
    # so SigV4 need not hash the body too (on the event loop: a quarter of its time).
    # false: no checksum header, SigV4 signs each body's SHA-256 instead.
    content_md5: bool = True
    # The checksum header (with content_md5 on): md5 (Content-MD5, checked by every S3
    # server) or crc32c (x-amz-checksum-crc32c: ~30x less CPU; checked by AWS, MinIO,
    # Cloudflare R2, Ceph >= 19; older servers ignore it, `s3pvefs check` says which).
    checksum_algorithm: str = "md5"
    # What carries the bulk bytes. auto: part uploads through the AWS CRT (awscrt, a
    # third of the CPU); ranged GETs through it too when the server is near (the mount's
    # HeadBucket under 15 ms), else through aiobotocore (30 ms away the CRT's GETs reached
    # 72-92 MiB/s, aiobotocore's 210); crt: both always; python: neither.
    data_plane: str = "auto"
    # Connections to S3, each kind of client. Header reads of listings use up to three
    # quarters of them (namespace/headers.py): 30 ms away, a content view of 500 backups
    # took 2.3 s with 64, 1.9 s with 128.
    max_connections: int = 128
    # aws, ceph, minio, wasabi, b2, r2: sets the provider's known quirks (PRESETS) for
    # every setting left at its default; "" = none.
    provider: str = ""
    # TLS certificates are always verified; this names the CA bundle (PEM) to verify
    # against instead of the system's, e.g. for a self-signed Ceph/MinIO endpoint.
    ca_bundle: str = ""
    # Error codes (or HTTP statuses) a provider answers throttling with beyond the
    # standard ones botocore retries, comma-separated: retried with backoff.
    throttle_codes: str = ""
    # A file holding aws_access_key_id / aws_secret_access_key (the AWS credentials file
    # format), owned by root and not readable by group or others; "" = systemd
    # credentials ($CREDENTIALS_DIRECTORY) or botocore's chain (environment, profile).
    credentials_file: str = ""
    # Bandwidth for the whole mount, bytes per second: one rate ("10M") or a timetable
    # by local time ("08:00=2M 18:00=off"); "" = unlimited. A request waits for its turn,
    # outside its deadline (store/bandwidth.py); server-side copies are not counted.
    upload_limit: str = ""
    download_limit: str = ""
    # The storage class of new objects: storage_classes by directory of the mount
    # ("dump=GLACIER_IR template/iso=STANDARD_IA", the longest place wins), else
    # storage_class ("" = the server's default). Directory markers and dump/'s .log,
    # .notes and .protected stay in the default class (store/classes.py).
    storage_class: str = ""
    storage_classes: str = ""
    # Server-side encryption of new objects: AES256 (SSE-S3) or aws:kms (SSE-KMS, with
    # sse_kms_key_id, "" = the account's default key, and S3 Bucket Keys), sent with every
    # PUT, multipart upload and copy; SSE-C (a customer key, sent with every request that
    # touches an object's bytes); "" = the bucket's default.
    sse: str = ""
    sse_kms_key_id: str = ""
    sse_bucket_key: bool = False
    # sse = "SSE-C": the customer key, by reference only: a root-only file holding 32
    # bytes (raw, base64 or hex), else the systemd credential "sse-customer-key".
    sse_customer_key_file: str = ""
    # S3 Object Lock (a bucket created with it): each backup archive committed under its
    # final name in dump/ is retained this many days in this mode (GOVERNANCE or
    # COMPLIANCE); 0 / "" = none set here. On such a bucket <archive>.protected is a
    # legal hold, and deleting a locked name is refused (EACCES) (store/objectlock.py).
    object_lock_mode: str = ""
    object_lock_days: int = 0


@dataclass(frozen=True)
class CacheConfig:
    stat_ttl: float = 10.0  # cached attributes of a name (HEAD or LIST result)
    negative_ttl: float = 5.0  # "no such name" answers
    listing_ttl: float = 10.0  # a directory's listing, reused by lookups of its names
    stat_max_entries: int = 200_000
    listing_max_entries: int = 2_000
    # A LIST carries no x-amz-meta-* headers, so listed entries show default modes and
    # LastModified as mtime until read by HEAD. True: HEAD each such entry when a
    # directory is opened (one request per entry, 32 in parallel), for tools like
    # `rsync --delete` that compare the mtimes of a whole listing.
    listing_heads: bool = False
    # Directories with at most this many files not yet read by HEAD get them read at
    # opendir anyway (snippets/, template/iso/, images/<vmid>/): a listing then shows
    # real modes, so a hookscript checked with stat right after `ls` is executable.
    listing_heads_below: int = 64
    # A name known before whose attributes expired: how long a lookup/stat waits for S3
    # before answering with the last known attributes (Proxmox gives stat 2 s).
    stale_answer_after: float = 0.5
    kernel_entry_timeout: float = 1.0  # how long the kernel trusts a name / attributes
    kernel_attr_timeout: float = 1.0
    # The write-back cache of files changed in place (random writes, VM disks): only
    # the ranges read or written are kept, in sparse files under cache_dir.
    cache_dir: str = ""  # "" = /var/cache/s3pvefs as root, else ~/.cache/s3pvefs
    # Local disk for that cache, the whole mount: clean data is dropped first, then
    # the file with the most unsent data is committed early; writers wait meanwhile.
    disk_budget: int = field(default=8 * GiB, metadata=_SIZE)
    # A read of a cached file's range not held locally fetches this much around it.
    fill_size: int = field(default=1 * MiB, metadata=_SIZE)
    # An fsync of a cached file makes its data durable on local disk at once (a crash,
    # even a power cut, is recovered at the next mount); S3 gets it at close, or this
    # many seconds after the fsync if the file stays open (a running VM's flushes).
    # Every commit writes a whole new object (unchanged windows copied server-side),
    # so committing at each of a VM's flushes would copy the disk many times a minute.
    # 0: every fsync commits to S3 before returning.
    sync_interval: float = 60.0


@dataclass(frozen=True)
class WriteConfig:
    # Files written sequentially stream to S3 from memory; other files are staged on
    # local disk and sent at close: one PUT up to multipart_threshold, else multipart.
    multipart_threshold: int = field(default=64 * MiB, metadata=_SIZE)
    # Part sizes of streamed files start at min_part_size and double every 1,000
    # parts up to max_part_size (parts.stream_part_size); staged files use one size.
    min_part_size: int = field(default=8 * MiB, metadata=_SIZE)
    max_part_size: int = field(default=64 * MiB, metadata=_SIZE)
    parts_per_step: int = 1000  # streamed parts of one size before the size doubles
    # Every part min_part_size (providers such as Cloudflare R2 require equal parts);
    # a streamed file then ends at 10,000 parts (78 GiB with 8M: raise min_part_size).
    uniform_parts: bool = False
    upload_concurrency: int = 4  # parts (and copy parts) in flight per file, at first
    # A streamed file's window doubles up to this while that raises its throughput
    # (write/window.py): a distant server needs more bytes in flight than a near one.
    max_upload_concurrency: int = 16
    # Streamed bytes kept in memory past a full part, so writes arriving slightly out
    # of order (several writer threads) are still taken; earlier ones go to staging.
    reorder_window: int = field(default=1 * MiB, metadata=_SIZE)
    # Memory for streamed data not yet stored by S3, for the whole mount: writers
    # wait when it is used up.
    memory_budget: int = field(default=160 * MiB, metadata=_SIZE)
    # Seconds a data request (part, PUT, copy, complete) keeps being tried while S3 does
    # not answer or answers 5xx/throttling: writers wait through an outage this long;
    # after it, they get EIO and what was written is kept on local disk for a later try.
    outage_patience: float = 600.0


@dataclass(frozen=True)
class ReadConfig:
    chunk_size: int = field(default=8 * MiB, metadata=_SIZE)  # one ranged GET
    max_readahead_chunks: int = 8  # per handle; bounds read memory to chunk_size * this
    # Read-ahead of all handles together; the chunk a reader waits for is always fetched.
    readahead_budget: int = field(default=256 * MiB, metadata=_SIZE)
    # The kernel's read-ahead for the mount (its bdi's read_ahead_kb): how much a
    # sequential reader asks for per FUSE request; 0 = leave the kernel's 128K.
    kernel_readahead: int = field(default=1 * MiB, metadata=_SIZE)
    # yes: a sequential reader from the start gets the whole window at once, and chunks
    # that arrived ahead of a slow one make room for more GETs (read/prefetcher.py); auto:
    # yes for a far server (a HeadBucket of 15 ms or more), where each GET waits for a
    # connection's window to open; near, the CPU is the limit and it read 5% slower.
    eager_readahead: str = "auto"


@dataclass(frozen=True)
class MountOptions:
    mountpoint: str = ""  # for `s3pvefs mount NAME` (/etc/s3pvefs/NAME.toml)
    allow_other: bool = False
    read_only: bool = False
    uid: int = 0  # owner of objects that carry no x-amz-meta-uid
    gid: int = 0
    file_mode: int = field(default=0o644, metadata=_MODE)  # objects with no x-amz-meta-mode
    dir_mode: int = field(default=0o755, metadata=_MODE)
    capacity: int = field(default=1 * PiB, metadata=_SIZE)  # what statfs reports
    # Seconds between background counts of the bytes under the prefix (a LIST of every
    # object: 1,000 requests per million objects) that statfs then reports as used; this
    # mount's own changes count at once; 0: never count, report nothing used.
    usage_interval: float = 21600.0
    metrics_port: int = 0  # Prometheus metrics on 127.0.0.1:PORT/metrics; 0 = off
    # At mount, abort multipart uploads under the prefix with no part for this long
    # (left by a killed daemon); 0 = never. Idle, so other nodes' uploads are safe.
    stale_upload_idle: float = 3600.0


@dataclass(frozen=True)
class Config:
    store: StoreConfig = field(default_factory=StoreConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    mount: MountOptions = field(default_factory=MountOptions)

    def mount_id(self) -> str:
        """Names this mount's cache files: the bucket, and a hash of where and which prefix,
        so mounts of different buckets never read each other's leftovers."""
        s = self.store
        digest = hashlib.sha256(f"{s.endpoint_url}\0{s.bucket}\0{s.prefix}".encode()).hexdigest()[:12]
        return f"{s.bucket}-{digest}"

    def resolved_cache_dir(self) -> str:
        if self.cache.cache_dir:
            return self.cache.cache_dir
        if os.geteuid() == 0:
            return "/var/cache/s3pvefs"
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        return os.path.join(base, "s3pvefs")


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'64M', '1.5G', '4096', '1TiB' -> bytes (binary multiples)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 64M, 1T)")
    unit = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB, "P": PiB}[m.group(2).upper()]
    return int(float(m.group(1)) * unit)


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    """Check/convert one TOML or -o value to the field's type."""
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if f.metadata.get("size"):
            if isinstance(value, bool):
                raise ValueError
            return value if isinstance(value, int) else parse_size(value)
        if f.metadata.get("mode"):  # "0644" or TOML's 0o644
            mode = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value), 8)
            if not 0 <= mode <= 0o7777:
                raise ValueError
            return mode
        if typ == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if typ == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ in ("str", "str | None"):
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    expected = "size (e.g. 64M)" if f.metadata.get("size") else (
        "octal mode (e.g. 0644)" if f.metadata.get("mode") else typ.replace(" | None", ""))
    raise ConfigError(f"{where}: expected {expected}, got {value!r}")


def _build_section(base, table: dict, where: str):
    """base (a section's dataclass instance) with the file's values for it."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {f.name: f for f in fields(base)}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown setting (known: {', '.join(known)})")
        values[key] = _coerce(known[key], value, f"{where}.{key}")
    return replace(base, **values)


# What each provider needs beyond the defaults (path-style addressing and no CRC32
# headers are already the defaults, as most S3 compatibles need them).
PRESETS: dict[str, dict[str, dict[str, object]]] = {
    # AWS checks x-amz-checksum-crc32c: the same protection as Content-MD5 at 1/30 of the CPU
    "aws": {"store": {"addressing_style": "virtual", "checksums": "when_supported", "checksum_algorithm": "crc32c"}},
    # Ceph RGW checks the signed x-amz-content-sha256 of each body (16.2 answers a mismatch
    # with XAmzContentSHA256Mismatch) and ignores CRC32C before 19: a SHA-256 (0.6 CPU-s
    # per GiB here) protects as Content-MD5 does (1.4)
    "ceph": {"store": {"content_md5": False}},
    "minio": {},
    "wasabi": {},
    "b2": {"store": {"content_md5": True}},  # B2 wants an MD5 on uploads
    # equal parts only; throttling answered with 403 (so an access denial is retried too)
    "r2": {"store": {"region": "auto", "throttle_codes": "AccessDenied,403"}, "write": {"uniform_parts": True}},
}


def with_preset(config: Config, provider: str, where: str = "provider") -> Config:
    """Apply a provider's quirks to every setting still at its default value."""
    if provider not in PRESETS:
        raise ConfigError(f"{where}: unknown provider {provider!r} (known: {', '.join(PRESETS)})")
    for section_name, values in PRESETS[provider].items():
        section = getattr(config, section_name)
        defaults = type(section)()
        keep = {k: v for k, v in values.items() if getattr(section, k) == getattr(defaults, k)}
        config = replace(config, **{section_name: replace(section, **keep)})
    return replace(config, store=replace(config.store, provider=provider))


CONFIG_DIR = "/etc/s3pvefs"


def config_path(name: str) -> str:
    """/etc/s3pvefs/NAME.toml ($S3PVEFS_CONFIG_DIR moves the directory, for tests)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{name!r}: a config name is letters, digits, '.', '_' and '-'")
    return os.path.join(os.environ.get("S3PVEFS_CONFIG_DIR", CONFIG_DIR), f"{name}.toml")


def load_file(path: str) -> Config:
    """Read a TOML config file; every mistake is a one-line ConfigError."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:  # tomllib decodes the whole file as UTF-8 first
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except OSError as e:  # a directory, an I/O error
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    sections = {f.name for f in fields(Config)}
    config = Config()
    provider = data.get("store", {}).get("provider") if isinstance(data.get("store"), dict) else None
    if provider:  # first, so that whatever the file says wins over the preset
        config = with_preset(config, str(provider), f"{path}: store.provider")
    for name, table in data.items():
        if name not in sections:
            raise ConfigError(f"{path}: unknown section [{name}] (known: {', '.join(sorted(sections))})")
        config = replace(config, **{name: _build_section(getattr(config, name), table, f"{path}: {name}")})
    return config


# -o options: the mount's own, plus fstab words that mean nothing here.
_IGNORED_OPTIONS = {"rw", "defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser",
                    "users", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
                    "default_permissions", "async", "atime", "noatime", "relatime"}
_OPTION_ALIASES = {"ro": ("mount", "read_only", True), "allow_other": ("mount", "allow_other", True)}


def _option_targets() -> dict[str, tuple[str, dataclasses.Field]]:
    targets = {}
    for section in fields(Config):
        for f in fields(section.default_factory):
            # '-o name=value' names a setting without its section: names must be unique.
            assert f.name not in targets, f"setting {f.name} is in two sections"
            targets[f.name] = (section.name, f)
    return targets


def apply_options(config: Config, options: list[str]) -> Config:
    """Apply '-o a,b=c' words. Any setting of any section can be given as name=value."""
    targets = _option_targets()
    for word in options:
        word = word.strip()
        if not word or word in _IGNORED_OPTIONS:
            continue
        if word in _OPTION_ALIASES:
            section, name, value = _OPTION_ALIASES[word]
            config = replace(config, **{section: replace(getattr(config, section), **{name: value})})
            continue
        name, sep, value = word.partition("=")
        if not sep or name not in targets or name in ("bucket", "prefix", "mountpoint"):
            raise ConfigError(f"-o {word}: unknown mount option")
        section, f = targets[name]
        coerced = _coerce(f, value, f"-o {name}")
        config = replace(config, **{section: replace(getattr(config, section), **{name: coerced})})
        if name == "provider" and coerced:
            config = with_preset(config, coerced, f"-o {word}")
    return config


def split_bucket(spec: str) -> tuple[str, str]:
    """'bucket/some/prefix/' -> ('bucket', 'some/prefix')."""
    bucket, _, prefix = spec.strip().partition("/")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", bucket):
        raise ConfigError(f"{spec!r}: not a valid bucket name")
    prefix = "/".join(p for p in prefix.split("/") if p)
    return bucket, prefix


ID_MAX = 0xFFFF_FFFE  # uid_t/gid_t; (uid_t)-1 means "no owner"
PATH_SETTINGS = ("cache_dir", "credentials_file", "ca_bundle", "sse_customer_key_file")


def _validate_ranges(config: Config) -> None:
    """What any setting's type allows but no setting means: NaN and infinite numbers,
    negative counts, sizes and seconds, owners outside uid_t, relative paths (the daemon
    runs from /, so a path relative to where the command was typed would mean another
    place there)."""
    for section in fields(config):
        values = getattr(config, section.name)
        for f in fields(values):
            value = getattr(values, f.name)
            if isinstance(value, bool):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}: must be a finite number, got {value!r}")
            if isinstance(value, (int, float)) and value < 0:
                raise ConfigError(f"{f.name}: must be >= 0, got {value!r}")
            if f.name in PATH_SETTINGS and value and not os.path.isabs(value):
                raise ConfigError(f"{f.name}: {value!r} is a relative path; give an absolute one")
    m = config.mount
    for name in ("uid", "gid"):
        if getattr(m, name) > ID_MAX:
            raise ConfigError(f"{name}: expected a user/group id from 0 to {ID_MAX}, got {getattr(m, name)}")
    if m.metrics_port > 65535:
        raise ConfigError(f"metrics_port: expected a TCP port (1-65535, 0 = off), got {m.metrics_port}")


def validate(config: Config) -> Config:
    s, c, w, r = config.store, config.cache, config.write, config.read
    if not s.bucket:
        raise ConfigError("no bucket given")
    _validate_ranges(config)
    if s.connect_timeout <= 0 or s.read_timeout <= 0:
        raise ConfigError("connect_timeout, read_timeout: seconds > 0")
    if s.max_attempts < 1 or s.max_connections < 1:
        raise ConfigError("max_attempts, max_connections: must be >= 1")
    if c.stat_max_entries < 1 or c.listing_max_entries < 1:
        raise ConfigError("stat_max_entries, listing_max_entries: must be >= 1")
    if c.disk_budget < 1 * MiB or c.fill_size < 4 * KiB:
        raise ConfigError("disk_budget: at least 1M; fill_size: at least 4K")
    if w.multipart_threshold > 5 * GiB:
        raise ConfigError("multipart_threshold: S3 takes at most 5G in one PUT")
    if s.addressing_style not in ("path", "virtual", "auto"):
        raise ConfigError("addressing_style: expected path, virtual or auto")
    if s.checksum_algorithm not in ("md5", "crc32c"):
        raise ConfigError("checksum_algorithm: expected md5 or crc32c")
    if s.data_plane not in ("auto", "crt", "python"):
        raise ConfigError("data_plane: expected auto, crt or python")
    if s.checksums not in ("when_required", "when_supported"):
        raise ConfigError("checksums: expected when_required or when_supported")
    Schedule.parse(s.upload_limit, "upload_limit")  # ConfigError naming the setting
    Schedule.parse(s.download_limit, "download_limit")
    StorageClasses.parse(s.prefix, s.storage_class, s.storage_classes)
    Encryption.parse(s.sse, s.sse_kms_key_id, s.sse_bucket_key)
    if s.sse_customer_key_file and s.sse != "SSE-C":
        raise ConfigError("sse_customer_key_file: only with sse = \"SSE-C\"")
    Retention.parse(s.object_lock_mode, s.object_lock_days)
    if s.request_deadline <= 0 or s.min_transfer_rate <= 0:
        raise ConfigError("request_deadline, min_transfer_rate: must be > 0")
    for name in ("stat_ttl", "negative_ttl", "listing_ttl", "stale_answer_after", "kernel_entry_timeout",
                 "kernel_attr_timeout"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{name}: must be > 0 (zero makes the kernel re-ask for every entry)")
    if w.min_part_size < 5 * MiB:
        raise ConfigError("min_part_size: S3 requires parts of at least 5M")
    if w.min_part_size > 5 * GiB or w.max_part_size > 5 * GiB:
        raise ConfigError("min_part_size, max_part_size: S3 allows parts of at most 5G")
    if w.parts_per_step < 1:
        raise ConfigError("parts_per_step: must be >= 1")
    if w.max_part_size < w.min_part_size:
        raise ConfigError("max_part_size: must be at least min_part_size")
    biggest = w.min_part_size if w.uniform_parts else w.max_part_size
    if w.memory_budget < biggest + 2 * MiB:
        raise ConfigError(f"memory_budget: must hold at least one part of {biggest} bytes plus 2M")
    if w.max_upload_concurrency < w.upload_concurrency:
        raise ConfigError("max_upload_concurrency: must be at least upload_concurrency")
    if r.eager_readahead not in ("auto", "yes", "no"):
        raise ConfigError("eager_readahead: expected auto, yes or no")
    if w.upload_concurrency < 1 or r.max_readahead_chunks < 1 or r.chunk_size < 64 * KiB:
        raise ConfigError("upload_concurrency and max_readahead_chunks must be >= 1, chunk_size >= 64K")
    if config.mount.capacity < 4096:
        raise ConfigError("capacity: must be at least 4K")
    if c.sync_interval < 0:
        raise ConfigError("sync_interval: seconds >= 0 (0: every fsync commits to S3)")
    if config.mount.stale_upload_idle < 0:
        raise ConfigError("stale_upload_idle: seconds >= 0 (0: never abort unfinished uploads)")
    if config.mount.usage_interval < 0 or 0 < config.mount.usage_interval < 60:
        raise ConfigError("usage_interval: 0 (off) or at least 60 seconds (each count lists every object)")
    return config
