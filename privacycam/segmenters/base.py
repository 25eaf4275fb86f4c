"""The one small interface every segmenter implements.

A segmenter turns an RGB image at its preferred input size into a person
confidence map: float32, same height and width as the input, values in [0, 1].
Everything else (region of interest, temporal smoothing, feathering, upsampling)
belongs to `privacycam.mask`, so backends stay small and swappable.

Optional, looked up with getattr by `privacycam.mask.Matter`: `segment_crop`
(same contract, for crops around people) with `crop_input_size` when that
differs from `input_size` (see segmenters/frame_and_crop.py, litert_pose.py),
`crops_hold_one_person` (True: crops around several people go to `segment`,
which must then take the crop model's input size; litert_pose.py),
`selects_people` and `asynchronous` (see segmenters/background_worker.py).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Segmenter(Protocol):
    name: str
    # (width, height) the model sees; the caller resizes to this before calling.
    input_size: tuple[int, int]

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        """Person confidence, float32 HxW in [0, 1], for an HxWx3 uint8 RGB image."""
        ...

    def close(self) -> None: ...


# Rounding in a model's last layer (or a resize inside it) may overshoot [0, 1] by
# a few float32 ulps; the matter clips those. Anything further out is refused.
RANGE_TOLERANCE = 1e-3


class SegmenterOutputError(RuntimeError):
    """A segmenter returned something that is not a usable mask."""


def checked_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Validate a segmenter's answer so garbage fails closed instead of leaking."""
    if not isinstance(mask, np.ndarray) or mask.shape[:2] != (height, width) or mask.size == 0:
        shape = getattr(mask, "shape", type(mask).__name__)
        raise SegmenterOutputError(f"mask of shape {shape}, expected {(height, width)}")
    if mask.dtype != np.float32:
        # The contract is float32: anything else would make the resize into the
        # matte's float32 buffer allocate a new array and keep stale values.
        raise SegmenterOutputError(f"mask of dtype {mask.dtype}, expected float32")
    if mask.ndim == 3:
        mask = mask[..., 0]
    # A confidence outside [0, 1] comes from a broken model, not a sure one: the frame
    # fails closed rather than being clipped into a plausible-looking mask.
    # min/max also catch NaN (every comparison with it is false), without a temporary array.
    low, high = mask.min(), mask.max()
    if not (low >= -RANGE_TOLERANCE and high <= 1.0 + RANGE_TOLERANCE):
        if not np.isfinite(mask).all():
            raise SegmenterOutputError("mask contains NaN or infinity")
        raise SegmenterOutputError(f"mask values from {low:.3g} to {high:.3g}, outside [0, 1]")
    return mask
