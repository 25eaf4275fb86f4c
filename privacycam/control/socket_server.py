"""The daemon's control socket: one JSON request per line, one JSON answer per line.

Requests: {"command": "toggle" | "on" | "off" | "status"}. The socket is 0600
in a 0700 folder and only peers with our uid are answered, so no other user can
switch privacy off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from privacycam.errors import PrivacyCamError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
CLIENT_TIMEOUT_S = 1.0  # for a whole request: a client sending nothing, or a byte at a time, is cut off
DRAIN_S = 0.5
# Clients served at once, each on its own thread so a stuck one delays nobody;
# beyond this they are turned away at once instead of piling up threads.
MAX_CLIENTS = 64
COMMANDS = ("toggle", "on", "off", "status", "reload")


def default_socket_path() -> Path:
    explicit = os.environ.get("PRIVACYCAM_SOCKET")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "privacycam" if runtime else Path(f"/tmp/privacycam-{os.getuid()}")
    return base / "control.sock"


class ControlServer:
    """Serves requests on a thread; `handler(command) -> dict` does the work."""

    def __init__(self, path: Path, handler: Callable[[str], dict]) -> None:
        self.path = path
        self._handler = handler
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._sock = _bind(path)
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()
        log.debug("control socket at %s", path)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                with connection, contextlib.suppress(OSError):
                    connection.settimeout(CLIENT_TIMEOUT_S)
                    _reply(connection, {"ok": False, "error": "too many control clients at once; try again"})
                continue
            threading.Thread(target=self._serve_client, args=(connection,), name="control-client", daemon=True).start()

    def _serve_client(self, connection: socket.socket) -> None:
        try:
            with connection:
                self._answer(connection)
        except OSError as exc:
            log.debug("control client went away: %s", exc)
        finally:
            self._slots.release()

    def _answer(self, connection: socket.socket) -> None:
        connection.settimeout(CLIENT_TIMEOUT_S)
        if _peer_uid(connection) != os.getuid():
            _reply(connection, {"ok": False, "error": "permission denied"})
            return
        try:
            request = _read_request(connection)
            command = request.get("command") if isinstance(request, dict) else None
            if command not in COMMANDS:
                raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
            answer = {"ok": True, **self._handler(command)}
        except (ValueError, UnicodeDecodeError, TimeoutError) as exc:
            answer = {"ok": False, "error": str(exc) or type(exc).__name__}
        _reply(connection, answer)
        _drain(connection)


def _drain(connection: socket.socket) -> None:
    """Swallow what an oversized request left unread, so closing does not reset the reply away."""
    connection.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + DRAIN_S
    with contextlib.suppress(OSError):
        while (remaining := deadline - time.monotonic()) > 0:
            connection.settimeout(remaining)
            if not connection.recv(MAX_REQUEST_BYTES):
                break


def _read_request(connection: socket.socket) -> object:
    data = b""
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete request within {CLIENT_TIMEOUT_S:.0f} s")
        connection.settimeout(remaining)
        chunk = connection.recv(MAX_REQUEST_BYTES + 1 - len(data))
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    return json.loads(data.split(b"\n", 1)[0].decode("utf-8"))


def _reply(connection: socket.socket, answer: dict) -> None:
    connection.sendall(json.dumps(answer).encode() + b"\n")


def _peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid


def _bind(path: Path) -> socket.socket:
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise PrivacyCamError(
            f"control folder {folder} belongs to another user", "set PRIVACYCAM_SOCKET to a path you own"
        )
    if folder.name.startswith("privacycam"):  # our own folder: tighten it; never chmod e.g. /tmp
        os.chmod(folder, 0o700)
    if path.exists():
        if _daemon_answers(path):
            raise PrivacyCamError(
                f"another PrivacyCam daemon is already running (control socket {path})",
                "stop it first (`systemctl --user stop privacycam` or `pkill -f 'privacycam run'`)",
            )
        path.unlink()  # stale socket from a daemon that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(MAX_CLIENTS)  # a burst of clients must not find the queue full (EAGAIN)
    sock.settimeout(0.5)
    return sock


def _daemon_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(CLIENT_TIMEOUT_S)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
