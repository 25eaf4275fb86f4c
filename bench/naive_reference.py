"""The straightforward approach, kept only as a yardstick for `bench/perf.py` (not in the product).

Per frame: MediaPipe on the full frame, a full-resolution GaussianBlur (k=41),
a float32 blend. This is what most hobby filters do.
"""

from __future__ import annotations

import resource
import time

import cv2
import numpy as np

from privacycam.config import SegmenterConfig
from privacycam.segmenters import create_segmenter
from privacycam.sources.synthetic import SyntheticSource

WARMUP = 10


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def naive_frame(segmenter, frame: np.ndarray, timestamp_ms: int) -> np.ndarray:
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    width, height = segmenter.input_size
    mask = segmenter.segment(np.ascontiguousarray(cv2.resize(rgb, (width, height))), timestamp_ms)
    mask = cv2.resize(mask, (frame.shape[1], frame.shape[0]))[..., None]
    background = cv2.GaussianBlur(frame, (41, 41), 0)
    out = frame.astype(np.float32) * mask + background.astype(np.float32) * (1.0 - mask)
    yuv = cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_BGR2YUV_I420)
    return yuv


def measure(width: int, height: int, frames: int) -> dict:
    segmenter = create_segmenter(SegmenterConfig())
    source = SyntheticSource(width, height)
    try:
        for i in range(WARMUP):
            naive_frame(segmenter, source.read().image, i * 33)
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        for i in range(frames):
            naive_frame(segmenter, source.read().image, (WARMUP + i) * 33)
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    finally:
        segmenter.close()
    return {
        "width": width,
        "height": height,
        "frames": frames,
        "fps": round(frames / wall, 1),
        "cpu_ms_per_frame": round(cpu * 1000 / frames, 2),
    }
