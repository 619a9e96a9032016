"""This daemon's multipart uploads, recorded on local disk until completed or aborted.

S3 keeps an unfinished multipart upload (invisible, billed) until someone completes
or aborts it. Every upload this daemon creates is written down here at once (a small
JSON file under cache_dir), and removed when it is completed or aborted, so that
after kill -9 or a power cut the next mount knows which unfinished uploads were its
own: those still being written are aborted at once (another node's are left to
stale_upload_idle), and those whose data was kept for a later try (``suspended``:
parts stored in S3, the rest in a spill file here) are finished. The objects of files
unlinked while open (``hidden``) and their copies kept aside once their name was taken
(``aside``) are recorded the same way, and deleted by the next mount: their last close
never came.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

from s3pvefs.write.sparse import ensure_private_dir

log = logging.getLogger(__name__)

WRITING, SUSPENDED, ASIDE, HIDDEN = "writing", "suspended", "aside", "hidden"


class UploadLog:
    def __init__(self, directory: str):
        self.directory = directory
        self._ready = False

    def _path(self, ident: str) -> str:
        return os.path.join(self.directory, hashlib.sha1(ident.encode()).hexdigest()[:20] + ".json")

    def _write(self, record: dict, durable: bool) -> None:
        if not self._ready:
            ensure_private_dir(self.directory)
            self._ready = True
        path = self._path(record["id"])
        tmp = path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
            json.dump(record, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def started(self, key: str, upload_id: str) -> None:
        """A new upload: aborted by the next mount unless completed, aborted or suspended first.
        (Not fsync'ed: a kill -9 keeps it; a power cut may lose it, and stale_upload_idle
        then aborts the upload.)"""
        try:
            self._write({"id": upload_id, "key": key, "upload_id": upload_id, "state": WRITING,
                         "started": time.time()}, False)
        except OSError as e:
            log.warning("cannot record the upload of %s in %s: %s", key, self.directory, e.strerror)

    def suspended(self, record: dict) -> None:
        """A file's data is kept for a later try (record: id -- its upload's id, or one of
        its own when no upload was made --, key, upload_id, what is stored and what is in
        the spill file); durable, raises OSError."""
        self._write({**record, "state": SUSPENDED}, True)

    def set_aside(self, key: str) -> None:
        """A copy of a file's bytes about to be made at key for its open handles: deleted
        by the next mount unless finished first (not fsync'ed, as ``started``)."""
        try:
            self._write({"id": key, "key": key, "upload_id": "", "state": ASIDE, "started": time.time()}, False)
        except OSError as e:
            log.warning("cannot record %s in %s: %s", key, self.directory, e.strerror)

    def hidden(self, key: str, etag: str) -> None:
        """The object (etag) of a file unlinked while open, deleted at its last close: the
        next mount deletes it unless that came (not fsync'ed, as ``started``)."""
        try:
            self._write({"id": "hidden:" + key, "key": key, "upload_id": "", "state": HIDDEN, "etag": etag,
                         "started": time.time()}, False)
        except OSError as e:
            log.warning("cannot record %s in %s: %s", key, self.directory, e.strerror)

    def unhidden(self, key: str) -> None:
        self.finished("hidden:" + key)

    def finished(self, ident: str) -> None:
        try:
            os.unlink(self._path(ident))
        except FileNotFoundError:
            pass

    def entries(self) -> list[dict]:
        if not os.path.isdir(self.directory):
            return []
        out = []
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)
                continue
            try:
                with open(path) as f:
                    record = json.load(f)
                record["id"], record["key"], record["upload_id"], record["state"]  # noqa: B018 - must be there
                out.append(record)
            except (OSError, ValueError, KeyError) as e:
                log.error("upload record %s cannot be read (%s): left in place", path, e)
        return out
