"""Mask post-processing: from a segmenter's raw confidence to a stable, soft matte.

`Matter` owns one segmenter and turns each frame into a float32 alpha in [0, 1]
at the segmenter's resolution (the compositor upsamples it). `privacycam matte`,
`run` and `bench` all go through `Matter.alpha_for`, so what is measured is what
ships.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from privacycam.config import MaskConfig
from privacycam.segmenters.base import Segmenter, checked_mask


@dataclass
class TemporalSmoother:
    """Exponential moving average of the alpha with its own state buffer.

    The state is never the segmenter's output buffer (a classic bug: smoothing
    that silently stops because "previous" and "current" are the same array).
    """

    keep: float  # weight of the previous state, 0 = no smoothing
    _state: np.ndarray | None = None

    def update(self, alpha: np.ndarray) -> np.ndarray:
        if self._state is None or self._state.shape != alpha.shape or self.keep <= 0:
            self._state = alpha.astype(np.float32, copy=True)
        else:
            cv2.accumulateWeighted(alpha, self._state, 1.0 - self.keep)
        return self._state

    def reset(self) -> None:
        self._state = None


def feather(alpha: np.ndarray, sigma_px: float) -> np.ndarray:
    """Soften the edge; sigma in pixels of the alpha's own resolution."""
    if sigma_px < 0.3:
        return alpha
    return cv2.GaussianBlur(alpha, (0, 0), sigma_px)


class Matter:
    """frame (BGR uint8, any size) -> person alpha (float32 [0,1], segmenter size)."""

    def __init__(self, segmenter: Segmenter, config: MaskConfig) -> None:
        self.segmenter = segmenter
        self.config = config
        self._smoother = TemporalSmoother(config.smoothing)
        self._rgb: np.ndarray | None = None
        self.last_segment_ms = 0.0

    def alpha_for(self, frame: np.ndarray, timestamp_ms: int) -> np.ndarray:
        width, height = self.segmenter.input_size
        small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        if self._rgb is None or self._rgb.shape != small.shape:
            self._rgb = np.empty_like(small)
        cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=self._rgb)
        started = time.perf_counter()
        raw = self.segmenter.segment(self._rgb, timestamp_ms)
        self.last_segment_ms = (time.perf_counter() - started) * 1000
        raw = checked_mask(raw, height, width)
        alpha = self._smoother.update(np.clip(raw, 0.0, 1.0, dtype=np.float32))
        # feather is a fraction of the frame height, so the edge looks the same at any size
        return feather(alpha, self.config.feather * height)

    def reset(self) -> None:
        """Forget temporal state (e.g. after a camera reconnect or a scene cut)."""
        self._smoother.reset()

    def close(self) -> None:
        self.segmenter.close()


def upsample_alpha(alpha: np.ndarray, width: int, height: int, dst: np.ndarray | None = None) -> np.ndarray:
    """float [0,1] matte at segmenter size -> uint8 (255 = person) at frame size.

    Quantised at the small size first so the full-size step is a cheap uint8 resize.
    """
    small = cv2.convertScaleAbs(alpha, alpha=255.0)
    return cv2.resize(small, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)
