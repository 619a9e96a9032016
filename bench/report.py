"""The printed table: figures, ratios and targets from a results dict."""

from __future__ import annotations

MiB = 1 << 20
SYSTEMS = ("raw", "crt", "s3pvefs", "s3fs", "rclone")
GiB = 1 << 30


def _get(results: dict, system: str, what: str, key: str = "seconds"):
    rec = results.get("runs", {}).get(system, {}).get(what, {})
    return None if "error" in rec else rec.get(key)


def _fmt(v, digits=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ratio(a, b):
    return a / b if a is not None and b else None


def _faster(r) -> str:
    """r = other's time / s3pvefs's time."""
    if not r:
        return "-"
    return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"


def _requests(rec: dict | None, key: str = "requests") -> str:
    r = (rec or {}).get(key)
    if not r:
        return "-" if rec is None or "error" in (rec or {}) or key not in (rec or {}) else "n/a"
    ops = ", ".join(f"{op} {n}" for op, n in r["by_op"].items())
    return f"{r['total']} ({ops})" if ops else "0"


def render(results: dict) -> tuple[str, dict]:
    meta = results.get("meta", {})
    size = meta.get("size_bytes", 0)
    gib = size / (1 << 30)
    size_txt = f"{gib:g} GiB" if gib >= 1 else f"{size / MiB:g} MiB"
    runs = results.get("runs", {})
    derived: dict = {}
    rows: list[list[str]] = []
    verdicts: list[tuple[str, bool]] = []

    def verdict(name: str, ok: bool | None) -> str:
        if ok is None:
            return ""
        verdicts.append((name, ok))
        return "yes" if ok else "NO"

    # Throughput rows: higher is better; the reference is the faster client (aiobotocore or CRT).
    rtt = meta.get("rtt_ms")
    near = not rtt
    targets = {"write": (0.8 if near else 0.9, 1.3, 2.5), "read": (0.8 if near else 0.9, 1.0 if near else None, 2.0)}
    for what, label in (("write", "seq write"), ("read", "seq read")):
        rate = {s: _get(results, s, what, "mib_s") for s in SYSTEMS}
        if not any(rate.values()):
            continue
        best = max((rate[s] for s in ("raw", "crt") if rate[s]), default=None)
        of_best = _ratio(rate["s3pvefs"], best)
        vs_s3fs = _ratio(rate["s3pvefs"], rate["s3fs"])
        vs_rclone = _ratio(rate["s3pvefs"], rate["rclone"])
        derived[f"{what}_fraction_of_best_client"] = of_best
        derived[f"{what}_vs_s3fs"] = vs_s3fs
        derived[f"{what}_vs_rclone"] = vs_rclone
        frac, x_s3fs, cpu_cap = targets[what]
        ok = None
        if of_best is not None or vs_s3fs is not None:
            ok = ((of_best is None or of_best >= frac)
                  and (x_s3fs is None or vs_s3fs is None or vs_s3fs >= x_s3fs))
        want = f">={frac:.0%} of best client" + (f", >={x_s3fs:g}x s3fs" if x_s3fs else "")
        rows.append([f"{label} {size_txt} (MiB/s)", _fmt(rate["raw"]), _fmt(rate["crt"]), _fmt(rate["s3pvefs"]),
                     _fmt(rate["s3fs"]), _fmt(rate["rclone"]),
                     f"{of_best:.0%} of best" if of_best else "-",
                     f"{vs_s3fs:.2f}x" if vs_s3fs else "-", f"{vs_rclone:.2f}x" if vs_rclone else "-",
                     want, verdict(what, ok)])
        rec = runs.get("s3pvefs", {}).get(what, {})
        if "cpu_seconds" in rec and size:
            per = {s: (runs.get(s, {}).get(what, {}).get("cpu_seconds") or 0) / gib
                   if "cpu_seconds" in runs.get(s, {}).get(what, {}) else None for s in SYSTEMS}
            derived[f"{what}_cpu_seconds_per_gib"] = per["s3pvefs"]
            rows.append([f"{what}: CPU-s per GiB", _fmt(per["raw"], 2), _fmt(per["crt"], 2),
                         _fmt(per["s3pvefs"], 2), _fmt(per["s3fs"], 2), _fmt(per["rclone"], 2),
                         "", "", "", f"<={cpu_cap:g} (s3pvefs daemon)",
                         verdict(f"{what} CPU", per["s3pvefs"] <= cpu_cap)])

    w = runs.get("s3pvefs", {}).get("write", {})
    if "vm_hwm_bytes" in w:
        rss = w["vm_hwm_bytes"] / MiB
        disk = w["peak_disk_bytes"] / MiB
        peer = {s: runs.get(s, {}).get("write", {}) for s in ("s3fs", "rclone")}
        rows.append(["write: daemon peak RSS (MiB)", "", "", f"{rss:.0f}",
                     *(f"{p['vm_hwm_bytes'] / MiB:.0f}" if "vm_hwm_bytes" in p else "-" for p in peer.values()),
                     "", "", "", "<=300 MiB (at 10 GiB)", verdict("write RSS", rss <= 300)])
        rows.append(["write: peak local disk (MiB)", "", "", f"{disk:.0f}",
                     *(f"{p['peak_disk_bytes'] / MiB:.0f}" if "peak_disk_bytes" in p else "-" for p in peer.values()),
                     "", "", "", "no file data (< 1 MiB: the upload journal)",
                     verdict("write local disk", w["peak_disk_bytes"] < MiB)])
    r = runs.get("s3pvefs", {}).get("read", {})
    if "vm_hwm_bytes" in r:
        peer = {s: runs.get(s, {}).get("read", {}) for s in ("s3fs", "rclone")}
        rows.append(["read: daemon peak RSS (MiB)", "", "", f"{r['vm_hwm_bytes'] / MiB:.0f}",
                     *(f"{p['vm_hwm_bytes'] / MiB:.0f}" if "vm_hwm_bytes" in p else "-" for p in peer.values()),
                     "", "", "", "", ""])

    # Time rows: lower is better.
    mv, copy = _get(results, "s3pvefs", "rename"), _get(results, "raw", "rename")
    if mv is not None or copy is not None:
        x = _ratio(mv, copy)
        derived["rename_vs_raw_copy"] = x
        rows.append([f"rename {size_txt} (s)", _fmt(copy, 2), "", _fmt(mv, 2), "", "",
                     f"{x:.2f}x raw time" if x else "-", "", "", "< 2x raw copy",
                     verdict("rename", None if x is None else x < 2)])
    ls = {s: _get(results, s, "ls") for s in SYSTEMS}
    if any(v is not None for v in ls.values()):
        x = _ratio(ls["s3pvefs"], ls["raw"])
        derived["ls_vs_raw"] = x
        fs = _ratio(ls["s3fs"], ls["s3pvefs"])
        fr = _ratio(ls["rclone"], ls["s3pvefs"])
        n = meta.get("ls_entries", 10000)
        rows.append([f"ls -l {n:,} entries, cold (s)", _fmt(ls["raw"], 2), "", _fmt(ls["s3pvefs"], 2),
                     _fmt(ls["s3fs"], 2), _fmt(ls["rclone"], 2),
                     f"{x:.2f}x raw time" if x else "-", _faster(fs), _faster(fr), "<= 1.5x raw LIST",
                     verdict("ls", None if x is None else x <= 1.5)])
    cp = {s: _get(results, s, "cpr") for s in SYSTEMS}
    if any(v is not None for v in cp.values()):
        fs = _ratio(cp["s3fs"], cp["s3pvefs"])
        fr = _ratio(cp["rclone"], cp["s3pvefs"])
        derived["cpr_vs_s3fs"] = fs
        derived["cpr_vs_rclone"] = fr
        x = _ratio(cp["s3pvefs"], cp["raw"])
        derived["cpr_vs_raw"] = x
        n = meta.get("cpr_files", 2000)
        rows.append([f"cp -r {n:,} small files (s)", _fmt(cp["raw"]), "", _fmt(cp["s3pvefs"]), _fmt(cp["s3fs"]),
                     _fmt(cp["rclone"]), f"{x:.2f}x raw time" if x else "-", _faster(fs), _faster(fr),
                     ">= 5x s3fs", verdict("cp -r", None if fs is None else fs >= 5)])

    head = ["", "aiobotocore", "AWS CRT", "s3pvefs", "s3fs", "rclone", "s3pvefs vs", "vs s3fs", "vs rclone",
            "target", "met"]
    lines = _table([head] + rows, left=(0, 9))

    # Where the time and requests went.
    detail = [["phase", "system", "seconds", "peak RSS MiB", "peak disk MiB", "CPU s", "S3 requests"]]
    for what in ("write", "read", "rename", "ls", "cpr"):
        for s in SYSTEMS:
            if s in ("raw", "crt") and what not in ("write", "read"):
                continue
            rec = runs.get(s, {}).get(what)
            if not rec:
                continue
            if "error" in rec:
                detail.append([what, s, "error", "", "", "", rec["error"][:80]])
                continue
            if what == "ls":
                detail.append([what + " cold", s, _fmt(rec.get("cold_seconds"), 2), "", "", "",
                               _requests(rec, "cold_requests")])
                detail.append([what + " warm", s, _fmt(rec.get("warm_seconds"), 2), "", "", "",
                               _requests(rec, "warm_requests")])
                continue
            secs = _fmt(rec.get("seconds"), 2)
            if rec.get("cp_seconds") is not None and not rec.get("in_bucket_when_cp_returned", True):
                secs += f" (cp {rec['cp_seconds']:.1f})"
            detail.append([what, s, secs,
                           _fmt(rec["vm_hwm_bytes"] / MiB, 0) if "vm_hwm_bytes" in rec else "",
                           _fmt(rec["peak_disk_bytes"] / MiB, 0) if "peak_disk_bytes" in rec else "",
                           _fmt(rec.get("cpu_seconds"), 1) if "cpu_seconds" in rec else "",
                           "" if s in ("raw", "crt") else _requests(rec)])
    raw_ren = runs.get("raw", {}).get("rename", {})
    notes = []
    if raw_ren and "error" not in raw_ren:
        parts = [f"CopyObject {raw_ren['copy_object_seconds']:.2f} s"] if "copy_object_seconds" in raw_ren else []
        parts.append(f"parallel UploadPartCopy {raw_ren.get('upload_part_copy_seconds', 0):.2f} s")
        notes.append("raw rename reference = the faster of " + ", ".join(parts))
    if any(runs.get(s, {}).get(w, {}).get("in_bucket_when_cp_returned") is False
           for s in ("s3pvefs", "s3fs", "rclone") for w in ("write", "cpr")):
        notes.append("(cp N): cp returned after N s but the data reached the bucket later; "
                     "figures use the time until it was all in the bucket")
    if _get(results, "raw", "cpr") is not None:
        notes.append("raw cp -r reference = the same files PUT one after another, each waiting for the "
                     "previous (the floor for a sequential cp when close() returns only once the file is stored)")
    notes.append("S3 requests: counted in radosgw's log; CopyObject shows as PutObject, UploadPartCopy as UploadPart")

    rev = meta.get("s3pvefs", {})
    which = (f" + uncommitted changes {rev['diff_sha1']}" if "diff_sha1" in rev
             else f" ({rev['source']})" if "source" in rev else "")
    title = (f"s3pvefs {rev.get('commit', '?')}{which}"
             + (f" | RTT to S3 {rtt:g} ms (measured {meta.get('rtt_measured_ms') or 0:.1f})" if rtt else "")
             + f" | {meta.get('endpoint')} bucket {meta.get('bucket')} | {meta.get('host', {}).get('cpus')} CPUs"
             + f" | {meta.get('started', '')}")
    out = [title, "", lines, "", _table(detail, left=(0, 1)), ""] + notes
    if results.get("errors"):
        out += ["", "errors:"] + [f"  {e}" for e in results["errors"]]
    met = [n for n, ok in verdicts if ok]
    missed = [n for n, ok in verdicts if not ok]
    out += ["", f"targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}"]
    derived["targets_met"] = met
    derived["targets_missed"] = missed
    return "\n".join(out), derived


def _table(rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """Columns in `left` (and the last) are left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1
    lines = []
    for k, r in enumerate(rows):
        cells = [c.ljust(w) if i in left or i == last else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
