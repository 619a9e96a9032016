"""systemd's notify protocol (sd_notify): one datagram per state change to the socket
named by $NOTIFY_SOCKET, when systemd runs us as a Type=notify service. Without that
variable every call does nothing, so the daemon can call it unconditionally."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send "READY=1", "STOPPING=1", "STATUS=…" lines; True if a socket took them."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall("\n".join(fields).encode())
        return True
    except OSError as e:
        log.warning("could not notify systemd (%s): %s", path, e)
        return False
