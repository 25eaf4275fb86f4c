"""Is anyone reading the virtual camera? Other processes holding its device node open.

inotify (IN_OPEN / IN_CLOSE on the node) says *when* to look; /proc/*/fd says
*who* holds it, which stays right even when an event is missed. v4l2loopback
0.12 has no reader count in sysfs, and Python's stdlib has no inotify, so the
few inotify calls go through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import threading

log = logging.getLogger(__name__)

IN_OPEN = 0x20
IN_CLOSE = 0x08 | 0x10
IN_NONBLOCK = 0o4000
RESCAN_S = 5.0  # also look now and then, in case inotify is unavailable


def holder_pids(device: str, exclude_pid: int) -> list[int]:
    """The other processes that have `device` open (by /proc/*/fd)."""
    target = os.path.realpath(device)
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == exclude_pid:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    pids.append(int(pid))
                    break
            except OSError:
                continue
    return pids


def holders(device: str, exclude_pid: int) -> int:
    """How many other processes have `device` open."""
    return len(holder_pids(device, exclude_pid))


class ReaderWatch:
    """Keeps `watching` up to date on a thread."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.watching = holders(device, os.getpid()) > 0
        self._stop = threading.Event()
        self._fd = _inotify_watch(device)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="reader-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            watched = [self._wake_r] + ([self._fd] if self._fd is not None else [])
            ready, _, _ = select.select(watched, [], [], RESCAN_S)
            if self._fd in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._fd, 4096)  # drain; content does not matter
            watching = holders(self.device, os.getpid()) > 0
            if watching != self.watching:
                log.info("%s: %s", self.device, "a reader opened it" if watching else "no reader any more")
                self.watching = watching

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=RESCAN_S + 1)
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._fd = None


def _inotify_watch(path: str) -> int | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK)
        if fd < 0:
            return None
        if libc.inotify_add_watch(fd, os.fsencode(path), IN_OPEN | IN_CLOSE) < 0:
            os.close(fd)
            return None
        return fd
    except (OSError, AttributeError):
        log.debug("inotify unavailable; polling readers every %.0f s", RESCAN_S)
        return None
