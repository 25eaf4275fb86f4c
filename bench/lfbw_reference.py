"""A Linux-Fake-Background-Webcam-like filter, kept only as a yardstick for `bench/perf.py`.

What LFBW does per frame with its defaults, written down from its description
(not its code): MediaPipe's landscape selfie model on the whole frame, a hard
mask (confidence > 0.75), dilated and box-blurred a little, a full-frame
Gaussian blur of the background (k=21, sigma 7), a float blend, all in BGR,
then the conversion to the virtual camera's format (here I420).

    python -m bench.lfbw_reference [--width W --height H --frames N --fps F --input SRC]
"""

from __future__ import annotations

import cv2
import numpy as np

from bench.references import main
from privacycam.config import SegmenterConfig
from privacycam.segmenters import Segmenter

SEGMENTER = SegmenterConfig(model="landscape")
THRESHOLD = 0.75
DILATE_KERNEL = np.ones((5, 5), np.uint8)
MASK_BOX_BLUR = (10, 10)
BACKGROUND_KERNEL, BACKGROUND_SIGMA = (21, 21), 7.0


def lfbw_frame(segmenter: Segmenter, frame: np.ndarray, timestamp_ms: int) -> np.ndarray:
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    width, height = segmenter.input_size
    confidence = segmenter.segment(np.ascontiguousarray(cv2.resize(rgb, (width, height))), timestamp_ms)
    mask = (confidence > THRESHOLD).astype(np.uint8)
    mask = cv2.resize(mask, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
    mask = cv2.dilate(mask, DILATE_KERNEL, iterations=1)
    mask = cv2.blur(mask.astype(np.float32), MASK_BOX_BLUR)[..., None]
    background = cv2.GaussianBlur(frame, BACKGROUND_KERNEL, BACKGROUND_SIGMA)
    out = frame * mask + background * (1.0 - mask)
    return cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_BGR2YUV_I420)


if __name__ == "__main__":
    main("lfbw-like", lfbw_frame, SEGMENTER)
