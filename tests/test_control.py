"""The running daemon's control surface: socket, CLI, signals, second-instance refusal."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import stat
import threading
from pathlib import Path

import psutil
import pytest
from conftest import cli_env, run_cli, wait_until
from daemon_helpers import RunningDaemon

from privacycam.control.client import send_command
from privacycam.control.socket_server import ControlServer
from privacycam.errors import PrivacyCamError


@pytest.fixture
def daemon(runtime_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("camera: {width: 320, height: 180, fps: 15}\n")
    running = RunningDaemon(runtime_dir, "--config", str(config), "--input", "synthetic", "--output", "null")
    running.config = config
    yield running
    if running.process.poll() is None:
        running.stop()


def _raw_request(path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)


def test_status_toggle_on_off_round_trip(daemon, runtime_dir):
    env = cli_env(XDG_RUNTIME_DIR=str(runtime_dir))
    status = json.loads(run_cli("status", "--json", env=env).stdout)
    assert status["privacy"] is True
    for key in (
        "source",
        "sink",
        "width",
        "height",
        "fps",
        "latency_ms",
        "segmenter",
        "consumer_watching",
        "last_error",
    ):
        assert key in status
    assert (status["width"], status["height"]) == (320, 180)
    assert run_cli("toggle", env=env).stdout.strip() == "privacy off"
    assert daemon.command("status")["privacy"] is False
    assert run_cli("on", env=env).stdout.strip() == "privacy on"
    assert run_cli("off", env=env).stdout.strip() == "privacy off"
    assert run_cli("off", env=env).stdout.strip() == "privacy off"
    assert daemon.command("status")["privacy"] is False
    code, stderr = daemon.stop()
    assert code == 0
    assert "privacy off (control socket)" in stderr and "privacy on (control socket)" in stderr


def test_socket_and_folder_permissions(daemon):
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o700


def test_second_daemon_refuses_while_first_runs(daemon, runtime_dir):
    result = run_cli("run", "--input", "synthetic", "--output", "null", env=cli_env(XDG_RUNTIME_DIR=str(runtime_dir)))
    assert result.returncode == 1
    assert "another PrivacyCam daemon is already running" in result.stderr
    assert "Traceback" not in result.stderr
    assert daemon.command("status")["ok"] is True  # the first one is unharmed


@pytest.mark.parametrize(
    "payload",
    [
        b"not json\n",
        b'{"command": "explode"}\n',
        b"\x00\xff\xfe binary\n",
        b"[1, 2]\n",
        b"x" * 10000,
        b"",
        b"[" * 2047 + b"]" * 2047 + b"\n",  # the C JSON decoder's RecursionError
        b'{"command": ' + b"[" * 2030 + b"]" * 2030 + b"}\n",
        b'{"command": {"command": "status"}}\n',
        b'{"command": "' + b"x" * 4000 + b'"}\n',
    ],
)
def test_malformed_requests_are_rejected_and_daemon_lives_on(daemon, payload):
    answer = _raw_request(daemon.socket, payload)
    assert answer["ok"] is False and answer["error"]
    assert daemon.command("status")["privacy"] is True


def test_sigusr1_toggles(daemon):
    daemon.process.send_signal(signal.SIGUSR1)
    daemon.wait_until(lambda: daemon.command("status")["privacy"] is False, 5, "SIGUSR1 to toggle privacy off")
    daemon.process.send_signal(signal.SIGUSR1)
    daemon.wait_until(lambda: daemon.command("status")["privacy"] is True, 5, "SIGUSR1 to toggle privacy on")
    _, stderr = daemon.stop()
    assert "privacy off (signal SIGUSR1)" in stderr


def test_sighup_reloads_good_config_and_rejects_broken_one(daemon, tmp_path):
    daemon.config.write_text("camera: {width: 320, height: 180, fps: 10}\nbackground: {mode: color}\n")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_until(lambda: daemon.command("status")["reloads_applied"] == 1, 20, "the reload to apply")
    daemon.config.write_text("background: {mode: [broken\n")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_until(lambda: daemon.command("status")["reloads_rejected"] == 1, 20, "the broken reload to be refused")
    status = daemon.command("status")
    assert status["ok"] is True and status["reloads_applied"] == 1
    code, stderr = daemon.stop()
    assert code == 0
    assert "configuration reloaded" in stderr
    # the background changed at once; the camera is opened once, and the log says so
    assert "camera.fps takes effect at the next start" in stderr
    assert "config reload (SIGHUP) rejected, keeping the running one" in stderr
    assert "broken YAML" in stderr


def test_sigterm_stops_cleanly_and_removes_socket(daemon):
    code, stderr = daemon.stop()
    assert code == 0
    assert "stopping (SIGTERM)" in stderr
    assert not daemon.socket.exists()
    assert "Traceback" not in stderr


def test_only_owner_can_connect(daemon):
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another user")
    pid = os.fork()
    if pid == 0:  # child: become nobody and try the socket
        try:
            os.setuid(65534)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.socket))
            os._exit(1)  # connected: permissions are broken
        except PermissionError:
            os._exit(0)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- issue 18, item 4: transient accept() failures and slow clients -------------------------------
class _StderrLines:
    """Collects a running daemon's log lines as they come, so a test can wait for one."""

    def __init__(self, process) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        wait_until(lambda: any(text in line for line in self.lines), timeout, f"the log line {text!r}")

    def stop(self, process) -> str:
        process.terminate()
        process.wait(15)
        self._thread.join(5)
        return "".join(self.lines)


def test_socket_keeps_serving_after_running_out_of_file_descriptors(daemon):
    # the model loads its file after the socket answers: without file descriptors it could not
    daemon.wait_until(lambda: daemon.command("status")["segmenter"] != "loading", 30, "the model to load")
    log = _StderrLines(daemon.process)
    target = psutil.Process(daemon.process.pid)
    soft, hard = target.rlimit(psutil.RLIMIT_NOFILE)
    target.rlimit(psutil.RLIMIT_NOFILE, (0, hard))  # every accept() gets EMFILE
    try:
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiting.settimeout(20)
        waiting.connect(str(daemon.socket))  # queued in the backlog; accept() fails on it
        waiting.sendall(b'{"command": "status"}\n')
        log.wait_for("control socket cannot accept connections", 20)
    finally:
        target.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))
    with waiting:
        answer = json.loads(waiting.makefile("rb").readline())
    assert answer["ok"] is True and answer["privacy"] is True
    assert send_command(daemon.socket, "toggle")["privacy"] is False
    stderr = log.stop(daemon.process)
    assert "control socket accepts connections again" in stderr
    assert "Traceback" not in stderr
    assert stderr.count("cannot accept connections") == 1  # one line, not one per retry


class _SlowSenders:
    """`count` clients of our own user that connect, then send a byte now and then, never a line.

    Each one that the daemon cuts off connects again at once, for as long as the test runs.
    """

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.connections = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._count = count
        self._top_up()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _top_up(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the daemon's queue of new connections is full
            while len(self._selector.get_map()) < self._count:
                self._connect()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(self.path))
        except BlockingIOError:
            sock.close()
            raise
        self._selector.register(sock, selectors.EVENT_READ)
        self.connections += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):  # the daemon answered or hung up: again
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
            self._top_up()
            for key in list(self._selector.get_map().values()):
                with contextlib.suppress(OSError):
                    key.fileobj.send(b" ")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()


@pytest.mark.parametrize("slow_clients", [100, 400])  # 400: more than the daemon holds at once
def test_status_answers_while_slow_clients_hold_on(daemon, slow_clients):
    senders = _SlowSenders(daemon.socket, slow_clients)
    try:
        wait_until(lambda: senders.connections > 2 * slow_clients, 30, "the slow clients to be cut off and reconnect")
        answers = [send_command(daemon.socket, "status") for _ in range(30)]
    finally:
        senders.close()
    assert [answer["ok"] for answer in answers] == [True] * 30, [a for a in answers if not a["ok"]][:1]
    assert daemon.command("status")["privacy"] is True


# -- issue 18, item 7: the control folder ------------------------------------------------------
def _handler(command: str) -> dict:
    return {"privacy": True}


def _fake_daemon(path: Path) -> socket.socket:
    """A listening socket where a daemon's would be, answering nothing: a client must not connect."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.setblocking(False)
    return server


def _was_contacted(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
        return True
    except BlockingIOError:
        return False


def test_server_refuses_an_own_folder_that_is_a_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    (tmp_path / "privacycam-1000").symlink_to(target)
    with pytest.raises(PrivacyCamError, match="is a symbolic link"):
        ControlServer(tmp_path / "privacycam-1000" / "control.sock", _handler)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # not chmodded through the link
    assert list(target.iterdir()) == []


def test_server_refuses_an_own_folder_another_user_made(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to make a folder that belongs to another user")
    folder = tmp_path / "privacycam-1000"
    folder.mkdir(mode=0o777)
    os.chown(folder, 12345, 12345)
    with pytest.raises(PrivacyCamError, match=r"belongs to another user \(uid 12345\)"):
        ControlServer(folder / "control.sock", _handler)
    assert list(folder.iterdir()) == []


def test_server_tightens_its_own_folder_and_serves(tmp_path):
    folder = tmp_path / "privacycam-1000"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    server = ControlServer(folder / "control.sock", _handler)
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert send_command(folder / "control.sock", "status") == {"ok": True, "privacy": True}
    finally:
        server.close()


def test_client_does_not_talk_through_a_symlinked_folder(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    listener = _fake_daemon(real / "control.sock")
    (tmp_path / "privacycam-1000").symlink_to(real)
    with listener:
        with pytest.raises(PrivacyCamError, match="is a symbolic link"):
            send_command(tmp_path / "privacycam-1000" / "control.sock", "status")
        assert not _was_contacted(listener)


def test_client_does_not_talk_in_a_folder_of_another_user(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to make a folder that belongs to another user")
    folder = tmp_path / "privacycam-1000"
    folder.mkdir(mode=0o700)
    listener = _fake_daemon(folder / "control.sock")
    os.chown(folder, 12345, 12345)
    with listener:
        with pytest.raises(PrivacyCamError, match=r"belongs to another user \(uid 12345\)"):
            send_command(folder / "control.sock", "status")
        assert not _was_contacted(listener)


def test_client_does_not_talk_to_a_server_of_another_user(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to run a server as another user")
    folder = tmp_path / "privacycam-1000"
    folder.mkdir(mode=0o700)
    path = folder / "control.sock"
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: bind as root in our folder, then listen and answer as uid 12345
        try:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            os.setuid(12345)
            server.listen(1)  # SO_PEERCRED records who called listen()
            os.write(ready_write, b"x")
            connection, _ = server.accept()
            connection.recv(4096)
            connection.sendall(b'{"ok": true, "privacy": false}\n')
            connection.close()
        finally:
            os._exit(0)
    try:
        os.read(ready_read, 1)
        with pytest.raises(PrivacyCamError, match=r"served by another user \(uid 12345\)"):
            send_command(path, "off")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_read)
        os.close(ready_write)


# -- issue 18, items 3 and 6: hostile configs on reload --------------------------------------------
def _alias_bomb(levels: int, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    lines.append("camera: [" + ", ".join([f"*l{levels - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _huge_png(path: Path) -> Path:
    """A PNG header claiming 40000x30000 pixels (over OpenCV's 2^30), with a few rows of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40000, 30000, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 5001 * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


HOSTILE_RELOADS = {
    # 432 bytes, 9^8 values: froze frames and socket for 10 s before (validating and printing it)
    "alias bomb": (_alias_bomb(7), "expands to more than 10000 values"),
    "3000 nested lists": ("camera: " + "[" * 3000 + "]" * 3000, "nested deeper than 16 levels"),
    "a 4400-digit integer": ("mask: {resolution: " + "9" * 4400 + "}", "a number with more than 32 digits"),
    "background over 2^30 pixels": ("background: {mode: image, image: huge.png}", "megapixels"),
}


@pytest.mark.parametrize("name", HOSTILE_RELOADS)
def test_hostile_reload_is_refused_in_one_line_and_frames_keep_flowing(daemon, name):
    text, expected = HOSTILE_RELOADS[name]
    _huge_png(daemon.config.parent / "huge.png")
    good = daemon.config.read_text()
    daemon.config.write_text(text)
    answer = daemon.command("reload")  # over the socket: the answer says why
    assert answer["ok"] is True and expected in answer["reload"], answer
    log = _StderrLines(daemon.process)
    daemon.process.send_signal(signal.SIGHUP)  # by signal: the log says why
    log.wait_for("config reload (SIGHUP) rejected", 30)
    frames = daemon.command("status")["frames_out"]
    daemon.wait_until(lambda: daemon.command("status")["frames_out"] > frames + 5, 30, "frames after the reload")
    daemon.config.write_text(good)
    assert "reloaded" in daemon.command("reload")["reload"]
    stderr = log.stop(daemon.process)
    assert "Traceback" not in stderr, stderr
    rejected = [line for line in stderr.splitlines() if "rejected" in line]
    assert len(rejected) == 2 and all(expected in line for line in rejected), stderr  # socket, SIGHUP
