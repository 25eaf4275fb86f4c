"""Start a real `privacycam run` daemon for tests and talk to it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import cli_env, start_cli, wait_until

from privacycam.control.client import send_command
from privacycam.errors import PrivacyCamError


class RunningDaemon:
    def __init__(self, runtime_dir: Path, *args: str, env: dict | None = None) -> None:
        self.socket = runtime_dir / "privacycam" / "control.sock"
        self.process = start_cli("run", *args, env=env or cli_env(XDG_RUNTIME_DIR=str(runtime_dir)))
        self.wait_until(lambda: (self.status() or {}).get("sink") is not None, 20, "the daemon to answer on its socket")

    def status(self) -> dict | None:
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited {self.process.returncode}: {self.process.stderr.read()}")
        try:
            return send_command(self.socket, "status")
        except PrivacyCamError:
            return None

    def command(self, command: str) -> dict:
        return send_command(self.socket, command)

    def wait_until(self, condition, timeout: float, what: str) -> None:
        wait_until(condition, timeout, what, interval=0.1)  # each poll is a socket round trip

    def stop(self, timeout: float = 15) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
            raise AssertionError(f"daemon did not stop on SIGTERM: {stderr}") from None
        return self.process.returncode, stderr
