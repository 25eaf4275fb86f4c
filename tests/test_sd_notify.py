"""Type=notify: READY=1 reaches systemd only once the first frame went out (PipeWire probes after that)."""

from __future__ import annotations

import socket

from conftest import cli_env
from daemon_helpers import RunningDaemon


def test_ready_comes_after_the_first_frame(runtime_dir):
    address = str(runtime_dir / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(address)
        manager.settimeout(30)
        env = cli_env(XDG_RUNTIME_DIR=str(runtime_dir), NOTIFY_SOCKET=address)
        daemon = RunningDaemon(runtime_dir, "--input", "synthetic", "--output", "null", env=env)
        try:
            message = manager.recv(256).decode()
            frames_out = daemon.command("status")["frames_out"]
        finally:
            code, stderr = daemon.stop()
    assert message == "READY=1"
    assert frames_out >= 1
    assert code == 0, stderr


def test_without_a_service_manager_nothing_is_sent(monkeypatch):
    from privacycam.control.sd_notify import notify, notify_ready_when

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    assert notify_ready_when(lambda: True, lambda: False) is None
