"""Data a killed daemon left in its write-back cache, dealt with at the next mount.

Each cached file is <id>.data (sparse: its allocated blocks are the ranges the
cache held, sparse.py) and <id>.json (the key, the base object it started from and
how much of the base still counts). At mount, before the filesystem is served:
- the base is still at the key (same ETag), or there was none and the key is still
  free: the file is committed as the cache has it (the held ranges are sent, the
  rest copied from the base server-side) and its cache files removed;
- S3 fails: left in place and tried again at the next mount (logged);
- someone changed the key meanwhile: nothing is uploaded over it; the data file is moved to <cache_dir>/recovered/ under a name made
  from the file's path, and the log says so by name. Never dropped silently.
A .data file without a journal belonged to a file that was unlinked: removed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass

from s3pvefs.config import WriteConfig
from s3pvefs.errors import EXIT_MOUNTPOINT, FsError, MountError, StoreError
from s3pvefs.store.base import ObjectStore
from s3pvefs.write.resume import Suspended
from s3pvefs.write.sparse import JOURNAL_VERSION, SparseFile, ensure_private_dir
from s3pvefs.write.uploadlog import ASIDE, HIDDEN, WRITING, UploadLog
from s3pvefs.write.writeback import upload_sparse

log = logging.getLogger(__name__)


@dataclass
class Recovered:
    path: str
    key: str | None
    bytes_local: int
    # "uploaded", "clean" (nothing to send), "kept" (moved aside), "retry" (S3 failed),
    # "aborted" (an upload of a file never closed), "lost" (kept data that cannot be read back)
    outcome: str
    kept_as: str | None = None


def lock_cache(directory: str) -> int:
    """Hold this mount's cache directory for the daemon's life: a second daemon for
    the same bucket and prefix would take the first one's files for leftovers."""
    ensure_private_dir(directory)
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MountError(f"another s3pvefs daemon uses {directory}: this bucket and prefix are "
                         f"mounted already on this node", EXIT_MOUNTPOINT) from None
    return fd


async def recover(store: ObjectStore, directory: str, recovered_dir: str, cfg: WriteConfig) -> list[Recovered]:
    if not os.path.isdir(directory):
        return []
    results = []
    names = sorted({f.rsplit(".", 1)[0] for f in os.listdir(directory) if f.endswith((".data", ".json"))})
    for name in names:
        data, journal = os.path.join(directory, name + ".data"), os.path.join(directory, name + ".json")
        if not os.path.exists(journal):
            _unlink(data)  # its file was unlinked before the daemon stopped
            continue
        try:
            with open(journal) as f:
                record = json.load(f)
            if record.get("version") != JOURNAL_VERSION or not os.path.exists(data):
                raise ValueError("unreadable journal")
        except (OSError, ValueError) as e:
            log.error("cache journal %s cannot be read (%s): left in place", journal, e)
            results.append(Recovered(name, None, 0, "kept", journal))
            continue
        if record["key"] is None:
            _unlink(data, journal)
            continue
        results.append(await _recover_one(store, directory, recovered_dir, name, record, cfg))
    return results


async def _recover_one(store: ObjectStore, directory: str, recovered_dir: str, name: str,
                       record: dict, cfg: WriteConfig) -> Recovered:
    s = SparseFile.reopen(directory, name, record)
    held = s.valid.total
    try:
        unchanged = not s.dirty and s.size == s.base_size == s.base_end
        info = await store.head(s.key)
        at_key = info.etag if info is not None else None
        if unchanged:
            s.remove()
            return Recovered(s.path, s.key, held, "clean")
        if at_key == s.base_etag and (s.base_etag is not None or s.base_end == 0):
            etag = s.base_etag

            async def fetch_base(start: int, end: int) -> bytes:
                return await store.get_range(s.key, start, end, etag)

            await upload_sparse(store, s.key, s, s.dirty, s.metadata, cfg, fetch_base)
            s.remove()
            log.warning("recovered %s: %d bytes written before the daemon stopped were not committed; "
                        "committed now", s.path, held)
            return Recovered(s.path, s.key, held, "uploaded")
        reason = "its object was changed by someone else since" if info is not None or s.base_etag \
            else "it is gone"
    except (StoreError, FsError, OSError) as e:  # S3 unwell: left in place for the next mount
        s.close()
        log.error("data of %s written before the daemon stopped is not committed yet (%s): "
                  "left in %s, tried again at the next mount", s.path, e, s.data_path)
        return Recovered(s.path, s.key, held, "retry")
    s.close()
    kept = _keep_aside(s, recovered_dir)
    log.error("data of %s written before the daemon stopped was NOT committed (%s): kept as %s "
              "(its journal: %s.json)", s.path, reason, kept, kept)
    return Recovered(s.path, s.key, held, "kept", kept)


def _keep_aside(s: SparseFile, recovered_dir: str) -> str:
    ensure_private_dir(recovered_dir)
    base = os.path.join(recovered_dir, s.path.replace("/", "_") or "file")
    target, n = base, 1
    while os.path.exists(target) or os.path.exists(target + ".json"):
        n += 1
        target = f"{base}.{n}"
    os.replace(s.data_path, target)
    os.replace(s.journal_path, target + ".json")
    return target


def _unlink(*paths: str) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


async def recover_uploads(store: ObjectStore, uploads: UploadLog, cfg: WriteConfig) -> list[Recovered]:
    """This daemon's uploads its predecessor did not finish (uploadlog.py): those still
    being written when it stopped are aborted now (their files were never closed, so
    nothing of them is committed); those whose data was kept after a failed commit are
    finished (resume.py), or left for the next mount if S3 still fails."""
    results = []
    for record in uploads.entries():
        key = record["key"]
        if record["state"] in (ASIDE, HIDDEN):
            try:
                if record["state"] == HIDDEN:  # unless another object was written there since
                    info = await store.head(key)  # (the same bytes again have the same ETag: and a later time)
                    if info is not None and info.etag == record["etag"] and info.last_modified <= record["started"]:
                        await store.delete(key)
                else:
                    await store.delete(key)
            except StoreError as e:
                log.error("could not delete %s, bytes kept for a file open when the daemon stopped: %s "
                          "(tried again at the next mount)", key, e)
                continue
            uploads.finished(record["id"])
            log.info("deleted %s: %s", key, "kept aside for a file open when its name was taken, left by the "
                     "daemon that stopped" if record["state"] == ASIDE else
                     "the object of a file unlinked while open when the daemon stopped")
            continue
        if record["state"] == WRITING:
            try:
                await store.abort_multipart(key, record["upload_id"])
            except StoreError as e:
                log.error("could not abort the unfinished upload of %s left by the daemon that stopped: %s "
                          "(tried again at the next mount)", key, e)
                results.append(Recovered(key, key, 0, "retry"))
                continue
            uploads.finished(record["id"])
            log.warning("aborted the unfinished upload of %s: the daemon stopped while it was being written "
                        "(nothing of it was committed)", key)
            results.append(Recovered(key, key, 0, "aborted"))
            continue
        kept = Suspended.from_record(record)
        try:
            await kept.resume(store, uploads, cfg)
        except StoreError as e:
            log.error("data of %s kept after a failed commit is still not committed (%s): tried again at the "
                      "next mount", kept.path, e)
            results.append(Recovered(kept.path, key, kept.spilled, "retry"))
            continue
        except OSError as e:
            log.error("data of %s kept after a failed commit is lost: its spill file %s cannot be read (%s)",
                      kept.path, kept.spill, e)
            await kept.discard(store, uploads)
            results.append(Recovered(kept.path, key, 0, "lost"))
            continue
        log.warning("committed %s: its data was kept after a commit failed before the daemon stopped", kept.path)
        results.append(Recovered(kept.path, key, kept.spilled, "uploaded"))
    return results
