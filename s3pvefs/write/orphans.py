"""Multipart uploads nobody will complete: a daemon killed (kill -9, power loss) in the
middle of a streamed file leaves its upload in the bucket, invisible to listings but
billed. At mount, uploads under the prefix that have had no part for
``stale_upload_idle`` seconds are aborted. Idle, not old: another node may be
streaming a multi-hour backup into the same bucket right now, adding parts every
few seconds; such an upload is left alone.
"""

from __future__ import annotations

import logging
import time

from s3pvefs.errors import StoreError
from s3pvefs.store.base import ObjectStore

log = logging.getLogger(__name__)


async def abort_stale_uploads(store: ObjectStore, prefix: str, idle: float,
                              now: float | None = None, keep: frozenset[str] = frozenset()) -> list[str]:
    """Abort uploads idle for at least `idle` seconds, but those in keep (this node's,
    holding data kept for a later commit); the keys they were for."""
    now = time.time() if now is None else now
    aborted = []
    try:
        uploads = await store.list_multipart(prefix)
    except StoreError as e:
        log.warning("could not look for unfinished uploads under %r: %s", prefix, e)
        return aborted
    for u in uploads:
        if u.upload_id in keep:
            continue
        try:
            if now - await store.last_activity(u.key, u.upload_id) < idle:
                continue
            await store.abort_multipart(u.key, u.upload_id)
        except StoreError as e:
            if e.code != "NoSuchUpload":  # completed or aborted meanwhile: fine
                log.warning("unfinished upload of %s: %s", u.key, e)
            continue
        aborted.append(u.key)
        log.warning("aborted an unfinished upload of %s (no part for %.0f s: its writer died)", u.key, idle)
    return aborted
