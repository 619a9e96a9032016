"""Round-trip latency on one local TCP port, for benchmarks against a local S3 server.

This kernel has no netem qdisc, so: a network namespace of our own, an iptables NFQUEUE
rule on the port in each direction (--dport: requests, --sport: answers), and netdelay
(bench/netdelay/netdelay.c) holding each queued packet rtt/2 before accepting it, in
order. Both ends (the S3 server and its client, e.g. the s3pvefs daemon) run inside the
namespace through `prefix()`; a FUSE mount made there is seen outside as usual.

    with Latency(30, 9000) as lat:
        server = subprocess.Popen(lat.prefix() + ["moto_server", "-H", "127.0.0.1", "-p", "9000"])
        ...
        print(lat.measure_rtt())

CLI: python3 -m bench.latency --rtt 30ms --port 9000 -- CMD...
Needs root, iproute2, util-linux (nsenter), iptables, gcc, libnetfilter-queue-dev, curl.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

NETNS_DIR = Path("/run/netns")
PREFIX = "s3lat-"
BUILD = Path(__file__).resolve().parent / "netdelay" / "build.sh"
HEADER = Path("/usr/include/libnetfilter_queue/libnetfilter_queue.h")
# iptables-nft first (Debian 12's default, via the kernel's nft_compat), legacy second.
IPTABLES = (("iptables", "ip6tables"), ("iptables-legacy", "ip6tables-legacy"))
# INPUT, not OUTPUT: on loopback every packet passes each once, but in OUTPUT the sending
# socket still owns a held packet, so TCP small queues count all in-flight data as
# queued and throttle a bulk transfer (16 MiB/s at 30 ms); by INPUT loopback has
# orphaned it (87 MiB/s, then window-bound by tcp_wmem's 4 MiB).
CHAIN = "INPUT"
HOST_TAG = "s3pvefs-bench-latency"  # comment on host-mode rules, so a dead run's can be found
_SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
_serial = itertools.count()

# A listener for measure_rtt() when nothing listens on the port yet: a connect needs one.
_LISTENER = """import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); print("ok", flush=True)
while True: s.accept()[0].close()
"""


def _tool(name: str, package: str) -> str:
    path = shutil.which(name, path=_SBIN_PATH)
    if not path:
        raise RuntimeError(f"bench.latency: {name} is missing (apt-get install {package})")
    return path


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def _pid_alive(pid: int) -> bool:
    """A zombie counts as dead: a killed run whose parent has not reaped it yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def remove_stale(ip: str = "ip") -> None:
    """Delete s3lat-PID-* namespaces whose PID is dead (a crashed run), with what still runs in them."""
    for ns in NETNS_DIR.glob(PREFIX + "*"):
        m = re.fullmatch(PREFIX + r"(\d+)(-\d+)?", ns.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        # Its processes (netdelay, servers) belonged to the dead run: nothing else can reach them.
        for pid in _run([ip, "netns", "pids", ns.name]).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        _run([ip, "netns", "del", ns.name])


class Latency:
    """Delay TCP to and from 127.0.0.1:port (and [::1]:port) by rtt_ms/2 each way, inside a
    namespace of its own; run both ends there with prefix()."""

    def __init__(self, rtt_ms: float, port: int, queue: int = 0, host: bool = False):
        """host=True: no namespace; the rules go on this host's loopback for that port
        (for a server that cannot move into a namespace, e.g. the test Ceph RGW);
        prefix() is then empty. Only one such instance at a time."""
        if rtt_ms < 0 or not 0 < port < 65536:
            raise ValueError(f"bench.latency: bad rtt {rtt_ms} or port {port}")
        self.rtt_ms, self.port, self.queue = rtt_ms, port, queue
        self.host = host
        self._rules: list[list[str]] = []
        self.name = f"{PREFIX}{os.getpid()}-{next(_serial)}"
        self.iptables: str | None = None  # backend that took the rules: "iptables v1.8.9 (nf_tables)"
        self._netdelay: subprocess.Popen | None = None
        self._created = False
        self._ip = "ip"

    def prefix(self) -> list[str]:
        # nsenter --net, not `ip netns exec`: that also makes a new mount namespace, and a
        # FUSE mount made in it would be invisible outside.
        return [] if self.host else ["nsenter", f"--net={NETNS_DIR / self.name}"]

    def __enter__(self) -> Latency:
        if os.geteuid() != 0:
            raise RuntimeError("bench.latency: needs root (network namespaces, iptables)")
        ip = self._ip = _tool("ip", "iproute2")
        _tool("nsenter", "util-linux")
        _tool("curl", "curl")
        _tool("iptables", "iptables")
        _tool("gcc", "gcc")
        if not HEADER.exists():
            raise RuntimeError("bench.latency: libnetfilter-queue headers are missing "
                               "(apt-get install libnetfilter-queue-dev)")
        built = _run(["bash", str(BUILD)])
        if built.returncode:
            raise RuntimeError(f"bench.latency: building netdelay failed:\n{built.stderr}")
        binary = built.stdout.strip().splitlines()[-1]
        remove_stale(ip)
        try:
            if self.host:
                _remove_host_rules()  # of an earlier run that died
            else:
                self._check(_run([ip, "netns", "add", self.name]), "ip netns add")
                self._created = True
                self._check(_run(self.prefix() + [ip, "link", "set", "lo", "up"]), "lo up")
            self._start_netdelay(binary)
            self._add_rules()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start_netdelay(self, binary: str) -> None:
        self._netdelay = subprocess.Popen(
            self.prefix() + [binary, str(self.queue), f"{self.rtt_ms / 2:g}"],
            stdout=subprocess.PIPE, text=True)
        # Rules go in only once the queue is bound (with --queue-bypass an unbound queue
        # would let packets through undelayed, unnoticed).
        ready, _, _ = select.select([self._netdelay.stdout], [], [], 10)
        line = self._netdelay.stdout.readline() if ready else ""
        if line.strip() != "ready":
            raise RuntimeError(f"bench.latency: netdelay did not start (exit {self._netdelay.poll()})")

    def _add_rules(self) -> None:
        errors = []
        for names in IPTABLES:
            v4, v6 = tools = [shutil.which(n, path=_SBIN_PATH) for n in names]
            if not v4 or not v6:
                continue
            # --queue-bypass: should netdelay die, traffic flows undelayed instead of stopping.
            host_only = ["-i", "lo", "-m", "comment", "--comment", HOST_TAG] if self.host else []
            rules = [[tool, "-w", "-A", CHAIN, "-p", "tcp", direction, str(self.port), *host_only,
                      "-j", "NFQUEUE", "--queue-num", str(self.queue), "--queue-bypass"]
                     for tool in tools for direction in ("--dport", "--sport")]
            for rule in rules:
                r = _run(self.prefix() + rule)
                if r.returncode:
                    errors.append(f"{' '.join(rule)}: {r.stderr.strip()}")
                    break
                self._rules.append(rule)
            else:
                self.iptables = _run([v4, "--version"]).stdout.strip()
                return
            self._delete_rules()  # undo a half-done try
        raise RuntimeError("bench.latency: no iptables backend took the NFQUEUE rules "
                           "(kernel needs NETFILTER_XT_TARGET_NFQUEUE, NETFILTER_NETLINK_QUEUE):\n"
                           + "\n".join(errors))

    def _delete_rules(self) -> None:
        for rule in reversed(self._rules):
            _run(self.prefix() + [rule[0], "-w", "-D", *rule[3:]])
        self._rules = []

    @staticmethod
    def _check(r: subprocess.CompletedProcess, what: str) -> None:
        if r.returncode:
            raise RuntimeError(f"bench.latency: {what} failed: {r.stderr.strip()}")

    def _connect_ms(self) -> float | None:
        """curl's TCP connect time (one RTT) in ms; None if nothing listens on the port."""
        r = _run(self.prefix() + ["curl", "-s", "-o", "/dev/null", "--max-time", "10",
                                  "-w", "%{time_connect}", f"http://127.0.0.1:{self.port}/"])
        t = float(r.stdout or 0)
        if t > 0:  # curl may still fail later (e.g. our listener's empty reply): irrelevant
            return t * 1000
        if r.returncode == 7:
            return None
        raise RuntimeError(f"bench.latency: curl failed (exit {r.returncode})")

    def measure_rtt(self, samples: int = 5, listen: bool = False) -> float:
        """Median TCP connect time to 127.0.0.1:port inside the namespace, in ms (one RTT).
        listen=True: if nothing listens there yet, a throwaway listener does (opt-in: it
        would take the port from a server still starting)."""
        listener = None
        try:
            first = self._connect_ms()
            if first is None and listen:
                listener = subprocess.Popen(
                    self.prefix() + [sys.executable, "-c", _LISTENER, str(self.port)],
                    stdout=subprocess.PIPE, text=True)
                if listener.stdout.readline().strip() != "ok":
                    raise RuntimeError(f"bench.latency: could not listen on port {self.port}")
                first = self._connect_ms()
            times = [first] + [self._connect_ms() for _ in range(samples - 1)]
            if None in times:
                raise RuntimeError(f"bench.latency: nothing listens on port {self.port}")
            return statistics.median(times)
        finally:
            if listener:
                listener.kill()
                listener.wait()

    def __exit__(self, *exc) -> None:
        if self.host:  # rules first: with no netdelay, --queue-bypass lets packets through anyway
            self._delete_rules()
        if self._netdelay:
            self._netdelay.terminate()  # it accepts what it holds, then unbinds
            try:
                self._netdelay.wait(5)
            except subprocess.TimeoutExpired:
                self._netdelay.kill()
                self._netdelay.wait()
            self._netdelay.stdout.close()
            self._netdelay = None
        if self._created:
            # Takes the rules with it. Processes the caller left inside keep the namespace
            # alive, unnamed, until they exit.
            _run([self._ip, "netns", "del", self.name])
            self._created = False


def _remove_host_rules() -> None:
    """Rules a host-mode Latency left on this host (its process died)."""
    for names in IPTABLES:
        for tool in names:
            path = shutil.which(tool, path=_SBIN_PATH)
            if not path:
                continue
            listed = _run([path, "-w", "-S", CHAIN]).stdout.splitlines()
            for line in listed:
                if HOST_TAG in line and line.startswith("-A "):
                    _run([path, "-w", "-D", *shlex.split(line)[1:]])


def _parse_rtt(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad RTT {text!r} (e.g. 30ms, 0.03s, 30)")
    return float(m.group(1)) * (1000 if m.group(2) == "s" else 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.latency",
                                 description="Run CMD in a namespace where TCP on PORT has RTT added.")
    ap.add_argument("--rtt", type=_parse_rtt, required=True, help="round trip added, e.g. 30ms")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--queue", type=int, default=0, help="NFQUEUE number (per namespace)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD...")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given (after --)")
    # SIGTERM ends us through SystemExit, so the namespace is still removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with Latency(args.rtt, args.port, args.queue) as lat:
        print(f"bench.latency: {lat.name}: RTT on port {args.port} measured "
              f"{lat.measure_rtt(listen=True):.1f} ms (asked {args.rtt:g} ms; {lat.iptables})",
              file=sys.stderr, flush=True)
        return subprocess.call(lat.prefix() + cmd)


if __name__ == "__main__":
    sys.exit(main())
