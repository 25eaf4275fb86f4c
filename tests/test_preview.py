"""The preview window: beside the real output (`output.preview`) or as the output, never an abort without X."""

from __future__ import annotations

import subprocess

import numpy as np
from conftest import cli_env, laplacian_variance, needs_x_server, run_cli, start_cli, wait_until

from privacycam.sinks.preview import WINDOW
from privacycam.sources.synthetic import SyntheticSource

FRAMES = 90


def _window_image(display: str) -> np.ndarray | None:
    """What the preview window shows right now (BGR), or None while there is no such window."""
    from Xlib import X
    from Xlib.display import Display

    found = subprocess.run(
        ["xdotool", "search", "--name", WINDOW], env={"DISPLAY": display}, capture_output=True, text=True, check=False
    )
    if found.returncode != 0 or not found.stdout.split():
        return None
    server = Display(display)
    try:
        window = server.create_resource_object("window", int(found.stdout.split()[0]))
        geometry = window.get_geometry()
        pixels = window.get_image(0, 0, geometry.width, geometry.height, X.ZPixmap, 0xFFFFFFFF)
    finally:
        server.close()
    return np.frombuffer(pixels.data, np.uint8).reshape(geometry.height, geometry.width, 4)[:, :, :3]


@needs_x_server
def test_preview_shows_the_filtered_frames_beside_the_output(display, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output: {preview: true}\n")
    out = tmp_path / "frames"
    process = start_cli(
        "run", "--config", str(config), "--input", "synthetic", "--output", str(out), "--frames", str(FRAMES),
        env=cli_env(DISPLAY=display),
    )  # fmt: skip
    try:
        wait_until(lambda: out.is_dir() and len(list(out.iterdir())) >= FRAMES // 3, 60, "frames to be written")
        shown = _window_image(display)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "+ preview window" in stderr
    assert len(list(out.iterdir())) == FRAMES, "the real output must not lose frames to the preview"
    assert shown is not None, "no preview window while frames were sent"
    # The room's texture left of the figure: sharp in the camera's frame, blurred in the preview.
    raw = SyntheticSource(1280, 720).read().image
    room = np.zeros(raw.shape[:2], bool)
    room[250:470, 20:200] = True
    window_room = np.zeros(shown.shape[:2], bool)
    window_room[250:470, 20:200] = True
    assert shown[window_room].mean() > 40, "the preview shows no picture"
    assert laplacian_variance(shown, window_room) < laplacian_variance(raw, room) / 10


def test_preview_without_x_is_skipped_and_the_output_goes_on(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output: {preview: true}\n")
    out = tmp_path / "frames"
    result = run_cli("run", "--config", str(config), "--input", "synthetic", "--output", str(out), "--frames", "5")
    assert result.returncode == 0, result.stderr
    assert "output.preview is on, but the preview window cannot open" in result.stderr
    assert len(list(out.iterdir())) == 5


@needs_x_server
def test_window_image_is_none_without_the_window(display):
    assert _window_image(display) is None


def test_doctor_warns_when_the_preview_cannot_open(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output: {preview: true}\n")
    lines = run_cli("doctor", "--config", str(config)).stdout.splitlines()
    assert any(line.startswith("WARN  output.preview is on, but there is no X display") for line in lines), lines
    assert not any("output.preview" in line for line in run_cli("doctor").stdout.splitlines())
