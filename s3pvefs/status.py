"""`s3pvefs status MOUNTPOINT`: what the daemon is doing, from the daemon itself.

The daemon answers on a unix socket next to its pid file (/run/s3pvefs/<hash>.sock,
root only) with one JSON snapshot per connection: files not yet committed (streamed
or cached, bytes written / sent / confirmed stored, parts in flight), memory and
local disk in use, S3 requests and failures. The command polls it: rate and ETA come
from two snapshots a second apart, and on a terminal it redraws every second.
"""

from __future__ import annotations

import json
import os
import socket
import time

import trio

SCHEMA = "s3pvefs-status/1"


def snapshot(fs, store) -> dict:
    files = [{"path": path, "open_handles": handles, **progress}
             for path, handles, progress in fs.pending_files()]
    return {
        "schema": SCHEMA,
        "time": time.time(),
        "pid": os.getpid(),
        "files": sorted(files, key=lambda f: f["path"] or ""),
        # epoch seconds since when a data request has waited for S3 (an outage); None: none
        "waiting_for_s3_since": fs.commits.waiting_since(),
        "memory": {"write_used": fs.budget.used, "write_limit": fs.budget.limit,
                   "read_used": fs.read_budget.used, "read_limit": fs.read_budget.limit},
        "staging_bytes": fs.space.used,
        "cache": {"used": fs.space.used, "budget": fs.space.budget, "evicted": fs.space.evicted,
                  "write_backs": fs.space.write_backs},
        "requests": dict(getattr(store, "requests", {})),
        "errors": dict(getattr(store, "errors", {})),
        "retries": dict(getattr(store, "retries", {})),
        "bytes": {"sent": getattr(store, "bytes_sent", 0), "received": getattr(store, "bytes_received", 0)},
        # what carries part uploads / ranged GETs: "crt" (AWS CRT) or "python" (aiobotocore)
        "data_plane": getattr(store, "data_plane", "python"),
        "read_plane": getattr(store, "read_plane", "python"),
        # upload_limit / download_limit: the setting, the rate in force (None: unlimited),
        # seconds requests have waited for their turn
        "bandwidth": store.bandwidth.snapshot() if hasattr(store, "bandwidth") else None,
    }


async def serve(path: str, make_snapshot) -> None:
    """Answer every connection on path with one JSON snapshot (root only: 0600)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    try:
        async with listener:
            while True:
                stream = await listener.accept()
                async with stream:
                    try:
                        await stream.send_all(json.dumps(make_snapshot()).encode() + b"\n")
                    except trio.BrokenResourceError:
                        pass
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def fetch(path: str, timeout: float = 5.0) -> dict:
    """One snapshot from the daemon; OSError if it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def _size(n: float) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{int(n)} B"


def with_rates(before: dict, after: dict) -> dict:
    """after, each file with rate (bytes/s confirmed stored) from the two snapshots."""
    dt = max(after["time"] - before["time"], 1e-6)
    earlier = {f["path"]: f for f in before["files"]}
    for f in after["files"]:
        prev = earlier.get(f["path"])
        f["rate"] = max(0.0, (f["stored"] - prev["stored"]) / dt) if prev else None
        f["eta_seconds"] = (f["written"] - f["stored"]) / f["rate"] if f["rate"] else None
    return after


def _limit_line(direction: str, b: dict) -> str:
    if b["limit"] == "off":
        return f"{direction} unlimited"
    now = f"{_size(b['rate_now'])}/s now" if b["rate_now"] else "unlimited now"
    return f"{direction} {now} ({b['limit']}), {b['waited_seconds']:.0f} s waited"


def render(snap: dict, mountpoint: str) -> str:
    lines = [f"s3pvefs on {mountpoint} (pid {snap['pid']})"]
    if not snap["files"]:
        lines.append("no uploads pending")
    else:
        w = max(4, *(len(f["path"] or "(unlinked)") for f in snap["files"]))
        lines.append(f"{'FILE':{w}} {'KIND':9} {'WRITTEN':>10} {'STORED':>10} {'PARTS':>5} {'RATE':>11} "
                     f"{'ETA':>6}")
        for f in snap["files"]:
            rate = f.get("rate")
            rate_txt = f"{_size(rate)}/s" if rate else "-"
            left = f["written"] - f["stored"]
            eta = f"{left / rate:.0f} s" if rate else "-"
            lines.append(f"{f['path'] or '(unlinked)':{w}} {f['kind']:9} {_size(f['written']):>10} "
                         f"{_size(f['stored']):>10} {f['parts_in_flight']:>5} {rate_txt:>11} {eta:>6}")
        lines.append("(ETA: to store what is written so far; the writer may still be adding more)")
    if snap.get("waiting_for_s3_since"):
        since = snap["waiting_for_s3_since"]
        lines.append(f"waiting for S3 since {time.strftime('%H:%M:%S', time.localtime(since))} "
                     f"({snap['time'] - since:.0f} s): writes wait, up to outage_patience")
    for f in snap["files"]:
        if f.get("failed_since"):
            lines.append(f"{f['path'] or '(unlinked)'}: commit failed at "
                         f"{time.strftime('%H:%M:%S', time.localtime(f['failed_since']))}, kept and tried again "
                         f"in the background: {f.get('error')}")
    m = snap["memory"]
    lines.append(f"memory: writes {_size(m['write_used'])} of {_size(m['write_limit'])}, "
                 f"read-ahead {_size(m['read_used'])} of {_size(m['read_limit'])}; "
                 f"local cache {_size(snap['staging_bytes'])} of {_size(snap['cache']['budget'])}")
    requests = ", ".join(f"{k} {v}" for k, v in sorted(snap["requests"].items())) or "none"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(snap["errors"].items())) or "none"
    lines.append(f"S3 requests: {requests}")
    lines.append(f"S3 bytes: sent {_size(snap['bytes']['sent'])}, received {_size(snap['bytes']['received'])} "
                 f"(parts through {'the AWS CRT' if snap.get('data_plane') == 'crt' else 'aiobotocore'}, "
                 f"ranged GETs through {'the AWS CRT' if snap.get('read_plane') == 'crt' else 'aiobotocore'})")
    if snap.get("bandwidth"):
        lines.append("bandwidth: " + "; ".join(_limit_line(d, snap["bandwidth"][d]) for d in ("upload", "download")))
    lines.append(f"S3 failures (after retries): {errors}")
    retries = ", ".join(f"{k} {v}" for k, v in sorted(snap.get("retries", {}).items())) or "none"
    lines.append(f"S3 retries made by s3pvefs (botocore's and the CRT's own are not counted): {retries}")
    return "\n".join(lines) + "\n"
