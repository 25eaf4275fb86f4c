"""The straightforward approach, kept only as a yardstick for `bench/perf.py` (not in the product).

Per frame: MediaPipe on the full frame, a full-resolution GaussianBlur (k=41),
a float32 blend, BGR to I420. This is what most hobby filters do.

    python -m bench.naive_reference [--width W --height H --frames N --fps F --input SRC]
"""

from __future__ import annotations

import cv2
import numpy as np

from bench.references import main
from privacycam.config import SegmenterConfig
from privacycam.segmenters import Segmenter

SEGMENTER = SegmenterConfig()


def naive_frame(segmenter: Segmenter, frame: np.ndarray, timestamp_ms: int) -> np.ndarray:
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    width, height = segmenter.input_size
    mask = segmenter.segment(np.ascontiguousarray(cv2.resize(rgb, (width, height))), timestamp_ms)
    mask = cv2.resize(mask, (frame.shape[1], frame.shape[0]))[..., None]
    background = cv2.GaussianBlur(frame, (41, 41), 0)
    out = frame.astype(np.float32) * mask + background.astype(np.float32) * (1.0 - mask)
    return cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_BGR2YUV_I420)


if __name__ == "__main__":
    main("naive", naive_frame, SEGMENTER)
