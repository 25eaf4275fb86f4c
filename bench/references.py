"""Runs a reference filter (not the product) on the frames `privacycam bench` uses; prints JSON.

    python -m bench.naive_reference --width 1280 --height 720 --frames 150 --fps 30
    python -m bench.lfbw_reference  --width 1280 --height 720 --frames 150 --fps 30

A reference reads the same source as `privacycam bench --input` (default: the
real-footage MJPEG clip, decoded frame by frame, so its decode is counted as a
camera's would be), filters each frame in one thread and converts the result to
I420 for the virtual camera. Paced (`--fps`), it waits for the next frame's due
time like a camera loop; a reference slower than the camera simply falls behind
(its fps says so). CPU time is that of the whole process after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from privacycam.bench import open_bench_source  # noqa: E402
from privacycam.config import Config, SegmenterConfig  # noqa: E402
from privacycam.segmenters import Segmenter, create_segmenter  # noqa: E402

WARMUP = 10

# frame (BGR) -> I420 planes for the sink, given the reference's segmenter
FrameFilter = Callable[[Segmenter, np.ndarray, int], np.ndarray]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    name: str,
    filter_frame: FrameFilter,
    segmenter_config: SegmenterConfig,
    width: int,
    height: int,
    frames: int,
    fps: float | None = None,
    source_spec: str = "real",
) -> dict:
    config = Config().with_overrides(camera={"width": width, "height": height})
    source = open_bench_source(source_spec, config, width, height, fps or 30.0, pixel_format="bgr")
    segmenter = create_segmenter(segmenter_config)
    try:
        for i in range(WARMUP):
            filter_frame(segmenter, _fitted(source.read().image, width, height), i * 33)
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        next_due = wall0
        for i in range(frames):
            image = _fitted(source.read().image, width, height)
            filter_frame(segmenter, image, (WARMUP + i) * 33)
            if fps:
                next_due += 1.0 / fps
                delay = next_due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_due = time.perf_counter()
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    finally:
        segmenter.close()
        source.close()
    return {
        "reference": name,
        "input": source.description,
        "width": width,
        "height": height,
        "frames": frames,
        "fps_target": fps,
        "fps": round(frames / wall, 1),
        "cpu_ms_per_frame": round(cpu * 1000 / frames, 2),
    }


def _fitted(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    from privacycam.compositing import cover

    return cover(image, width, height)


def main(name: str, filter_frame: FrameFilter, segmenter_config: SegmenterConfig) -> None:
    parser = argparse.ArgumentParser(description=f"measure the {name} reference; prints JSON")
    parser.add_argument("--input", default="real", help="real (default), synthetic, or a video file / folder")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--fps", type=float, help="pace like a camera at this rate")
    args = parser.parse_args()
    figures = measure(name, filter_frame, segmenter_config, args.width, args.height, args.frames, args.fps, args.input)
    print(json.dumps(figures))
