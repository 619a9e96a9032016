"""Command line: s3pvefs mount | umount | ls | check | status.

User mistakes print one line on stderr and exit with a distinct code, never a
traceback. Credentials come by reference (a root-only credentials_file, systemd
credentials, or botocore's chain: environment, shared files, --profile), never
from the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import logging.handlers
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import replace

from s3pvefs import __version__
from s3pvefs.config import Config, apply_options, config_path, load_file, split_bucket, validate
from s3pvefs.errors import EXIT_MOUNTPOINT, EXIT_OTHER, EXIT_USAGE, ConfigError, MountError

log = logging.getLogger("s3pvefs")

READY_TIMEOUT = 180  # seconds the foreground parent waits for the daemon to mount


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3pvefs", description="Mount an S3 bucket as a Proxmox VE dir storage.")
    p.add_argument("--version", action="version", version=f"s3pvefs {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("mount", help="mount BUCKET[/PREFIX] on MOUNTPOINT, or what /etc/s3pvefs/NAME.toml says",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=MOUNT_EXIT_CODES)
    m.add_argument("bucket", metavar="NAME | BUCKET[/PREFIX]",
                   help="NAME alone: bucket, prefix and mountpoint from /etc/s3pvefs/NAME.toml")
    m.add_argument("mountpoint", nargs="?")
    _store_arguments(m)
    m.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    m.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="mount options: allow_other, ro, uid=, gid=, file_mode=, dir_mode=, capacity=, "
                        "or any setting name=value")
    m.add_argument("--log-file", help="log here instead of syslog/stderr")
    m.add_argument("--debug", action="store_true", help="log debug messages")
    m.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    ls = sub.add_parser("ls", help="list the Proxmox backups, images, ISOs, templates... in BUCKET[/PREFIX]",
                        description="List what Proxmox VE would see in the storage BUCKET[/PREFIX], "
                                    "straight from S3 (no mount): backups by VMID and date, disk images, "
                                    "ISO images, container templates, snippets, import files, and the "
                                    "objects Proxmox would not list.")
    ls.add_argument("bucket", metavar="NAME | BUCKET[/PREFIX]", nargs="?",
                    help="NAME: the settings of /etc/s3pvefs/NAME.toml; default: bucket and prefix of "
                         "the [store] section of --config")
    ls.add_argument("--json", action="store_true", help="JSON output (schema s3pvefs-ls/1, see README)")
    _store_arguments(ls)
    ls.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                    help="settings name=value, as for mount (mount options are accepted and ignored)")
    ls.add_argument("--debug", action="store_true", help="log debug messages on stderr")
    ls.set_defaults(log_file=None)

    c = sub.add_parser("check", help="test the way to BUCKET[/PREFIX] step by step: DNS, TCP, TLS, "
                                     "credentials, clock, bucket, writes",
                       description="Connectivity test: one PASS/FAIL/SKIP line per step (DNS, TCP, TLS, "
                                   "authentication, clock skew, bucket, put/get/head/delete of a probe "
                                   "object under the prefix, a multipart upload, a server-side copy), "
                                   "with the likely cause of a failure. Exit 0: all passed; 1: a check "
                                   "failed; 2: bad option or config.")
    c.add_argument("bucket", metavar="NAME | BUCKET[/PREFIX]", nargs="?",
                   help="NAME: the settings of /etc/s3pvefs/NAME.toml; default: bucket and prefix of "
                        "the [store] section of --config")
    _store_arguments(c)
    c.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="settings name=value, as for mount (mount options are accepted and ignored)")
    c.add_argument("--debug", action="store_true", help="log debug messages on stderr")
    c.set_defaults(log_file=None)

    st = sub.add_parser("status", help="what the daemon on MOUNTPOINT is doing: uploads, memory, requests")
    st.add_argument("mountpoint")
    st.add_argument("--json", action="store_true", help="one JSON snapshot (schema s3pvefs-status/1)")
    st.add_argument("--once", action="store_true", help="print once even on a terminal")

    u = sub.add_parser("umount", help="unmount, then wait until the daemon has committed what is pending",
                       description="Unmount MOUNTPOINT and wait until its daemon has committed what is "
                                   "pending (kept files, put-off commits) and exited. Refused (exit 1) "
                                   "while files on it are open: their data is committed when they close.")
    u.add_argument("mountpoint")
    u.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for the daemon to finish (default 600)")
    return p


MOUNT_EXIT_CODES = """exit codes (without --foreground, once the mount is live or has failed):
  0  mounted
  1  other failure (the message says which)
  2  bad option or config file
  3  access denied or no credentials
  4  no such bucket
  5  endpoint unreachable (refused: at once; no answer: within 3.5 s)
  6  mountpoint missing or busy, or this bucket and prefix already mounted here
  7  no usable /dev/fuse
  8  this node's clock is off by more than S3 allows (15 minutes)"""


def _named_config(args) -> None:
    """`ls NAME`, `check NAME`: the settings of /etc/s3pvefs/NAME.toml, as for mount."""
    if (args.bucket and "/" not in args.bucket and not args.config and not args.endpoint_url
            and os.path.exists(config_path(args.bucket))):
        args.config, args.bucket = config_path(args.bucket), None


def _store_arguments(p: argparse.ArgumentParser) -> None:
    """Where the bucket is and how to sign: the same for every command that talks to S3."""
    p.add_argument("--endpoint-url", help="S3 endpoint, e.g. http://127.0.0.1:7480 (default: AWS)")
    p.add_argument("--region", help="signing region (default us-east-1)")
    p.add_argument("--profile", help="profile in the AWS shared credentials/config files")
    p.add_argument("--config", metavar="FILE", help="TOML settings file")


def build_config(args) -> Config:
    if getattr(args, "mountpoint", "") is None:  # `mount NAME`: everything from the file
        path = args.config or config_path(args.bucket)
        config = load_file(path)
        if not config.store.bucket or not config.mount.mountpoint:
            raise ConfigError(f"{path}: needs store.bucket and mount.mountpoint to mount by name")
        args.bucket = f"{config.store.bucket}/{config.store.prefix}"
        args.mountpoint = config.mount.mountpoint
        args.named = True
    else:
        config = load_file(args.config) if args.config else Config()
        if args.bucket is None:  # `check --config FILE`: the bucket the file names
            if not config.store.bucket:
                raise ConfigError("no bucket given: BUCKET[/PREFIX], or bucket in the [store] section of --config")
            args.bucket = f"{config.store.bucket}/{config.store.prefix}"
    bucket, prefix = split_bucket(args.bucket)
    overrides = {k: v for k, v in (("endpoint_url", args.endpoint_url), ("region", args.region),
                                   ("profile", args.profile)) if v}
    store = replace(config.store, bucket=bucket, prefix=prefix or config.store.prefix, **overrides)
    config = replace(config, store=store)
    words = [w for opt in args.options for w in opt.split(",")]
    return validate(apply_options(config, words))


class PrivateFileHandler(logging.FileHandler):
    """A log file only root reads: the log names files (every one, with --debug) and
    buckets. Created 0600; one that exists already loses any access by others (the
    group an admin gave it is kept). Reopened the same way after SIGHUP."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            mode = os.fstat(fd).st_mode
            if mode & 0o007:
                os.fchmod(fd, mode & 0o7770)
        except OSError:
            os.close(fd)
            raise
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def _setup_logging(args, background: bool) -> None:
    level = logging.DEBUG if args.debug else logging.INFO
    if args.log_file:
        try:
            handler: logging.Handler = PrivateFileHandler(args.log_file)
        except OSError as e:
            raise ConfigError(f"--log-file {args.log_file}: {e.strerror}") from None
    elif background and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.ident = "s3pvefs: "
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Request-level chatter of the HTTP stack: not useful, and it could carry headers.
    for noisy in ("botocore", "aiobotocore", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _report(fd: int | None, message: str) -> None:
    if fd is not None:
        try:
            os.write(fd, (message + "\n").encode())
        except OSError:
            pass


def cmd_mount(args) -> int:
    config = build_config(args)  # for `mount NAME` it also sets args.mountpoint
    if getattr(args, "named", False) and not os.path.exists(args.mountpoint):
        try:  # the unit has no other place to create it
            os.makedirs(args.mountpoint, mode=0o755)
        except OSError as e:
            raise MountError(f"cannot create mountpoint {args.mountpoint}: {e.strerror}", EXIT_MOUNTPOINT) from None
    mountpoint = os.path.realpath(args.mountpoint)
    if args.log_file:
        args.log_file = os.path.abspath(args.log_file)
        try:  # here, so that a log file the daemon could not open is this command's one line
            PrivateFileHandler(args.log_file).close()
        except OSError as e:
            raise ConfigError(f"--log-file {args.log_file}: {e.strerror}") from None
    if not args.foreground:
        return _spawn_daemon(args)
    live = False

    def ready():
        nonlocal live
        live = True
        _write_pidfile(mountpoint)
        _report(args.ready_fd, "OK")

    try:
        _setup_logging(args, background=args.ready_fd is not None)
        os.chdir("/")  # every path is absolute by now; the daemon keeps no other directory busy
        import trio  # imported late: `s3pvefs --help` stays fast

        from s3pvefs import daemon
        trio.run(daemon.run, config, mountpoint, ready, _status_socket(mountpoint))
    except Exception as e:  # trio's nurseries wrap what was raised inside them in groups
        code, message = _mount_failure(e)
        if code is None:
            if live:
                raise
            log.exception("the daemon failed before mounting")
            code, message = EXIT_OTHER, f"unexpected error before mounting: {e.__class__.__name__}: {e}"
        _report(args.ready_fd, f"ERR {code} {message}")  # the background parent prints it
        log.error("%s", message)
        if args.ready_fd is None:
            print(f"s3pvefs: {message}", file=sys.stderr)
        return code
    finally:
        _remove_pidfile(mountpoint)
    return 0


def _mount_failure(e: BaseException) -> tuple[int | None, str]:
    """(exit code, one line) of a mount failure a user can act on, found wherever it
    was raised (also inside exception groups); (None, "") for anything else."""
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = _mount_failure(inner)
            if found[0] is not None:
                return found
        return None, ""
    if isinstance(e, MountError):
        return e.exit_code, str(e)
    if isinstance(e, ConfigError):
        return EXIT_USAGE, str(e)
    if isinstance(e, RuntimeError) and "fuse_session" in str(e):  # pyfuse3.init: the kernel refused it
        return EXIT_OTHER, f"mount failed: {e}"
    return None, ""


def _spawn_daemon(args) -> int:
    """Start the daemon detached and wait until it reports the mount live (or why not).

    The daemon is this same interpreter in isolated mode (-I): it imports the installed
    s3pvefs, never one found in the current directory, PYTHONPATH or a user's
    site-packages (it runs as root)."""
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-I", "-m", "s3pvefs"] + [a for a in sys.argv[1:]] + \
        ["--foreground", "--ready-fd", str(write_fd)]
    with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
        proc = subprocess.Popen(argv, stdin=devnull_in, stdout=devnull_out,
                                stderr=devnull_out if not args.debug else None,
                                pass_fds=(write_fd,), start_new_session=True, close_fds=True)
    os.close(write_fd)
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                print(f"s3pvefs: mount did not come up within {READY_TIMEOUT} s", file=sys.stderr)
                return 1
            if select.select([pipe], [], [], min(left, 1.0))[0]:
                chunk = pipe.read(4096)
                if not chunk:
                    break
                buf += chunk
    line = buf.decode(errors="replace").strip()
    if line == "OK":
        return 0
    if line.startswith("ERR "):
        _, code, message = line.split(" ", 2)
        print(f"s3pvefs: {message}", file=sys.stderr)
        return int(code)
    rc = proc.wait()
    where = f"; see {args.log_file}" if args.log_file else "; run with --foreground to see why"
    print(f"s3pvefs: the daemon exited (code {rc}) before mounting{where}", file=sys.stderr)
    return rc or 1


def _run_dir() -> str:
    return "/run/s3pvefs" if os.geteuid() == 0 else os.path.join(
        os.environ.get("XDG_RUNTIME_DIR", "/tmp"), "s3pvefs")


def _pidfile(mountpoint: str) -> str:
    return os.path.join(_run_dir(), hashlib.sha1(mountpoint.encode()).hexdigest()[:16] + ".pid")


def _status_socket(mountpoint: str) -> str:
    return _pidfile(mountpoint)[:-len(".pid")] + ".sock"


def cmd_status(args) -> int:
    """Uploads in progress, memory, local disk and S3 requests of the daemon on MOUNTPOINT."""
    from s3pvefs import status

    mountpoint = os.path.realpath(args.mountpoint)
    path = _status_socket(mountpoint)
    try:
        before = status.fetch(path)
        live = sys.stdout.isatty() and not args.json and not args.once
        while True:
            time.sleep(1.0)
            after = status.with_rates(before, status.fetch(path))
            if args.json:
                print(json.dumps(after, indent=2))
                return 0
            text = status.render(after, mountpoint)
            if not live:
                sys.stdout.write(text)
                return 0
            sys.stdout.write("\x1b[H\x1b[2J" + text + "(Ctrl-C to quit)\n")
            sys.stdout.flush()
            before = after
    except OSError:
        print(f"s3pvefs: no s3pvefs daemon answers for {mountpoint} (not mounted by s3pvefs, "
              f"or not as this user)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _write_pidfile(mountpoint: str) -> None:
    try:
        os.makedirs(_run_dir(), mode=0o700, exist_ok=True)
        with open(_pidfile(mountpoint), "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as e:
        log.warning("cannot write pid file: %s", e)


def _remove_pidfile(mountpoint: str) -> None:
    try:
        with open(_pidfile(mountpoint)) as f:
            if int(f.read().strip() or 0) == os.getpid():
                os.unlink(_pidfile(mountpoint))
    except (OSError, ValueError):
        pass


def cmd_umount(args) -> int:
    mountpoint = os.path.realpath(args.mountpoint)
    if not os.path.ismount(mountpoint):
        print(f"s3pvefs: {mountpoint} is not mounted", file=sys.stderr)
        return 1
    try:
        with open(_pidfile(mountpoint)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pid = None
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "umount"
    cmd = [tool, "-u", mountpoint] if "fusermount" in tool else [tool, mountpoint]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = r.stderr.strip() or f"{tool} failed"
        hint = " (files are still open: close them first; their data is committed when they close)" \
            if "busy" in msg.lower() else ""
        print(f"s3pvefs: cannot unmount {mountpoint}: {msg}{hint}", file=sys.stderr)
        return 1
    # The daemon commits anything still pending after the kernel lets go; wait for it.
    deadline = time.monotonic() + args.timeout
    while pid is not None and _alive(pid):
        if time.monotonic() > deadline:
            print(f"s3pvefs: unmounted, but the daemon (pid {pid}) is still finishing uploads "
                  f"after {args.timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.1)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has finished
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def cmd_ls(args) -> int:
    """Print what Proxmox would list in the bucket; errors as for mount (exit codes 2-5, 8)."""
    _named_config(args)
    config = build_config(args)  # with no BUCKET, the bucket of the --config file
    if args.debug:
        _setup_logging(args, background=False)
    else:  # nothing from the libraries on stderr: errors are the one line below
        logging.getLogger().handlers[:] = [logging.NullHandler()]
    import trio  # imported late: `s3pvefs --help` stays fast

    from s3pvefs.proxmox import render

    inventory = trio.run(_inventory, config)
    text = render.to_json(inventory) if args.json else render.to_table(inventory)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `s3pvefs ls | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


async def _inventory(config: Config):
    import botocore.exceptions

    from s3pvefs.bucketaccess import bucket_error, check_bucket, client_error
    from s3pvefs.errors import StoreError
    from s3pvefs.proxmox import inventory
    from s3pvefs.store.s3 import S3Store

    s = config.store
    async with contextlib.AsyncExitStack() as stack:
        try:  # aiobotocore creates the client, and looks for credentials, only here
            store = await stack.enter_async_context(S3Store.open(s))
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            raise client_error(e, config) from None
        await check_bucket(store, config)  # the same messages and exit codes as mount
        try:
            return await inventory.build(store, s.prefix, bucket=s.bucket,
                                         object_lock=bool(await store.detect_object_lock()))
        except StoreError as e:  # the bucket answered HEAD but not LIST or GET
            raise bucket_error(e, config, "listing") from None


def cmd_check(args) -> int:
    """The connectivity test of s3pvefs/check.py: 0 all passed, 1 a check failed."""
    from s3pvefs import check

    _named_config(args)
    config = build_config(args)  # with no BUCKET, the bucket of the --config file
    if args.debug:
        _setup_logging(args, background=False)
    else:  # nothing from the libraries: the report is the output
        logging.getLogger().handlers[:] = [logging.NullHandler()]
    import trio

    try:
        return trio.run(check.check, config, sys.stdout)
    except MountError as e:  # not expected: the steps report their failures themselves
        print(f"s3pvefs: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `s3pvefs check | head`: the probe objects were removed all the same
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "ls":
            return cmd_ls(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "check":
            return cmd_check(args)
        return cmd_umount(args)
    except ConfigError as e:
        print(f"s3pvefs: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MountError as e:
        print(f"s3pvefs: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
