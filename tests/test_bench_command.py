"""`privacycam bench` prints exactly the contracted JSON with sane figures (no timing thresholds)."""

from __future__ import annotations

import json

import pytest
from conftest import first_frames, run_cli

KEYS = {
    "width",
    "height",
    "frames",
    "fps_target",
    "fps",
    "cpu_ms_per_frame",
    "latency_ms",
    "stage_ms",
    "peak_rss_mb",
    "startup_ms",
    "dropped_frames",
}


def _bench(*args: str) -> dict:
    result = run_cli("bench", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold only the JSON object"
    return json.loads(lines[0])


@pytest.mark.parametrize("paced", [False, True])
def test_bench_json_contract(paced):
    args = ["--width", "320", "--height", "240", "--frames", "15"] + (["--fps", "30"] if paced else [])
    figures = _bench(*args)
    assert set(figures) == KEYS
    assert (figures["width"], figures["height"], figures["frames"]) == (320, 240, 15)
    assert figures["fps_target"] == (30 if paced else None)
    assert figures["fps"] > 0 and figures["cpu_ms_per_frame"] > 0
    latency = figures["latency_ms"]
    assert set(latency) == {"p50", "p95", "p99"} and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert set(figures["stage_ms"]) == {"capture", "segment", "mask", "composite", "sink"}
    assert figures["stage_ms"]["segment"] > 0 and figures["stage_ms"]["composite"] > 0
    assert 50 < figures["peak_rss_mb"] < 4000
    assert 0 < figures["startup_ms"] < 60_000
    assert figures["dropped_frames"] >= 0


def test_bench_on_real_frames_scaled_to_size(tmp_path):
    frames = first_frames("davis2016_lucia", 5, tmp_path / "in")
    figures = _bench("--input", str(frames), "--width", "640", "--height", "360", "--frames", "12")
    assert (figures["width"], figures["height"], figures["frames"]) == (640, 360, 12)


def test_bench_measures_odd_sizes_at_the_even_size_the_virtual_camera_publishes():
    # I420 needs even sides: the virtual camera publishes 320x240 for 321x241 frames
    figures = _bench("--width", "321", "--height", "241", "--frames", "5")
    assert (figures["width"], figures["height"], figures["frames"]) == (320, 240, 5)
