"""A streamed file whose commit could not finish, kept until S3 takes it.

When S3 stays away past outage_patience (or refuses a part), a streamed file's bytes
are kept instead of dropped: the parts S3 stored stay in their multipart upload (not
aborted), and the bytes that were only in memory -- parts that failed and the tail
not sent yet -- go to a spill file next to the write-back caches (0600, fsync'ed),
recorded with the upload in the upload log (uploadlog.py). ``resume`` finishes the
file: the spilled pieces become the upload's missing parts and the upload is
completed (with no upload, the bytes are one PUT, or a new upload). The mount tries
again in the background until it works, and the next mount does at start-up if the
daemon stopped first.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field

import trio

from s3pvefs.config import WriteConfig
from s3pvefs.store.base import ObjectStore, PartEtag
from s3pvefs.write.sparse import ensure_private_dir
from s3pvefs.write.uploader import copy_object
from s3pvefs.write.uploadlog import UploadLog

log = logging.getLogger(__name__)


@dataclass
class Suspended:
    ident: str  # the upload's id, or one of its own when there is no upload
    key: str
    path: str
    size: int  # of the whole file
    metadata: dict[str, str]  # the file's, written once it is complete
    create_metadata: dict[str, str]  # the upload was created with (no times)
    upload_id: str | None
    parts: list[PartEtag] = field(default_factory=list)  # stored in S3
    copies: list[tuple[int, int, int]] = field(default_factory=list)  # (number, start, end) of the key to copy
    pieces: list[tuple[int, int, int]] = field(default_factory=list)  # (number, offset, size) in the spill file
    spill: str = ""
    explicit_times: bool = False  # times set while streaming: a metadata copy after completion

    @property
    def spilled(self) -> int:
        return sum(size for _, _, size in self.pieces)

    @classmethod
    def keep(cls, directory: str, uploads: UploadLog, *, key: str, path: str, size: int,
             metadata: dict[str, str], create_metadata: dict[str, str], upload_id: str | None,
             parts: list[PartEtag], copies: list[tuple[int, int, int]], pieces: list[tuple[int, bytes]],
             explicit_times: bool) -> "Suspended":
        """Write the pieces only memory held to a spill file and record everything
        (durably): from here on, nothing of the file depends on this process. Blocking:
        run it in a worker thread. Raises OSError (disk full: the caller says so)."""
        ensure_private_dir(directory)
        ident = upload_id or f"local-{uuid.uuid4().hex}"
        s = cls(ident, key, path, size, metadata, create_metadata, upload_id, list(parts), list(copies),
                explicit_times=explicit_times)
        s.spill = os.path.join(directory, f"{uuid.uuid4().hex}.spill")
        fd = os.open(s.spill, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            offset = 0
            for number, body in pieces:
                view = memoryview(body)
                while view:
                    view = view[os.pwrite(fd, view, offset + len(body) - len(view)):]
                s.pieces.append((number, offset, len(body)))
                offset += len(body)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            os.unlink(s.spill)
            raise
        os.close(fd)
        uploads.suspended(s.record())
        return s

    def record(self) -> dict:
        return {"id": self.ident, "key": self.key, "path": self.path, "size": self.size,
                "metadata": self.metadata, "create_metadata": self.create_metadata, "upload_id": self.upload_id,
                "parts": [[p.number, p.etag] for p in self.parts], "copies": [list(c) for c in self.copies],
                "pieces": [list(p) for p in self.pieces], "spill": self.spill,
                "explicit_times": self.explicit_times}

    @classmethod
    def from_record(cls, r: dict) -> "Suspended":
        return cls(r["id"], r["key"], r.get("path", r["key"]), r["size"], r["metadata"], r["create_metadata"],
                   r["upload_id"], [PartEtag(n, e) for n, e in r["parts"]], [tuple(c) for c in r["copies"]],
                   [tuple(p) for p in r["pieces"]], r["spill"], r.get("explicit_times", False))

    def whole_in_spill(self) -> bool:
        """Every byte of the file is in the spill file (nothing in S3's upload)."""
        return not self.parts and not self.copies and len(self.pieces) == 1

    def read(self, offset: int, size: int) -> bytes:
        """Bytes of the file (whole_in_spill only)."""
        _, start, length = self.pieces[0]
        end = min(offset + size, length)
        return self._read(start + offset, end - offset) if end > offset else b""

    def _read(self, offset: int, size: int) -> bytes:
        with open(self.spill, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"spill file {self.spill} is short")
        return data

    async def resume(self, store: ObjectStore, uploads: UploadLog, cfg: WriteConfig) -> None:
        """Finish the file at its key; raises StoreError (kept for the next try) or
        OSError (the spill file is gone: nothing can finish it)."""
        if self.upload_id is None and not self.copies and len(self.pieces) == 1:
            _, offset, size = self.pieces[0]
            await store.put(self.key, await trio.to_thread.run_sync(self._read, offset, size), self.metadata)
        else:
            if self.upload_id is None:
                self.upload_id = await store.create_multipart(self.key, self.create_metadata)
            for number, start, end in self.copies:
                self.parts.append(PartEtag(number, await store.upload_part_copy(
                    self.key, self.upload_id, number, self.key, start, end)))
            self.copies = []
            for number, offset, size in self.pieces:
                body = await trio.to_thread.run_sync(self._read, offset, size)
                self.parts.append(PartEtag(number, await store.upload_part(self.key, self.upload_id, number, body)))
            self.pieces = []
            await store.complete_multipart(self.key, self.upload_id, sorted(self.parts, key=lambda p: p.number))
            if self.explicit_times or {k: v for k, v in self.metadata.items()
                                       if k not in ("mtime", "ctime", "atime")} != self.create_metadata:
                await copy_object(store, self.key, self.key, self.size, self.metadata, cfg)
        self._forget(uploads)

    async def discard(self, store: ObjectStore, uploads: UploadLog) -> None:
        """The file is gone (unlinked, replaced): nothing of it is to be committed."""
        if self.upload_id is not None:
            try:
                await store.abort_multipart(self.key, self.upload_id)
            except Exception as e:  # noqa: BLE001 - left in the upload log: the next mount aborts it
                log.warning("could not abort the kept upload of %s: %s", self.key, e)
                self._remove_spill()
                return
        self._forget(uploads)

    def _remove_spill(self) -> None:
        try:
            os.unlink(self.spill)
        except FileNotFoundError:
            pass

    def _forget(self, uploads: UploadLog) -> None:
        self._remove_spill()
        uploads.finished(self.ident)
