"""Tell systemd (Type=notify) that PrivacyCam is ready once the first frame reached the virtual camera.

With exclusive_caps=1 the loopback device reports capture ability only after
its writer sent a frame, and PipeWire makes a node for a V4L2 device only if it
can capture when first probed. "Ready" therefore means "first frame sent": the
user unit and WirePlumber's drop-in order WirePlumber after that (systemd/).

The protocol is one datagram to $NOTIFY_SOCKET; systemd-python would need
libsystemd headers to build, so these few lines are written out here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

POLL_S = 0.02


def notify(state: str) -> bool:
    """Send `state` (e.g. READY=1) to the service manager; False when not run by one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.debug("sd_notify %s: %s", state, exc)
        return False
    return True


def notify_ready_when(is_ready: Callable[[], bool], stopped: Callable[[], bool]) -> threading.Thread | None:
    """READY=1 as soon as `is_ready()`, from a thread; nothing without $NOTIFY_SOCKET."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None

    def wait() -> None:
        # The pipeline has no "first frame" event to wait on; this polls only until then.
        while not stopped():
            if is_ready():
                notify("READY=1")
                return
            time.sleep(POLL_S)

    thread = threading.Thread(target=wait, name="sd-notify", daemon=True)
    thread.start()
    return thread
