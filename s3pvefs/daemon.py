"""The mounted process: one trio loop running pyfuse3 and the S3 client.

Order of life: open the S3 client, check the bucket (so a mistake is reported
before anything is mounted), mount, report READY, serve until unmounted or
signalled, then commit what is still pending and exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ctypes
from functools import partial
import errno
import logging
import os
import signal
import stat
from typing import Callable

import botocore.exceptions
import pyfuse3
import trio

from s3pvefs import status
from s3pvefs.bucketaccess import EXIT_MOUNTPOINT, EXIT_NO_FUSE, EXIT_OTHER, check_bucket, client_error
from s3pvefs.config import Config, ReadConfig
from s3pvefs.errors import ConfigError, MountError
from s3pvefs.fs.filesystem import Filesystem
from s3pvefs.fuse.bdi import keep_read_ahead
from s3pvefs.fuse.operations import Operations
from s3pvefs.notify import notify
from s3pvefs.store.s3 import S3Store
from s3pvefs.write.orphans import abort_stale_uploads

log = logging.getLogger(__name__)

def check_fuse_device(path: str = "/dev/fuse") -> None:
    """/dev/fuse must be a character device this process can open: missing (no fuse
    module, a container without the device), something else in its place, or a
    device the process may not open (a container's device policy, a nodev mount)
    is one line and EXIT_NO_FUSE, before anything touches S3."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISCHR(st.st_mode):
        raise MountError(f"{path} is missing: load the fuse module (modprobe fuse) or give the container "
                         f"the device", EXIT_NO_FUSE)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        hint = "load the fuse module (modprobe fuse)" if e.errno in (errno.ENODEV, errno.ENXIO) else \
            "a container needs the device allowed (Proxmox: pct set ID --features fuse=1), on a mount without nodev"
        raise MountError(f"cannot open {path}: {e.strerror}: {hint}", EXIT_NO_FUSE) from None


def check_mountpoint(mountpoint: str) -> None:
    check_fuse_device()
    if not os.path.isdir(mountpoint):
        raise MountError(f"mountpoint {mountpoint} does not exist or is not a directory", EXIT_MOUNTPOINT)
    if os.path.ismount(mountpoint):
        raise MountError(f"mountpoint {mountpoint} is busy: something is already mounted there",
                         EXIT_MOUNTPOINT)


def prepare_cache_dir(config: Config) -> str:
    """cache_dir/staging holds file data not yet committed: it is made 0700 (tightened
    if looser) and must be a directory of this user, not a symlink. A cache_dir that
    does not exist yet is created 0700 too; an existing one (a path the admin chose)
    is left as it is."""
    cache = config.resolved_cache_dir()
    staging = os.path.join(cache, "staging")
    try:
        if not os.path.isdir(cache):
            os.makedirs(cache, mode=0o700)
        with contextlib.suppress(FileExistsError):
            os.mkdir(staging, 0o700)
        st = os.lstat(staging)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise ConfigError(f"cache_dir {cache}: {staging} is not a directory owned by uid {os.geteuid()}: "
                              f"remove it, or choose another cache_dir")
        if st.st_mode & 0o077:
            os.chmod(staging, 0o700)
    except OSError as e:
        raise ConfigError(f"cache_dir {cache}: cannot prepare {staging}: {e.strerror}") from None
    return staging


def fuse_options(config: Config) -> set[str]:
    s = config.store
    name = f"{s.bucket}/{s.prefix}" if s.prefix else s.bucket
    options = set(pyfuse3.default_options) | {f"fsname=s3pvefs:{name}", "subtype=s3pvefs"}
    # The kernel checks modes, always, with allow_other too; and no object in the bucket
    # (anyone with keys can write one) can be a setuid program or a device node here.
    options |= {"default_permissions", "nosuid", "nodev"}
    if config.mount.allow_other:
        options.add("allow_other")
    if config.mount.read_only:
        options.add("ro")
    return options


HEAP_TRIM_INTERVAL = 5.0  # seconds


async def give_freed_memory_back(budget) -> None:
    """Parts are freed as soon as S3 has them; glibc keeps the holes in its heap for
    reuse, but a larger part size (16 MiB after 1,000 parts) does not fit the holes of
    the smaller: peak RSS went from 250 to 410 MiB over a 10 GiB write. malloc_trim
    every few seconds hands whole free pages back (a few pages re-faulted per second
    at full speed; mapping every part instead cost 3 CPU-s per GiB in page faults).
    Only while streamed writes hold memory: readers' chunk buffers are reused as they
    are, and trimming them cost page faults on every chunk."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    writing = False
    while True:
        await trio.sleep(HEAP_TRIM_INTERVAL)
        if writing or budget.used:  # also once after the writes ended
            trim(0)
        writing = budget.used > 0


# Ranged GETs through the CRT only for a near server: on this project's benchmark host the
# CRT's GETs read 540-620 MiB/s on loopback at 1.2-1.4 CPU-s per GiB, aiobotocore's 440 at
# 2.1; 30 ms away the first read of a fresh mount through the CRT got 117-153 MiB/s,
# aiobotocore's 320-352: the CRT reads sockets 16 KiB at a time, and the kernel then
# grows a new connection's receive buffer only after seconds (docs/PERFORMANCE.md).
NEAR_SERVER = 0.015  # seconds for a HeadBucket on an open connection


async def round_trip(store, first: float, samples: int = 2) -> float:
    """Seconds for one request to the server: the fastest of the mount's first HeadBucket
    and `samples` more. The first alone is no measure: it also pays the connection and
    aiobotocore's set-up, 24-31 ms against Ceph on loopback, which once took a near
    server for a far one (its reads then went through aiobotocore at half the CRT's speed)."""
    best = first
    for _ in range(samples):
        t0 = trio.current_time()
        try:
            await store.check_bucket()
        except Exception:  # noqa: BLE001 - a measure only: the mount's own HeadBucket passed
            break
        best = min(best, trio.current_time() - t0)
    return best


def choose_read_plane(store, config: Config, head_bucket_seconds: float) -> None:
    if config.store.data_plane != "auto" or not hasattr(store, "reads_through_plane"):
        return
    near = head_bucket_seconds < NEAR_SERVER
    store.reads_through_plane(near)
    log.info("a HeadBucket takes %.0f ms: ranged GETs through %s", head_bucket_seconds * 1000,
             "the AWS CRT (near server)" if near and store.read_plane == "crt" else "aiobotocore")


# Far from the server each ranged GET waits a round trip before its bytes come: bigger
# chunks pay it less often. 30 ms away (bench/run --rtt 30ms, aiobotocore's GETs) 16 MiB
# chunks read 317 MiB/s where 8 MiB ones read 238; near, 8 MiB read as fast (378 vs
# 358) with 100 MiB less peak RSS. Eager read-ahead then keeps the window in flight:
# 1 GiB 30 ms away 300-338 -> 359-380 MiB/s; near it read 5% slower (docs/PERFORMANCE.md).
FAR_CHUNK_SIZE = 16 << 20


def with_reads_for_distance(config: Config, head_bucket_seconds: float) -> Config:
    """config, with the read chunk (when chunk_size is left at its default) and eager
    read-ahead (when left at auto) for a near or far server."""
    read = config.read
    far = head_bucket_seconds >= NEAR_SERVER
    if read.eager_readahead == "auto":
        read = dataclasses.replace(read, eager_readahead="yes" if far else "no")
    if far:
        if read.chunk_size == ReadConfig().chunk_size:
            read = dataclasses.replace(read, chunk_size=FAR_CHUNK_SIZE)
        log.info("the server is %.0f ms away: ranged GETs of %g MiB, eager read-ahead %s",
                 head_bucket_seconds * 1000, read.chunk_size / (1 << 20), read.eager_readahead)
    return dataclasses.replace(config, read=read)


async def check_object_lock(store, config: Config) -> None:
    """Whether the bucket has Object Lock (store/objectlock.py); a retention asked for on
    a bucket without it is a mistake the mount refuses, in one line."""
    if not hasattr(store, "detect_object_lock"):
        return
    enabled = await store.detect_object_lock()
    if enabled:
        log.info("bucket %s has Object Lock: .protected is a legal hold, locked names are not deleted%s",
                 config.store.bucket, f"; archives retained {config.store.object_lock_days} days "
                 f"({config.store.object_lock_mode})" if config.store.object_lock_days else "")
    elif enabled is False and config.store.object_lock_days:
        raise MountError(f"object_lock_days: bucket {config.store.bucket!r} has no Object Lock (it can only "
                         "be turned on when the bucket is created, or by the provider's support); "
                         "remove object_lock_mode/object_lock_days or use a bucket created with it", EXIT_OTHER)


async def run(config: Config, mountpoint: str, ready: Callable[[], None], status_socket: str | None = None) -> None:
    check_mountpoint(mountpoint)
    prepare_cache_dir(config)
    async with contextlib.AsyncExitStack() as stack:
        try:  # aiobotocore creates the client, and looks for credentials, only here
            store = await stack.enter_async_context(S3Store.open(config.store))
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            raise client_error(e, config) from None
        t0 = trio.current_time()
        await check_bucket(store, config)
        head_bucket_seconds = await round_trip(store, trio.current_time() - t0)
        choose_read_plane(store, config, head_bucket_seconds)
        config = with_reads_for_distance(config, head_bucket_seconds)
        await check_object_lock(store, config)
        async with trio.open_nursery() as nursery:
            fs = Filesystem(store, config, nursery)
            notify("STATUS=committing data a stopped daemon left in the cache")
            recovered = await fs.recover()
            if recovered:
                log.warning("cache leftovers: %s", ", ".join(f"{r.path} {r.outcome}" for r in recovered))
            pyfuse3.init(Operations(fs, config), mountpoint, fuse_options(config))
            mounted = True
            if config.read.kernel_readahead:
                nursery.start_soon(keep_read_ahead, mountpoint, config.read.kernel_readahead)
            try:
                log.info("mounted %s on %s", config.store.bucket, mountpoint)
                ready()
                notify("READY=1", f"STATUS=mounted {config.store.bucket} on {mountpoint}")
                nursery.start_soon(_watch_signals, fs)
                nursery.start_soon(give_freed_memory_back, fs.budget)
                def snapshot() -> dict:
                    return status.snapshot(fs, store)
                if status_socket:
                    nursery.start_soon(status.serve, status_socket, snapshot)
                if config.mount.metrics_port:
                    from s3pvefs import metrics  # prometheus-client only when asked for
                    nursery.start_soon(metrics.serve, config.mount.metrics_port, snapshot)
                if config.mount.stale_upload_idle:
                    own = frozenset(r["upload_id"] for r in fs.uploads.entries() if r["upload_id"])
                    nursery.start_soon(partial(abort_stale_uploads, store, fs.keys.dir_prefix(""),
                                               config.mount.stale_upload_idle, keep=own))
                if config.mount.usage_interval:
                    nursery.start_soon(fs.usage.run)
                nursery.start_soon(fs.dir_times.run)
                await pyfuse3.main(min_tasks=4, max_tasks=64)
                log.info("unmounted %s", mountpoint)
            finally:
                with trio.CancelScope(shield=True):
                    await fs.commit_all()
                pyfuse3.close(unmount=mounted)
            nursery.cancel_scope.cancel()


async def _watch_signals(fs: Filesystem) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:  # logrotate moved the log file: write to a new one
                for handler in logging.getLogger().handlers:
                    if isinstance(handler, logging.FileHandler):
                        handler.close()  # reopened at the next message
                log.info("SIGHUP: log file reopened")
                continue
            pending = len(fs.pending_files())
            log.info("signal %d: unmounting, %d files still to commit", signum, pending)
            # systemd waits (TimeoutStopSec) while the uploads drain.
            notify("STOPPING=1", f"STATUS=unmounting: committing {pending} files still open")
            pyfuse3.terminate()
            return
