"""bench/run: s3pvefs against the raw S3 ceiling and against s3fs-fuse and rclone mount,
on one endpoint, in one run. See docs/PERFORMANCE.md for what each row means."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import random
import resource
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench import report
from bench.crt import Crt
from bench.mounts import REPO, SYSTEMS, Mount, force_unmount, is_mounted
from bench.raw import MAX_SINGLE_COPY, S3, BenchError, Endpoint, GiB, MiB
from bench.rgwlog import RgwLog, ensure_logging, find_rgw

DEFAULT_ENDPOINT = "http://127.0.0.1:7480"
PHASES = ("write", "read", "rename", "ls", "cpr")
PEERS = ("s3fs", "rclone")
MOUNT_ROOT = "/mnt/s3pvefs-bench"
LS_PREFIX = "bench-ls"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 512M)")
    return int(float(m.group(1)) * (1 << (10 * " kmgt".index(m.group(2) or " "))))


def human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def parse_rtt(text: str) -> float:
    from bench.latency import _parse_rtt
    return _parse_rtt(text)


def csv(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)} (choose from {', '.join(choices)})")
        return items
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--endpoint", default=os.environ.get("S3_ENDPOINT", DEFAULT_ENDPOINT),
                   help="S3 endpoint; the default one is started with scripts/ceph-rgw.sh up if it does not answer")
    p.add_argument("--bucket", default=os.environ.get("S3_BUCKET", "test"))
    p.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    p.add_argument("--size", type=parse_size, default="4G", help="big file size")
    p.add_argument("--only", type=csv(PHASES), default=",".join(PHASES), help="phases, comma-separated")
    p.add_argument("--peers", type=csv(PEERS), default=",".join(PEERS), help="peer filesystems, comma-separated")
    p.add_argument("--no-peers", action="store_true", help="s3pvefs and the raw references only")
    p.add_argument("--part-size", type=parse_size, default="16M", help="raw upload/download part")
    p.add_argument("--inflight", type=int, default=8, help="raw upload/download parts in flight")
    p.add_argument("--copy-part-size", type=parse_size, default="256M", help="raw UploadPartCopy part")
    p.add_argument("--ls-entries", type=int, default=10000)
    p.add_argument("--cpr-files", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1, help="seed of the cp -r file sizes and contents")
    p.add_argument("-o", dest="s3pvefs_options", action="append", default=[], metavar="OPT",
                   help="extra s3pvefs mount option (name=value), repeatable")
    p.add_argument("--s3pvefs-rev", metavar="REV",
                   help="measure this git revision of s3pvefs (git archive into a scratch dir) "
                        "instead of the working tree")
    p.add_argument("--data-dir", help="where source data is generated (default /dev/shm if it fits, else /var/tmp)")
    p.add_argument("--keep-data", action="store_true", help="keep the generated source data for the next run")
    p.add_argument("--results", help="JSON output (default bench/results/<timestamp>.json)")
    p.add_argument("--rgw-log", default=os.environ.get("RGW_LOG"),
                   help="radosgw log to count requests in (default: found from the local radosgw process)")
    p.add_argument("--no-gc", action="store_true", help="do not run `radosgw-admin gc process` after deletions")
    p.add_argument("--no-drop-caches", action="store_true", help="do not drop the page cache before reads")
    p.add_argument("--rtt", type=parse_rtt, metavar="TIME",
                   help="add this round trip (e.g. 30ms) to traffic on the S3 server's port: with the default "
                        "endpoint, in a network namespace the benchmark creates with a Ceph RGW of its own "
                        "inside; with another 127.0.0.1 endpoint, on that port of the host's loopback")
    p.add_argument("--min-rate", type=parse_size, default="4M",
                   help="per-second rate below which a big copy is declared hung (bounds every wait)")
    return p


class own_cpu:
    """CPU seconds (all threads) this process spends in the block: shows when the raw
    client, not the server, is the limit."""

    def __enter__(self):
        r = resource.getrusage(resource.RUSAGE_SELF)
        self._t0 = r.ru_utime + r.ru_stime
        return self

    def __exit__(self, *exc):
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.seconds = round(r.ru_utime + r.ru_stime - self._t0, 2)


class Bench:
    def __init__(self, args, ep: Endpoint, s3: S3, rgw, stamp: str):
        self.args, self.ep, self.s3, self.rgw = args, ep, s3, rgw
        self.log = RgwLog(rgw.log, s3) if rgw else None
        self.size = args.size
        self.peers = [] if args.no_peers else args.peers
        self.results_dir = REPO / "bench" / "results"
        self.logdir = str(self.results_dir / f"{stamp}-logs")
        self.workdir = f"/var/tmp/s3pvefs-bench-{stamp}"
        self.data_dir = args.data_dir
        self.big_timeout = 120 + self.size / args.min_rate
        self.results: dict = {"runs": {}, "errors": []}
        self.crt = Crt(ep)
        self.mounts: list[Mount] = []
        self.s3pvefs_source: str | None = None

    # -- helpers --------------------------------------------------------------------

    def rec(self, system: str, what: str) -> dict:
        return self.results["runs"].setdefault(system, {}).setdefault(what, {})

    def run(self, argv: list[str], timeout: float, stdout=subprocess.DEVNULL) -> subprocess.CompletedProcess:
        try:
            r = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
        if r.returncode != 0:
            raise BenchError(f"`{' '.join(argv)}` failed (exit {r.returncode}): {r.stderr.strip()[-400:]}")
        return r

    def timed(self, argv: list[str], timeout: float) -> float:
        t0 = time.monotonic()
        self.run(argv, timeout)
        return time.monotonic() - t0

    @contextlib.contextmanager
    def counting(self, prefix: str, rec: dict, key: str = "requests"):
        """S3 requests to `prefix` while the block runs, into rec[key]."""
        if not self.log:
            rec[key] = None
            yield
            return
        start = self.log.sync()
        try:
            yield
        finally:
            rec[key] = self.log.count(start, self.log.sync(), prefix).as_dict()

    @contextlib.contextmanager
    def measuring(self, system: str, what: str):
        """A result record; a BenchError inside is recorded and the run goes on."""
        rec = self.rec(system, what)
        try:
            yield rec
        except BenchError as e:
            rec["error"] = str(e)
            self.results["errors"].append(f"{system} {what}: {e}")
            print(f"  ! {system} {what}: {e}", flush=True)
        finally:
            if not rec:
                del self.results["runs"][system][what]

    def mount(self, system: str, prefix: str) -> Mount:
        mp = os.path.join(MOUNT_ROOT, system)
        os.makedirs(mp, exist_ok=True)
        if is_mounted(mp):
            force_unmount(mp, None)
        cls = SYSTEMS[system]
        kw = {"options": self.args.s3pvefs_options, "source": self.s3pvefs_source} if system == "s3pvefs" else {}
        m = cls(self.ep, prefix, mp, self.workdir, **kw)
        m.log = os.path.join(self.logdir, f"{system}.log")
        self.results.setdefault("settings", {})[system] = m.settings()
        self.mounts.append(m)
        return m

    @contextlib.contextmanager
    def mounted(self, system: str, prefix: str, rec: dict | None = None):
        m = self.mount(system, prefix)
        m.start()
        try:
            yield m
        finally:
            took = m.stop(timeout=self.big_timeout)
            if rec is not None:
                rec["umount_seconds"] = round(abs(took), 2)
                if took < 0:
                    rec["umount_forced"] = True

    def gc(self) -> None:
        """Reclaim deleted objects' space now rather than during a later measurement."""
        if self.args.no_gc or not self.rgw:
            return
        try:
            subprocess.run(["radosgw-admin", "-c", self.rgw.conf, "gc", "process", "--include-all"],
                           capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def drop_caches(self) -> None:
        if self.args.no_drop_caches:
            return
        with contextlib.suppress(OSError):
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- source data ----------------------------------------------------------------

    def pick_data_dir(self) -> str:
        need = self.size + 300 * MiB
        for d in ([self.data_dir] if self.data_dir else ["/dev/shm", "/var/tmp"]):
            os.makedirs(d, exist_ok=True)
            st = os.statvfs(d)
            existing = os.path.join(d, "s3pvefs-bench", f"big-{self.size}.bin")
            have = os.path.getsize(existing) if os.path.exists(existing) else 0
            if st.f_bavail * st.f_frsize + have >= need:
                return os.path.join(d, "s3pvefs-bench")
        raise BenchError(f"no room for {human(need)} of source data in /dev/shm or /var/tmp (use --data-dir)")

    def big_source(self) -> str:
        path = os.path.join(self.data_dir, f"big-{self.size}.bin")
        stamp = path + ".ok"
        if os.path.exists(stamp) and os.path.exists(path) and os.path.getsize(path) == self.size:
            return path
        self.say(f"generating {human(self.size)} of incompressible data in {path}")
        os.makedirs(self.data_dir, exist_ok=True)
        tmp = path + ".tmp"
        # AES-CTR keystream: incompressible, fast, and the same bytes every time.
        cmd = (f"openssl enc -aes-128-ctr -pass pass:s3pvefs-bench -nosalt -pbkdf2 < /dev/zero 2>/dev/null"
               f" | head -c {self.size} > {tmp}")
        subprocess.run(["bash", "-c", cmd], timeout=120 + self.size / (20 * MiB), check=False)
        if not os.path.exists(tmp) or os.path.getsize(tmp) != self.size:
            raise BenchError(f"could not generate {tmp} (openssl missing or disk full?)")
        os.replace(tmp, path)
        Path(stamp).touch()
        return path

    def small_files(self) -> tuple[str, int, int]:
        """2,000 (--cpr-files) files of 1-100 KiB, random sizes and contents from --seed."""
        n, seed = self.args.cpr_files, self.args.seed
        d = os.path.join(self.data_dir, f"cpr-{n}-{seed}")
        rng = random.Random(seed)
        sizes = [rng.randint(1024, 100 * 1024) for _ in range(n)]
        if not os.path.exists(d + ".ok"):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            for i, size in enumerate(sizes):
                with open(os.path.join(d, f"file-{i:05d}.bin"), "wb") as f:
                    f.write(rng.randbytes(size))
            Path(d + ".ok").touch()
        return d, n, sum(sizes)

    # -- big file: write, read, rename ----------------------------------------------

    def ensure_object(self, key: str, src: str) -> None:
        if self.s3.head_size(key) != self.size:
            self.say(f"  (uploading {key} for this phase, untimed)")
            self.s3.upload(src, key, self.size, self.args.part_size, self.args.inflight)

    def raw_big(self, src: str) -> None:
        """The two client references: aiobotocore ("raw", s3pvefs's own stack) and the
        AWS CRT ("crt", the fastest client); targets are ratios to the faster of them."""
        a = self.args
        for system, prefix in (("raw", "bench-raw/"), ("crt", "bench-crt/")):
            key = prefix + "big"
            self.s3.delete_prefix(prefix)
            name = "aiobotocore" if system == "raw" else "AWS CRT"
            if "write" in a.only:
                with self.measuring(system, "write") as rec:
                    self.say(f"{name}: parallel multipart upload of {human(self.size)} "
                             f"({human(a.part_size)} parts" + (f", {a.inflight} in flight)" if system == "raw"
                                                               else ", connections as the CRT decides)"))
                    with own_cpu() as cpu:
                        t = (self.s3.upload(src, key, self.size, a.part_size, a.inflight) if system == "raw"
                             else self.crt.upload(src, key, self.size, a.part_size))
                    rec.update(seconds=round(t, 2), mib_s=round(self.size / MiB / t, 1), cpu_seconds=cpu.seconds)
                    self.say(f"  {rec['mib_s']} MiB/s, {cpu.seconds / (self.size / GiB):.2f} CPU-s/GiB")
            if "read" in a.only:
                with self.measuring(system, "read") as rec:
                    self.ensure_object(key, src)
                    self.say(f"{name}: parallel ranged download ({human(a.part_size)} ranges)")
                    with own_cpu() as cpu:
                        t = (self.s3.download(key, self.size, a.part_size, a.inflight) if system == "raw"
                             else self.crt.download(key, a.part_size))
                    rec.update(seconds=round(t, 2), mib_s=round(self.size / MiB / t, 1), cpu_seconds=cpu.seconds)
                    self.say(f"  {rec['mib_s']} MiB/s, {cpu.seconds / (self.size / GiB):.2f} CPU-s/GiB")
            self.s3.delete_prefix(prefix)
            self.gc()

    def fs_write(self, system: str, src: str) -> None:
        prefix = f"bench-{system}"
        key = f"{prefix}/big"
        with self.measuring(system, "write") as rec:
            self.s3.delete_prefix(prefix + "/")
            self.say(f"{system}: cp {human(self.size)} into the mount")
            with self.mounted(system, prefix, rec) as m:
                with self.counting(prefix + "/", rec), m.sampler() as smp:
                    t0 = time.monotonic()
                    self.run(["cp", src, os.path.join(m.mountpoint, "big")], self.big_timeout)
                    t_cp = time.monotonic() - t0
                    in_bucket = self.s3.head_size(key) == self.size
                    t = t_cp if in_bucket else self.s3.wait_objects(prefix + "/", 1, self.size, t0, self.big_timeout)
                rec.update(seconds=round(t, 2), cp_seconds=round(t_cp, 2), mib_s=round(self.size / MiB / t, 1),
                           in_bucket_when_cp_returned=in_bucket, **smp.report())
            if self.s3.head_size(key) != self.size:
                raise BenchError(f"{key} is not {self.size} bytes in the bucket after the write")
            self.say(f"  {rec['mib_s']} MiB/s (cp returned after {t_cp:.1f} s), peak RSS "
                     f"{rec['vm_hwm_bytes'] / MiB:.0f} MiB, peak local disk {rec['peak_disk_bytes'] / MiB:.0f} MiB")

    def fs_read_rename(self, system: str, src: str) -> None:
        a, prefix = self.args, f"bench-{system}"
        key = f"{prefix}/big"
        if "read" not in a.only and not (system == "s3pvefs" and "rename" in a.only):
            return
        try:
            self.ensure_object(key, src)
        except BenchError as e:
            self.results["errors"].append(f"{system} read: {e}")
            return
        self.drop_caches()
        with self.measuring(system, "read mount"):
            with self.mounted(system, prefix) as m:
                if "read" in a.only:
                    with self.measuring(system, "read") as rec:
                        self.say(f"{system}: dd {human(self.size)} out of a fresh mount")
                        with self.counting(prefix + "/", rec), m.sampler() as smp:
                            t = self.timed(["dd", f"if={os.path.join(m.mountpoint, 'big')}", "of=/dev/null",
                                            "bs=1M", "status=none"], self.big_timeout)
                        rec.update(seconds=round(t, 2), mib_s=round(self.size / MiB / t, 1), **smp.report())
                        self.say(f"  {rec['mib_s']} MiB/s, peak RSS {rec['vm_hwm_bytes'] / MiB:.0f} MiB")
                if system == "s3pvefs" and "rename" in a.only:
                    with self.measuring(system, "rename") as rec:
                        self.say(f"{system}: mv big big2 ({human(self.size)})")
                        with self.counting(prefix + "/", rec):
                            t = self.timed(["mv", os.path.join(m.mountpoint, "big"),
                                            os.path.join(m.mountpoint, "big2")], self.big_timeout)
                        rec["seconds"] = round(t, 2)
                        self.say(f"  {t:.2f} s")
                        if self.s3.head_size(f"{prefix}/big2") != self.size or self.s3.head_size(key) is not None:
                            raise BenchError("after mv, big2 is not the full object or big still exists")
        if system == "s3pvefs" and "rename" in a.only and self.s3.head_size(f"{prefix}/big2") == self.size:
            self.raw_copies(f"{prefix}/big2")

    def raw_copies(self, src: str) -> None:
        a = self.args
        with self.measuring("raw", "rename") as rec:
            if self.size <= MAX_SINGLE_COPY:
                self.say("raw: CopyObject of the same object")
                rec["copy_object_seconds"] = round(self.s3.copy_single(src, "bench-raw/copy-single"), 2)
                self.say(f"  {rec['copy_object_seconds']:.2f} s")
            self.say(f"raw: parallel UploadPartCopy ({human(a.copy_part_size)} parts, {a.inflight} in flight)")
            rec["upload_part_copy_seconds"] = round(self.s3.copy_parts(
                src, "bench-raw/copy-parts", self.size, a.copy_part_size, a.inflight), 2)
            self.say(f"  {rec['upload_part_copy_seconds']:.2f} s")
            rec["seconds"] = min(v for k, v in rec.items() if k.endswith("_seconds"))
        self.s3.delete_prefix("bench-raw/")

    def big_file(self) -> None:
        a = self.args
        if not set(a.only) & {"write", "read", "rename"}:
            return
        src = self.big_source()
        if set(a.only) & {"write", "read"}:
            self.raw_big(src)
        for system in ["s3pvefs"] + self.peers:
            if system != "s3pvefs" and not set(a.only) & {"write", "read"}:
                continue
            if "write" in a.only:
                self.fs_write(system, src)
            self.fs_read_rename(system, src)
            self.s3.delete_prefix(f"bench-{system}/")
            self.gc()

    # -- metadata: ls -l ------------------------------------------------------------

    def ls(self) -> None:
        n = self.args.ls_entries
        d = f"{LS_PREFIX}/d/"
        have, _ = self.s3.count(d)
        if have != n:
            self.say(f"creating {n} small objects under {d} (once; kept for later runs)")
            self.s3.delete_prefix(d)
            t = self.s3.put_many(d, [f"f{i:06d}" for i in range(n)], b"x" * 100)
            self.say(f"  {t:.1f} s")
        with self.measuring("raw", "ls") as rec:
            runs = [self.s3.list_dir(d) for _ in range(3)]
            if runs[0][1] != n:
                raise BenchError(f"raw list of {d} saw {runs[0][1]} entries, expected {n}")
            rec.update(seconds=round(statistics.median(r[0] for r in runs), 3), pages=runs[0][2],
                       runs=[round(r[0], 3) for r in runs])
            self.say(f"raw: paginated ListObjectsV2 of {n} entries: {rec['seconds']:.3f} s (median of 3)")
        for system in ["s3pvefs"] + self.peers:
            with self.measuring(system, "ls") as rec:
                with self.mounted(system, LS_PREFIX) as m:
                    path = os.path.join(m.mountpoint, "d")
                    for kind in ("cold", "warm"):
                        with self.counting(LS_PREFIX + "/", rec, f"{kind}_requests"):
                            t0 = time.monotonic()
                            out = self.run(["ls", "-l", path], timeout=900, stdout=subprocess.PIPE).stdout
                            t = time.monotonic() - t0
                        lines = out.count("\n") - 1  # minus "total N"
                        if lines != n:
                            raise BenchError(f"ls -l listed {lines} entries, expected {n}")
                        rec[f"{kind}_seconds"] = round(t, 3)
                    rec["seconds"] = rec["cold_seconds"]
                self.say(f"{system}: ls -l of {n} entries: cold {rec['cold_seconds']:.2f} s, "
                         f"warm {rec['warm_seconds']:.2f} s")

    # -- cp -r of small files ---------------------------------------------------------

    def cpr(self) -> None:
        src, n, total = self.small_files()
        with self.measuring("raw", "cpr") as rec:
            self.s3.delete_prefix("bench-raw/cpr/")
            self.say(f"raw: PUT of the same {n} files one after another")
            t = self.s3.put_files_one_by_one(src, "bench-raw/cpr/")
            rec.update(seconds=round(t, 2))
            self.say(f"  {t:.1f} s")
            self.s3.delete_prefix("bench-raw/cpr/")
        for system in ["s3pvefs"] + self.peers:
            prefix = f"bench-{system}"
            with self.measuring(system, "cpr") as rec:
                self.s3.delete_prefix(f"{prefix}/cpr/")
                self.say(f"{system}: cp -r of {n} files ({human(total)})")
                with self.mounted(system, prefix, rec) as m:
                    with self.counting(prefix + "/", rec), m.sampler() as smp:
                        t0 = time.monotonic()
                        self.run(["cp", "-r", src, os.path.join(m.mountpoint, "cpr")], timeout=1800)
                        t_cp = time.monotonic() - t0
                        files, size = self.s3.count(f"{prefix}/cpr/")
                        in_bucket = files == n and size == total
                        t = t_cp if in_bucket else self.s3.wait_objects(f"{prefix}/cpr/", n, total, t0, 1800)
                    rec.update(seconds=round(t, 2), cp_seconds=round(t_cp, 2),
                               in_bucket_when_cp_returned=in_bucket, **smp.report())
                files, size = self.s3.count(f"{prefix}/cpr/")
                if (files, size) != (n, total):
                    raise BenchError(f"after cp -r the bucket has {files} files / {size} bytes, "
                                     f"expected {n} / {total}")
                self.say(f"  {t:.1f} s (cp returned after {t_cp:.1f} s)")
            self.s3.delete_prefix(f"{prefix}/cpr/")

    # -- the whole run --------------------------------------------------------------

    def cleanup(self) -> None:
        for m in self.mounts:
            if is_mounted(m.mountpoint) or (m.pid and os.path.exists(f"/proc/{m.pid}")):
                with contextlib.suppress(Exception):
                    m.stop(timeout=60)
        for prefix in ("bench-raw/", "bench-crt/", "bench-s3pvefs/", "bench-s3fs/", "bench-rclone/"):
            with contextlib.suppress(Exception):
                self.s3.delete_prefix(prefix)
        shutil.rmtree(self.workdir, ignore_errors=True)
        for system in SYSTEMS:
            mp = os.path.join(MOUNT_ROOT, system)
            if os.path.isdir(mp) and not is_mounted(mp):
                with contextlib.suppress(OSError):
                    os.rmdir(mp)
        with contextlib.suppress(OSError):
            os.rmdir(MOUNT_ROOT)
        if not self.args.keep_data and self.data_dir and os.path.isdir(self.data_dir):
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def extract_rev(self, rev: str) -> None:
        dest = os.path.join(self.workdir, "s3pvefs-src")
        os.makedirs(dest)
        r = subprocess.run(f"git -C {REPO} archive {rev} s3pvefs | tar -x -C {dest}", shell=True,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or not os.path.isfile(os.path.join(dest, "s3pvefs", "cli.py")):
            raise BenchError(f"cannot extract s3pvefs at revision {rev}: {r.stderr.strip()}")
        self.s3pvefs_source = dest

    def execute(self) -> None:
        os.makedirs(self.logdir, exist_ok=True)
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)
        if self.args.s3pvefs_rev:
            self.extract_rev(self.args.s3pvefs_rev)
        self.data_dir = self.pick_data_dir()
        self.big_file()
        if "ls" in self.args.only:
            self.ls()
        if "cpr" in self.args.only:
            self.cpr()


def _awscrt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("awscrt")
    except PackageNotFoundError:
        return "?"


def _first_line(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def s3pvefs_revision(rev: str | None) -> dict:
    def git(*a):
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()
    if rev:
        return {"commit": git("rev-parse", "--short", rev), "subject": git("log", "-1", "--format=%s", rev),
                "source": f"git archive {rev}",
                "last_commit_touching_s3pvefs": git("log", "-1", "--format=%h", rev, "--", "s3pvefs")}
    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "s3pvefs")
    rev = {"commit": head, "subject": git("log", "-1", "--format=%s"),
           "last_commit_touching_s3pvefs": git("log", "-1", "--format=%h", "HEAD", "--", "s3pvefs")}
    if dirty:
        import hashlib
        rev["uncommitted_changes_in_s3pvefs"] = dirty.splitlines()
        rev["diff_sha1"] = hashlib.sha1(git("diff", "HEAD", "--", "s3pvefs").encode()).hexdigest()[:12]
    return rev


def preflight(args) -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (FUSE mounts, /proc/sys/vm/drop_caches, other daemons' /proc entries)")
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse is missing")
    if not (REPO / ".venv" / "bin" / "s3pvefs").exists():
        problems.append("s3pvefs is not installed in .venv: run ./scripts/setup.sh")
    needed = {"fusermount3": "fuse3", "openssl": "openssl", "dd": "coreutils"}
    if not args.no_peers:
        needed.update({p: p for p in args.peers})
    for exe, pkg in needed.items():
        if not shutil.which(exe):
            extra = " (or leave it out with --no-peers / --peers)" if exe in PEERS else ""
            problems.append(f"{exe} not found: apt-get install {pkg}{extra}")
    if problems:
        raise BenchError("; ".join(problems))


IN_NETNS_ENV = "S3PVEFS_BENCH_INSIDE"  # set for the run with_latency starts
RTT_MEASURED_ENV = "S3PVEFS_BENCH_RTT_MS"
RTT_CEPH_BASE = "/tmp/s3pvefs-bench-rtt-ceph"


def with_latency(args, argv: list[str]) -> int:
    """bench/run --rtt: the same run, with args.rtt ms added to the S3 server's port.
    Default endpoint: a network namespace (all on its loopback) holding a Ceph RGW of its
    own and this benchmark; both removed at the end. Another 127.0.0.1 endpoint: the
    delay goes on that port of the host's loopback (its server cannot move), removed at
    the end too."""
    from bench.latency import Latency
    url = urlsplit(args.endpoint)
    if url.hostname not in ("127.0.0.1", "localhost") or not url.port:
        raise BenchError(f"--rtt needs a server on 127.0.0.1:PORT, not {args.endpoint}")
    own_ceph = args.endpoint.rstrip("/") == DEFAULT_ENDPOINT
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with Latency(args.rtt, url.port, host=not own_ceph) as lat:
        env = dict(os.environ, **{IN_NETNS_ENV: "1"})
        ceph_env = dict(os.environ, BASE=RTT_CEPH_BASE)
        try:
            if own_ceph:
                print(f"bench: network namespace {lat.name}: starting a Ceph RGW in it "
                      f"({RTT_CEPH_BASE}, ~1 minute)", flush=True)
                r = subprocess.run(lat.prefix() + [str(REPO / "scripts" / "ceph-rgw.sh"), "up"], env=ceph_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
                if r.returncode:
                    raise BenchError("scripts/ceph-rgw.sh up in the namespace failed:\n" + r.stdout[-2000:])
            rtt = lat.measure_rtt()
            print(f"bench: RTT to port {url.port} measured {rtt:.1f} ms (asked {args.rtt:g} ms; {lat.iptables})",
                  flush=True)
            env[RTT_MEASURED_ENV] = f"{rtt:.2f}"
            return subprocess.call(lat.prefix() + [sys.executable, "-m", "bench", *argv], env=env, cwd=REPO)
        finally:
            if own_ceph:
                subprocess.run(lat.prefix() + [str(REPO / "scripts" / "ceph-rgw.sh"), "down"], env=ceph_env,
                               capture_output=True, timeout=600)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.no_peers:
        args.peers = []

    inside = os.environ.get(IN_NETNS_ENV)
    if os.geteuid() == 0 and not inside:  # else preflight says why it cannot run
        lock = open("/run/s3pvefs-bench.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("bench: another bench/run is running (it holds /run/s3pvefs-bench.lock)", file=sys.stderr)
            return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    if args.rtt is not None and not inside:
        try:
            preflight(args)
            return with_latency(args, argv if argv is not None else sys.argv[1:])
        except (BenchError, RuntimeError) as e:
            print(f"bench: {e}", file=sys.stderr)
            return 2
    try:
        preflight(args)
        if args.s3pvefs_rev and subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet",
                                                args.s3pvefs_rev + "^{commit}"], capture_output=True).returncode:
            raise BenchError(f"--s3pvefs-rev {args.s3pvefs_rev}: no such revision")
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not (key and secret):
            if args.endpoint != DEFAULT_ENDPOINT:
                raise BenchError("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for " + args.endpoint)
            key, secret = "testaccesskey", "testsecretkey"  # scripts/ceph-rgw.sh's user
        ep = Endpoint(args.endpoint.rstrip("/"), args.bucket, key, secret, args.region)
        s3 = S3(ep)
        problem = s3.check()
        if problem and problem.startswith("cannot reach") and args.endpoint == DEFAULT_ENDPOINT:
            print(f"{problem}; starting a local Ceph RGW with scripts/ceph-rgw.sh up", flush=True)
            r = subprocess.run([str(REPO / "scripts" / "ceph-rgw.sh"), "up"], timeout=900)
            problem = s3.check() if r.returncode == 0 else "scripts/ceph-rgw.sh up failed"
        if problem:
            raise BenchError(problem)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        print("bench: interrupted while starting", file=sys.stderr)
        return 2

    url = urlsplit(ep.url)
    rgw = find_rgw(url.port or (443 if url.scheme == "https" else 80))
    if args.rgw_log:
        from bench.rgwlog import Rgw
        rgw = Rgw(0, rgw.conf if rgw else "", rgw.name if rgw else "", args.rgw_log, rgw.asok if rgw else "")
    if rgw:
        ensure_logging(rgw.asok)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bench = Bench(args, ep, s3, rgw, stamp)
    bench.results["meta"] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "endpoint": ep.url, "bucket": ep.bucket, "size_bytes": args.size, "phases": args.only,
        "peers": args.peers, "s3pvefs": s3pvefs_revision(args.s3pvefs_rev),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1)},
        "versions": {"s3fs": _first_line(["s3fs", "--version"]) if "s3fs" in args.peers else None,
                     "rclone": _first_line(["rclone", "version"]) if "rclone" in args.peers else None,
                     "radosgw": _first_line(["radosgw", "--version"]) if rgw else None,
                     "python": platform.python_version()},
        "raw": {"client": "aiobotocore (httpx backend) on trio, like s3pvefs", "part_size": args.part_size,
                "inflight": args.inflight, "copy_part_size": args.copy_part_size},
        "crt": {"client": f"AWS CRT S3 client (awscrt {_awscrt_version()})", "part_size": args.part_size,
                "throughput_target_gbps": bench.crt.throughput_gbps},
        "request_log": rgw.log if rgw else None,
        "rgw_frontends": rgw.frontends if rgw else None,
        "ls_entries": args.ls_entries, "cpr_files": args.cpr_files, "seed": args.seed,
        "rtt_ms": args.rtt, "rtt_measured_ms": float(os.environ.get(RTT_MEASURED_ENV, 0)) or None,
    }
    rev = bench.results["meta"]["s3pvefs"]
    which = " + uncommitted changes" if "diff_sha1" in rev else f" ({rev['source']})" if "source" in rev else ""
    print(f"s3pvefs {rev['commit']}{which} | {ep.url} "
          f"bucket {ep.bucket} | big file {human(args.size)} | phases {','.join(args.only)} | "
          f"peers {','.join(args.peers) or 'none'}", flush=True)
    if rgw and "tcp_nodelay=1" not in rgw.frontends:
        print("  note: radosgw runs without tcp_nodelay=1: every response with a body (GET, LIST) waits\n"
              "  ~40 ms for a delayed ACK, which dominates the ls and cp -r figures", flush=True)
    if not rgw:
        print("  (no radosgw log found: S3 request counts will be n/a; --rgw-log PATH)", flush=True)

    rc = 0
    t_start = time.monotonic()
    try:
        bench.execute()
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr)
        bench.results["errors"].append("interrupted")
        rc = 130
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        bench.results["errors"].append(str(e))
        rc = 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            bench.say("cleaning up")
            bench.cleanup()
    bench.results["meta"]["duration_seconds"] = round(time.monotonic() - t_start, 1)

    table, derived = report.render(bench.results)
    bench.results["derived"] = derived
    out = Path(args.results) if args.results else bench.results_dir / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench.results, indent=2, default=str) + "\n")
    print()
    print(table)
    print(f"\nresults: {out}\nlogs:    {bench.logdir}")
    if bench.results["errors"] and rc == 0:
        rc = 1
    return rc
