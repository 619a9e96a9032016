"""The three FUSE filesystems under test, started and stopped with bounded waits, and
a sampler of one daemon's memory and local disk use.

Local disk use of a daemon = the allocated size of the regular files it holds open
(staging/temporary files are usually unlinked at once, so `du` cannot see them)
plus `du` of its cache directories (rclone's VFS cache keeps closed files there).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

from bench.raw import BenchError, Endpoint

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


# -- process facts ------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, int]:
    """VmHWM/VmRSS etc. in bytes."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Vm") and line.rstrip().endswith("kB"):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_files(pid: int, ignore: set[str]) -> dict[tuple[int, int], int]:
    """{(device, inode): allocated bytes} of the regular files `pid` holds open,
    deleted ones included."""
    found = {}
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return found
    for fd in fds:
        path = f"{fd_dir}/{fd}"
        try:
            if os.readlink(path).removesuffix(" (deleted)") in ignore:
                continue
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return found


def tree_files(path: str) -> dict[tuple[int, int], int]:
    """{(device, inode): allocated bytes} of the files under path (what `du` adds up)."""
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            found[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return found


class Sampler:
    """Samples one daemon every `interval` s in a thread: peak local disk use and peak RSS."""

    def __init__(self, pid: int, dirs: list[str], ignore: set[str], interval: float = 0.2):
        self.pid, self.dirs, self.ignore, self.interval = pid, dirs, ignore, interval
        self.peak_disk = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        files = open_files(self.pid, self.ignore)
        for d in self.dirs:
            files.update(tree_files(d))
        disk = sum(files.values())  # each file once, open or cached or both
        self.peak_disk = max(self.peak_disk, disk)
        self.peak_rss = max(self.peak_rss, proc_status(self.pid).get("VmRSS", 0))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self.cpu0 = cpu_seconds(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()
        self.cpu = cpu_seconds(self.pid) - self.cpu0

    def report(self) -> dict:
        return {"peak_disk_bytes": self.peak_disk, "peak_rss_sampled_bytes": self.peak_rss,
                "vm_hwm_bytes": proc_status(self.pid).get("VmHWM", 0), "cpu_seconds": round(self.cpu, 2)}


# -- unmounting -----------------------------------------------------------------------

def _mountinfo(mountpoint: str) -> str | None:
    """'major:minor' of what is mounted at mountpoint (read without touching the mount)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == mountpoint:
                    return fields[2]
    except OSError:
        pass
    return None


def is_mounted(mountpoint: str) -> bool:
    return _mountinfo(mountpoint) is not None


def force_unmount(mountpoint: str, pid: int | None) -> None:
    """Last resort, bounded: lazy unmount, stop the daemon, abort the FUSE connection."""
    dev = _mountinfo(mountpoint)
    if dev is not None:
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, timeout=15)
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if dev is not None and is_mounted(mountpoint):
        minor = dev.split(":")[1]
        try:
            with open(f"/sys/fs/fuse/connections/{minor}/abort", "w") as f:
                f.write("1")
        except OSError:
            pass
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, timeout=15)


def _wait_mounted(mountpoint: str, proc: subprocess.Popen, log: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not is_mounted(mountpoint):
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode} before mounting: {tail(log)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise BenchError(f"{what} did not mount {mountpoint} within {timeout:.0f} s: {tail(log)}")
        time.sleep(0.1)


def tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(l.strip() for l in f.readlines()[-lines:] if l.strip()) or "(empty log)"
    except OSError:
        return "(no log)"


# -- the filesystems ------------------------------------------------------------------

class Mount:
    """One filesystem mounted on `mountpoint` with the bucket's `prefix` as its root."""
    name = ""

    def __init__(self, ep: Endpoint, prefix: str, mountpoint: str, workdir: str):
        self.ep, self.prefix, self.mountpoint, self.workdir = ep, prefix, mountpoint, workdir
        self.log = os.path.join(workdir, f"{self.name}.log")
        self.pid: int | None = None
        self.cache_dirs: list[str] = []

    def settings(self) -> dict:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def _unmount(self, timeout: float) -> bool:
        r = subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True, timeout=30)
        if r.returncode != 0:
            return False
        deadline = time.monotonic() + timeout
        while alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return not alive(self.pid)

    def stop(self, timeout: float = 120) -> float:
        """Unmount and wait for the daemon to exit; seconds it took. Falls back to force."""
        t0 = time.monotonic()
        ok = False
        try:
            ok = self._unmount(timeout)
        except subprocess.TimeoutExpired:
            pass
        if not ok:
            force_unmount(self.mountpoint, self.pid)
        took = time.monotonic() - t0
        self.pid = None
        proc = getattr(self, "_proc", None)  # a peer started as our child: reap it
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return took if ok else -took

    def sampler(self) -> Sampler:
        if not alive(self.pid):
            raise BenchError(f"{self.name} daemon is not running: {tail(self.log)}")
        return Sampler(self.pid, self.cache_dirs, {self.log})

    def __enter__(self) -> "Mount":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class S3pvefs(Mount):
    name = "s3pvefs"

    def __init__(self, *a, options: list[str] | None = None, source: str | None = None, **kw):
        super().__init__(*a, **kw)
        self.options = options or []
        self.source = source  # a directory holding another s3pvefs package to run instead
        self.exe = str(REPO / ".venv" / "bin" / "s3pvefs")
        # The cache_dir default (as root); -o cache_dir=... moves it.
        self.cache_dirs = [next((o.split("=", 1)[1] for o in self.options if o.startswith("cache_dir=")),
                                "/var/cache/s3pvefs")]

    def settings(self) -> dict:
        return {"command": f"s3pvefs mount {self.ep.bucket}/{self.prefix} MOUNTPOINT "
                           f"--endpoint-url {self.ep.url} --log-file LOG"
                           + "".join(f" -o {o}" for o in self.options),
                "options": self.options or "defaults",
                "credentials": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment"}

    def _env(self) -> dict:
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.ep.access_key, AWS_SECRET_ACCESS_KEY=self.ep.secret_key)
        env.pop("AWS_PROFILE", None)
        if self.source:
            env["PYTHONPATH"] = self.source
        return env

    def start(self) -> None:
        argv = [self.exe, "mount", f"{self.ep.bucket}/{self.prefix}", self.mountpoint,
                "--endpoint-url", self.ep.url, "--log-file", self.log]
        for o in self.options:
            argv += ["-o", o]
        try:
            # cwd: not the repository, whose s3pvefs/ would shadow `source` for `python -m`
            r = subprocess.run(argv, env=self._env(), cwd=self.workdir, capture_output=True, text=True,
                               timeout=240)
        except subprocess.TimeoutExpired:
            force_unmount(self.mountpoint, None)
            raise BenchError("s3pvefs mount did not return within 240 s") from None
        if r.returncode != 0:
            raise BenchError(f"s3pvefs mount failed (exit {r.returncode}): {r.stderr.strip()}")
        pidfile = f"/run/s3pvefs/{hashlib.sha1(os.path.realpath(self.mountpoint).encode()).hexdigest()[:16]}.pid"
        try:
            with open(pidfile) as f:
                self.pid = int(f.read().strip())
        except (OSError, ValueError):
            r = subprocess.run(["pgrep", "-f", f"s3pvefs mount .* {self.mountpoint} "], capture_output=True, text=True)
            pids = [int(p) for p in r.stdout.split()]
            self.pid = pids[0] if pids else None

    def _unmount(self, timeout: float) -> bool:
        r = subprocess.run([self.exe, "umount", self.mountpoint, "--timeout", str(int(timeout))],
                           env=self._env(), cwd=self.workdir, capture_output=True, text=True,
                           timeout=timeout + 30)
        return r.returncode == 0 and not alive(self.pid)


class S3fs(Mount):
    name = "s3fs"
    OPTIONS = ["use_path_request_style", "parallel_count=8", "multipart_size=16"]

    def settings(self) -> dict:
        return {"command": f"s3fs {self.ep.bucket}:/{self.prefix} MOUNTPOINT -f -o url={self.ep.url},"
                           f"passwd_file=FILE(0600)," + ",".join(self.OPTIONS),
                "notes": "parallel_count=8 (default 5) parts in flight, multipart_size=16 MB (default 10); "
                         "temporary files in /tmp (default, no use_cache)"}

    def start(self) -> None:
        passwd = os.path.join(self.workdir, "s3fs-passwd")
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.ep.access_key}:{self.ep.secret_key}\n")
        opts = ",".join([f"url={self.ep.url}", f"passwd_file={passwd}"] + self.OPTIONS)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(["s3fs", f"{self.ep.bucket}:/{self.prefix}", self.mountpoint, "-f", "-o", opts],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.pid = proc.pid
        self._proc = proc
        _wait_mounted(self.mountpoint, proc, self.log, 60, "s3fs")


class Rclone(Mount):
    name = "rclone"
    REMOTE = "s3pvefsbench"
    FLAGS = ["--vfs-cache-mode", "writes", "--vfs-write-back", "0s",
             "--s3-upload-concurrency", "8", "--s3-chunk-size", "16M"]

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.cache = os.path.join(self.workdir, "rclone-cache")
        self.cache_dirs = [self.cache]

    def settings(self) -> dict:
        return {"command": f"rclone mount {self.REMOTE}:{self.ep.bucket}/{self.prefix} MOUNTPOINT "
                           + " ".join(self.FLAGS) + " --cache-dir DIR --log-file LOG",
                "config": f"environment: RCLONE_CONFIG_{self.REMOTE.upper()}_TYPE=s3 _PROVIDER=Ceph "
                          f"_ENDPOINT={self.ep.url} _ACCESS_KEY_ID _SECRET_ACCESS_KEY; AWS_CA_BUNDLE unset",
                "notes": "--vfs-cache-mode writes: writes go to the local cache and close() returns before "
                         "the upload; --vfs-write-back 0s starts the upload at close; the harness "
                         "times until the objects are in the bucket"}

    def env(self) -> dict:
        p = f"RCLONE_CONFIG_{self.REMOTE.upper()}_"
        env = dict(os.environ, **{p + "TYPE": "s3", p + "PROVIDER": "Ceph", p + "ENDPOINT": self.ep.url,
                                  p + "ACCESS_KEY_ID": self.ep.access_key,
                                  p + "SECRET_ACCESS_KEY": self.ep.secret_key,
                                  p + "REGION": self.ep.region})
        # rclone's S3 backend fails with "unable to load custom CA bundle" when it is set.
        env.pop("AWS_CA_BUNDLE", None)
        return env

    def start(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)
        argv = ["rclone", "mount", f"{self.REMOTE}:{self.ep.bucket}/{self.prefix}", self.mountpoint,
                *self.FLAGS, "--cache-dir", self.cache, "--log-file", self.log]
        proc = subprocess.Popen(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = proc.pid
        self._proc = proc
        _wait_mounted(self.mountpoint, proc, self.log, 60, "rclone mount")

    def stop(self, timeout: float = 120) -> float:
        took = super().stop(timeout)
        shutil.rmtree(self.cache, ignore_errors=True)
        return took


SYSTEMS = {"s3pvefs": S3pvefs, "s3fs": S3fs, "rclone": Rclone}
