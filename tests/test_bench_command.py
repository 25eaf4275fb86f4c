"""`privacycam bench` prints exactly the contracted JSON with sane figures (no timing thresholds)."""

from __future__ import annotations

import json

import pytest
from conftest import cli_env, first_frames, run_cli

KEYS = {
    "input",
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


def _bench(*args: str, env: dict | None = None) -> dict:
    return json.loads(_bench_run(*args, env=env).stdout)


def _bench_run(*args: str, env: dict | None = None):
    result = run_cli("bench", *args, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold only the JSON object"
    return result


@pytest.mark.parametrize("paced", [False, True])
@pytest.mark.parametrize("source", ["real", "synthetic"])
def test_bench_json_contract(paced, source):
    args = ["--input", source, "--width", "320", "--height", "240", "--frames", "15"] + (
        ["--fps", "30"] if paced else []
    )
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


def test_bench_measures_real_mjpeg_footage_by_default_and_makes_the_clip_once(tmp_path):
    env = cli_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    first = _bench_run("--width", "320", "--height", "180", "--frames", "5", "--fps", "30", env=env)
    figures = json.loads(first.stdout)
    clip = tmp_path / "cache" / "privacycam" / "bench" / "sam2_juggle_unlabeled_320x180_q85.mjpeg"
    assert figures["input"] == f"MJPEG {clip}"
    assert clip.read_bytes()[:2] == b"\xff\xd8", "the clip is a stream of JPEG images, as a webcam sends"
    assert "making" in first.stderr
    made_at = clip.stat().st_mtime_ns
    again = _bench_run("--width", "320", "--height", "180", "--frames", "5", env=env)
    assert "making" not in again.stderr and clip.stat().st_mtime_ns == made_at


def test_bench_without_the_real_footage_says_what_to_give_instead(tmp_path):
    result = run_cli("bench", "--input", str(tmp_path / "nothing.mjpeg"), "--frames", "5")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "does not exist" in result.stderr
