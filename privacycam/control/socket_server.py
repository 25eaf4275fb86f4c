"""The daemon's control socket: one JSON request per line, one JSON answer per line.

Requests: {"command": "toggle" | "on" | "off" | "status" | "reload"}. The socket
is 0600 in a 0700 folder of our own and only peers with our uid are answered, so
no other user can switch privacy off.

The server is an asyncio loop on one thread: a client that sends slowly, or not
at all, costs a coroutine rather than a thread, so many of them cannot use up
what a prompt `status` needs. asyncio also keeps accepting after the transient
accept() failures (out of file descriptors, buffers or memory: it waits
ACCEPT_RETRY_DELAY and tries again), which a hand-written accept loop would have
to get right itself. Commands run on a small thread pool, so a slow one (a
reload reading its file) never holds up the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from privacycam.errors import PrivacyCamError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
CLIENT_TIMEOUT_S = 1.0  # for a whole request: a client sending nothing, or a byte at a time, is cut off
DRAIN_S = 0.5
# Connections held at once (each is a file descriptor; the usual limit is 1024).
# At the limit the one that has waited longest for its request is dropped for the
# newcomer: a prompt client (its line arrives with it, and is read on the loop's
# next turn, when at most LISTEN_BACKLOG newer ones can have come) is then served
# even while hundreds of slow ones keep reconnecting.
MAX_CLIENTS = 256
LISTEN_BACKLOG = 128  # a burst of clients must not find the queue full (EAGAIN)
COMMAND_THREADS = 2
COMMANDS = ("toggle", "on", "off", "status", "reload")
# sun_path holds 108 bytes, the terminating NUL included (man 7 unix).
MAX_SOCKET_PATH_BYTES = 107
# Folders PrivacyCam makes for itself ($XDG_RUNTIME_DIR/privacycam, /tmp/privacycam-<uid>):
# never followed through a symlink, always 0700 and ours.
OWN_FOLDER_PREFIX = "privacycam"


def default_socket_path() -> Path:
    explicit = os.environ.get("PRIVACYCAM_SOCKET")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "privacycam" if runtime else Path(f"/tmp/privacycam-{os.getuid()}")
    return base / "control.sock"


def socket_path_problem(path: Path) -> str | None:
    """Why `path` cannot be a Unix socket address, or None."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        return f"control socket path {path} is {size} bytes long; a Unix socket path is at most {MAX_SOCKET_PATH_BYTES}"
    return None


def folder_problem(folder: Path) -> str | None:
    """Why the control folder is not safe to use (a symlink, another user's, open to others), or None.

    Our own folders are looked at without following a symlink; a folder named
    by the user (control.socket, $PRIVACYCAM_SOCKET) only has to be ours.
    """
    own = folder.name.startswith(OWN_FOLDER_PREFIX)
    try:
        info = folder.lstat() if own else folder.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"control folder {folder} cannot be checked ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode):
        return f"control folder {folder} is a symbolic link (to {os.readlink(folder)}), not a folder"
    if not stat.S_ISDIR(info.st_mode):
        return f"control folder {folder} is not a folder"
    if info.st_uid != os.getuid():
        return f"control folder {folder} belongs to another user (uid {info.st_uid})"
    if own and info.st_mode & 0o077:
        return f"control folder {folder} is open to other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid


_FOLDER_FIX = "set XDG_RUNTIME_DIR (a login session sets it) or PRIVACYCAM_SOCKET to a path you own"


class ControlServer:
    """Serves requests on a thread; `handler(command) -> dict` does the work."""

    def __init__(self, path: Path, handler: Callable[[str], dict]) -> None:
        self.path = path
        self._handler = handler
        self._sock = _bind(path)  # here, so a second daemon's refusal reaches the caller
        # Each client's connection, in the order they came -> whether its request is still unread.
        self._clients: dict[asyncio.StreamWriter, bool] = {}
        self._tasks: set[asyncio.Task] = set()
        self._accept_failing = False
        self._commands = concurrent.futures.ThreadPoolExecutor(COMMAND_THREADS, thread_name_prefix="control-command")
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._log_loop_problem)
        self._stopped = asyncio.Event()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="control-socket", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self.close()
            raise PrivacyCamError(f"control socket {path} cannot be served ({self._start_error})", _FOLDER_FIX)
        log.debug("control socket at %s", path)

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=2.0)
        self._commands.shutdown(wait=False, cancel_futures=True)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except Exception as exc:  # noqa: BLE001 - handed to the constructor, which raises it
            self._start_error = exc
        finally:
            self._started.set()
            self._loop.close()

    async def _main(self) -> None:
        server = await asyncio.start_unix_server(
            self._serve_client, sock=self._sock, limit=MAX_REQUEST_BYTES, backlog=LISTEN_BACKLOG
        )
        self._started.set()
        async with server:
            await self._stopped.wait()
            for writer in list(self._clients):
                writer.transport.abort()
            # (not cancelled: asyncio 3.11 logs an error for a cancelled client_connected_cb task)
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _log_loop_problem(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """One line instead of asyncio's traceback; accept() failures once until one succeeds again."""
        exc = context.get("exception")
        if context.get("message", "").startswith("socket.accept()"):
            if not self._accept_failing:
                log.warning("control socket cannot accept connections (%s); retrying every second", exc)
            self._accept_failing = True
            return
        if isinstance(exc, (OSError, asyncio.IncompleteReadError)):  # a client that went away mid-request
            log.debug("control client went away: %s", exc)
            return
        log.error("control socket: %s%s", context.get("message", "error"), f" ({exc})" if exc else "")

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._accept_failing:
            self._accept_failing = False
            log.info("control socket accepts connections again")
        if len(self._clients) >= MAX_CLIENTS and not self._drop_longest_waiting():
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await _reply(writer, {"ok": False, "error": "too many control clients at once; try again"})
            writer.close()
            return
        task = asyncio.current_task()
        self._tasks.add(task)
        self._clients[writer] = True
        try:
            await self._answer(reader, writer)
        except (OSError, asyncio.TimeoutError) as exc:
            log.debug("control client went away: %s", exc)
        finally:
            self._clients.pop(writer, None)
            self._tasks.discard(task)
            writer.close()

    def _drop_longest_waiting(self) -> bool:
        # dicts keep insertion order: the first client whose request is still unread waited longest
        waiting = next((writer for writer, unread in self._clients.items() if unread), None)
        if waiting is None:
            return False
        self._clients.pop(waiting)
        waiting.transport.abort()  # its read ends at once; its task finishes on its own
        return True

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if peer_uid(writer.get_extra_info("socket")) != os.getuid():
            await _reply(writer, {"ok": False, "error": "permission denied"})
            return
        try:
            request = _parse(await _read_request(reader))
            if writer not in self._clients:  # dropped for a newcomer meanwhile
                return
            self._clients[writer] = False  # read: no longer one to drop for a newcomer
            command = request.get("command") if isinstance(request, dict) else None
            if command not in COMMANDS:
                raise ValueError(f"unknown command {_short(command)}; expected one of {', '.join(COMMANDS)}")
            result = await asyncio.get_running_loop().run_in_executor(self._commands, self._handler, command)
            answer = {"ok": True, **result}
        except ValueError as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a failing command must still get its answer
            log.error("control command failed: %s: %s", type(exc).__name__, exc)
            answer = {"ok": False, "error": f"the daemon could not do that ({type(exc).__name__}: {exc})"}
        await _reply(writer, answer)
        await _drain(reader, writer)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.readuntil(b"\n"), CLIENT_TIMEOUT_S)
    except asyncio.IncompleteReadError as exc:  # the client closed without a newline: take what it sent
        return exc.partial
    except asyncio.LimitOverrunError:
        raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes") from None
    except asyncio.TimeoutError:
        raise ValueError(f"no complete request within {CLIENT_TIMEOUT_S:.0f} s") from None


def _parse(line: bytes) -> object:
    try:
        return json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("request is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"request is not JSON ({exc.msg})") from None
    except RecursionError:  # e.g. 2047 nested arrays: the C decoder gives up on the depth
        raise ValueError('request nested too deeply; send {"command": "status"}') from None


def _short(value: object) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


async def _reply(writer: asyncio.StreamWriter, answer: dict) -> None:
    writer.write(json.dumps(answer).encode() + b"\n")
    await asyncio.wait_for(writer.drain(), CLIENT_TIMEOUT_S)


async def _drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Swallow what an oversized request left unread, so closing does not reset the reply away."""
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        writer.write_eof()

        async def read_to_end() -> None:
            while await reader.read(MAX_REQUEST_BYTES):
                pass

        await asyncio.wait_for(read_to_end(), DRAIN_S)


def _own_private_folder(folder: Path) -> None:
    """Make (or take) our folder without ever following a symlink, and leave it 0700."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        problem = folder_problem(folder) or f"control folder {folder} cannot be opened ({exc.strerror})"
        raise PrivacyCamError(problem, _FOLDER_FIX) from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise PrivacyCamError(f"control folder {folder} belongs to another user (uid {info.st_uid})", _FOLDER_FIX)
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)  # on the folder we opened, not on whatever the name points at now
    finally:
        os.close(fd)


def _bind(path: Path) -> socket.socket:
    folder = path.parent
    problem = socket_path_problem(path)
    if problem:
        raise PrivacyCamError(problem, "set control.socket or PRIVACYCAM_SOCKET to a shorter path")
    if folder.name.startswith(OWN_FOLDER_PREFIX):
        folder.parent.mkdir(parents=True, exist_ok=True)
        _own_private_folder(folder)
    else:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.stat().st_uid != os.getuid():  # e.g. /tmp: never chmod a folder that is not ours alone
            raise PrivacyCamError(
                f"control folder {folder} belongs to another user", "set PRIVACYCAM_SOCKET to a path you own"
            )
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
    except OSError as exc:
        sock.close()
        raise PrivacyCamError(f"control socket {path} cannot be made ({exc.strerror})", _FOLDER_FIX) from None
    finally:
        os.umask(old_umask)
    sock.listen(LISTEN_BACKLOG)
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
