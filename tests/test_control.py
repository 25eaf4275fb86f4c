"""The running daemon's control surface: socket, CLI, signals, second-instance refusal."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time

import pytest
from conftest import cli_env, run_cli
from daemon_helpers import RunningDaemon


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
    [b"not json\n", b'{"command": "explode"}\n', b"\x00\xff\xfe binary\n", b"[1, 2]\n", b"x" * 10000, b""],
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
    time.sleep(1.0)
    daemon.config.write_text("background: {mode: [broken\n")
    daemon.process.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert daemon.command("status")["ok"] is True
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
