"""The `p` hotkey through pynput, on a real X server (Xvfb) with keys sent by xdotool."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from conftest import cli_env, needs_x_server
from daemon_helpers import RunningDaemon

from privacycam.control.hotkey import STOP_TIMEOUT_S, HotkeyListener
from privacycam.sources.synthetic import SyntheticSource

pytestmark = needs_x_server


@dataclass
class XServer:
    display: str
    process: subprocess.Popen

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def x_server() -> Iterator[XServer]:
    """A private Xvfb this test may kill; Xvfb picks a free display number itself (-displayfd)."""
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as announced:
        number = announced.readline().strip()  # written once the server accepts clients; "" if it died
    if not number:
        process.wait(10)
        pytest.fail("Xvfb did not start")
    yield XServer(f":{number}", process)
    if process.poll() is None:
        process.kill()
        process.wait(10)


def _key(display: str, keys: str) -> None:
    subprocess.run(["xdotool", "key", keys], env={"DISPLAY": display}, check=True)


def _hotkey_ready(daemon: RunningDaemon) -> None:
    daemon.wait_until(lambda: daemon.command("status")["segmenter"] != "loading", 20, "the model")
    daemon.wait_until(lambda: daemon.command("status")["hotkey"] == "ready", 20, "the hotkey listener")


def _toggles(daemon: RunningDaemon, display: str, keys: str) -> bool:
    """Press `keys`; the privacy state once it has flipped."""
    before = daemon.command("status")["privacy"]
    _key(display, keys)
    daemon.wait_until(lambda: daemon.command("status")["privacy"] is not before, 15, f"{keys} to toggle")
    return not before


def _ignored(daemon: RunningDaemon, display: str, keys: str, hotkey: str) -> bool:
    """Press `keys`, then the hotkey, in one go: the listener sees them in order, so once the state
    has flipped `keys` was handled too. True if only the hotkey toggled (a state flipped once)."""
    before = daemon.command("status")["privacy"]
    subprocess.run(["xdotool", "key", keys, hotkey], env={"DISPLAY": display}, check=True)
    daemon.wait_until(lambda: daemon.command("status")["privacy"] is not before, 15, f"{hotkey} after {keys}")
    return daemon.command("status")["privacy"] is not before


def test_p_toggles_privacy_and_shift_p_does_not(display, runtime_dir, tmp_path):
    env = cli_env(XDG_RUNTIME_DIR=str(runtime_dir), DISPLAY=display)
    daemon = RunningDaemon(runtime_dir, "--input", "synthetic", "--output", "null", env=env)
    try:
        _hotkey_ready(daemon)
        assert daemon.command("status")["privacy"] is True
        assert _toggles(daemon, display, "p") is False
        assert _ignored(daemon, display, "shift+p", "p")  # modifiers must match exactly
        assert _ignored(daemon, display, "ctrl+p", "p")
    finally:
        code, stderr = daemon.stop()
    assert code == 0
    assert "privacy off (hotkey)" in stderr and "privacy on (hotkey)" in stderr


def test_hotkey_with_modifiers(display, runtime_dir, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("privacy: {hotkey: b, hotkey_modifiers: [ctrl, alt]}\n")
    env = cli_env(XDG_RUNTIME_DIR=str(runtime_dir), DISPLAY=display)
    daemon = RunningDaemon(runtime_dir, "--config", str(config), "--input", "synthetic", "--output", "null", env=env)
    try:
        _hotkey_ready(daemon)
        assert _ignored(daemon, display, "b", "ctrl+alt+b")
        assert _ignored(daemon, display, "ctrl+b", "ctrl+alt+b")
        assert _toggles(daemon, display, "ctrl+alt+b") is False
    finally:
        daemon.stop()


def test_hotkey_changes_the_published_frames(display, runtime_dir, tmp_path):
    """Frames written while privacy is off equal the input; while on they are filtered."""
    env = cli_env(XDG_RUNTIME_DIR=str(runtime_dir), DISPLAY=display)
    out = tmp_path / "frames"
    daemon = RunningDaemon(runtime_dir, "--input", "synthetic", "--output", str(out), env=env)

    def frames_written() -> int:
        return daemon.command("status")["frames_out"]

    try:
        _hotkey_ready(daemon)
        daemon.wait_until(lambda: len([p for p in out.iterdir() if p.stem.isdigit()]) >= 3, 20, "filtered frames")
        filtered_names = {p.stem for p in out.iterdir()}
        _toggles(daemon, display, "p")
        written = frames_written()
        daemon.wait_until(lambda: frames_written() >= written + 3, 20, "frames after `p`")
    finally:
        daemon.stop()
    names = sorted(p.stem for p in out.iterdir() if not p.stem.startswith("placeholder"))
    last_filtered = max(filtered_names - {n for n in filtered_names if n.startswith("placeholder")})
    source = SyntheticSource(1280, 720)
    raw = {}
    for _index in range(int(names[-1]) + 1):
        frame = source.read()
        if frame.name in (names[-1], last_filtered):
            raw[frame.name] = frame.image.copy()
    assert np.array_equal(cv2.imread(str(out / f"{names[-1]}.png")), raw[names[-1]]), "after `p`: not the raw input"
    assert not np.array_equal(cv2.imread(str(out / f"{last_filtered}.png")), raw[last_filtered]), "before: not filtered"


def test_sigterm_stops_the_daemon_after_the_x_server_is_gone(x_server, runtime_dir):
    """A hotkey whose X connection died never blocks shutdown: exit 0 at once, no traceback."""
    env = cli_env(XDG_RUNTIME_DIR=str(runtime_dir), DISPLAY=x_server.display)
    daemon = RunningDaemon(runtime_dir, "--input", "synthetic", "--output", "null", env=env)
    try:
        _hotkey_ready(daemon)
        _toggles(daemon, x_server.display, "p")  # proves the listener is connected and running
        x_server.kill()
        assert daemon.command("status")["privacy"] is False  # still running without X
        daemon.process.terminate()
        # A bound on a hang, not a timing floor: a clean stop takes well under a second.
        _, stderr = daemon.process.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        _, stderr = daemon.process.communicate()
        raise AssertionError(f"daemon did not stop within 3 s of SIGTERM: {stderr}") from None
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.communicate()
    assert daemon.process.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "stopping (SIGTERM)" in stderr


def test_stop_returns_when_the_listener_died_before_it_was_ready(x_server, monkeypatch, caplog):
    """pynput's own stop() waits forever for a listener that lost X while it started."""
    monkeypatch.setenv("DISPLAY", x_server.display)
    import pynput.keyboard  # noqa: F401 - pynput connects to X once when imported: do it while X is there

    x_server.kill()  # the listener thread's own connections now fail at once
    with caplog.at_level(logging.INFO, logger="privacycam.control.hotkey"):
        listener = HotkeyListener("p", [], on_hotkey=lambda: None)
        stopper = threading.Thread(target=listener.stop, daemon=True)
        stopper.start()
        stopper.join(STOP_TIMEOUT_S + 2)  # a bound on a hang
    assert not stopper.is_alive(), "HotkeyListener.stop() hangs on a listener that never became ready"
    assert len(caplog.records) == 1, caplog.text  # one line saying so, not also "not ready"
    assert "hotkey is off: its X connection is gone" in caplog.text
