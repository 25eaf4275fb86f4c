"""Shared test fixtures: real data from ../shared, the CLI as a subprocess, small configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def sequence(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.fail(f"test data {path} missing: CI checks out ../shared beside the repo")
    return path


def read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, path
    return image


def first_frames(name: str, count: int, dest: Path) -> Path:
    """A folder with symlinks to the first `count` frames of a sequence."""
    dest.mkdir(parents=True, exist_ok=True)
    frames = sorted((sequence(name) / "frames").iterdir())[:count]
    for frame in frames:
        (dest / frame.name).symlink_to(frame)
    return dest


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `condition` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def laplacian_variance(image: np.ndarray, region: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(gray, cv2.CV_64F)[region].var())


@pytest.fixture
def runtime_dir(tmp_path_factory, monkeypatch) -> Path:
    """A private XDG_RUNTIME_DIR (short path: Unix socket paths are limited to 108 bytes)."""
    folder = Path(tmp_path_factory.mktemp("rt", numbered=True))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    monkeypatch.delenv("PRIVACYCAM_SOCKET", raising=False)
    return folder


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # No desktop of the developer's: tests that want an X display or a session bus pass their own.
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(name, None)
    env.update(extra)
    return env


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "privacycam", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
        check=False,
    )


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "privacycam", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or cli_env(),
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_user_config(tmp_path_factory, monkeypatch):
    """Tests never read the developer's own ~/.config/privacycam."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


needs_x_server = pytest.mark.skipif(
    not (shutil.which("Xvfb") and shutil.which("xdotool")),
    reason="needs Xvfb and xdotool (apt-get install xvfb xdotool; scripts/test.sh does this)",
)


@pytest.fixture
def display():
    """A private X server (Xvfb); its DISPLAY name."""
    number = 97
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while (
        subprocess.run(
            ["xdotool", "getmouselocation"], env={"DISPLAY": f":{number}"}, capture_output=True, check=False
        ).returncode
        != 0
    ):
        if time.monotonic() > deadline:
            server.kill()
            pytest.fail("Xvfb did not start")
        time.sleep(0.1)
    yield f":{number}"
    server.terminate()
    server.wait(5)
