"""The `p` hotkey through pynput, on a real X server (Xvfb) with keys sent by xdotool."""

from __future__ import annotations

import subprocess
import time

import cv2
import numpy as np
from conftest import cli_env, needs_x_server
from daemon_helpers import RunningDaemon

from privacycam.sources.synthetic import SyntheticSource

pytestmark = needs_x_server


def _key(display: str, keys: str) -> None:
    subprocess.run(["xdotool", "key", keys], env={"DISPLAY": display}, check=True)


def _privacy_after(daemon: RunningDaemon, display: str, keys: str) -> bool:
    _key(display, keys)
    time.sleep(0.5)
    return daemon.command("status")["privacy"]


def test_p_toggles_privacy_and_shift_p_does_not(display, runtime_dir, tmp_path):
    env = cli_env(XDG_RUNTIME_DIR=str(runtime_dir), DISPLAY=display)
    daemon = RunningDaemon(runtime_dir, "--input", "synthetic", "--output", "null", env=env)
    try:
        daemon.wait_until(lambda: daemon.command("status")["segmenter"] != "loading", 20, "the model")
        assert daemon.command("status")["privacy"] is True
        assert _privacy_after(daemon, display, "p") is False
        assert _privacy_after(daemon, display, "shift+p") is False  # modifiers must match exactly
        assert _privacy_after(daemon, display, "ctrl+p") is False
        assert _privacy_after(daemon, display, "p") is True
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
        assert _privacy_after(daemon, display, "b") is True
        assert _privacy_after(daemon, display, "ctrl+b") is True
        assert _privacy_after(daemon, display, "ctrl+alt+b") is False
    finally:
        daemon.stop()


def test_hotkey_changes_the_published_frames(display, runtime_dir, tmp_path):
    """Frames written while privacy is off equal the input; while on they are filtered."""
    env = cli_env(XDG_RUNTIME_DIR=str(runtime_dir), DISPLAY=display)
    out = tmp_path / "frames"
    daemon = RunningDaemon(runtime_dir, "--input", "synthetic", "--output", str(out), env=env)
    try:
        daemon.wait_until(lambda: daemon.command("status")["segmenter"] != "loading", 20, "the model")
        time.sleep(0.5)
        filtered_names = {p.stem for p in out.iterdir()}
        _key(display, "p")
        daemon.wait_until(lambda: daemon.command("status")["privacy"] is False, 5, "privacy off")
        time.sleep(0.5)
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
