"""I420 frames: the virtual camera's format, carried from the camera's MJPEG to the sink.

An I420 frame is one uint8 array of (height * 3 / 2, width): the Y plane
(height x width), then U and V (height/2 x width/2 each), as pyvirtualcam
sends it. Studio range (Y 16-235, U/V 16-240) and BT.601, the very matrix
OpenCV's COLOR_BGR2YUV_I420 uses, so a frame converted here matches one that
went through BGR within a grey level or two.

A JPEG holds full-range YCbCr (JFIF) at 4:2:0 or 4:2:2: `from_jpeg_planes`
maps it to studio range with one scale and offset per plane and halves 4:2:2
chroma vertically, with no colour conversion and no BGR frame on the way.
"""

from __future__ import annotations

import cv2
import numpy as np

# JFIF full range -> studio range: value * scale + offset.
_Y_SCALE, _Y_OFFSET = 219 / 255, 16.0
_C_SCALE = 224 / 255
_C_OFFSET = 128 * (1 - _C_SCALE)


def is_i420(image: np.ndarray) -> bool:
    """Composited and camera frames are BGR (h, w, 3) or I420 (h * 3 / 2, w)."""
    return image.ndim == 2


def frame_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of a BGR or I420 frame."""
    if is_i420(image):
        return image.shape[1], image.shape[0] * 2 // 3
    return image.shape[1], image.shape[0]


def empty(width: int, height: int) -> np.ndarray:
    return np.empty((height * 3 // 2, width), np.uint8)


def planes(i420: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes (writing them writes the frame)."""
    width, height = frame_size(i420)
    flat = i420.reshape(-1)
    luma = width * height
    chroma = (width // 2) * (height // 2)
    y = flat[:luma].reshape(height, width)
    u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
    return y, u, v


def from_jpeg_planes(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, out: np.ndarray) -> np.ndarray:
    """A decoded JPEG's full-range planes (4:2:0 or 4:2:2) into the I420 `out`.

    One saturating scale-and-offset per plane (0.1 ms for a 720p Y, a lookup
    table took 0.43); 4:2:2 chroma rows are averaged in pairs in the same call
    (cv2.resize with INTER_AREA took 1 ms for that: a 1 x 2 ratio is its slow path).
    """
    out_y, out_u, out_v = planes(out)
    cv2.convertScaleAbs(y, dst=out_y, alpha=_Y_SCALE, beta=_Y_OFFSET)
    for source, target in ((cb, out_u), (cr, out_v)):
        if source.shape[0] == target.shape[0]:
            cv2.convertScaleAbs(source, dst=target, alpha=_C_SCALE, beta=_C_OFFSET)
        else:  # 4:2:2: two chroma rows per output row
            half = _C_SCALE / 2
            cv2.addWeighted(source[0::2], half, source[1::2], half, _C_OFFSET, dst=target)
    return out


def from_yuyv(yuyv: np.ndarray) -> np.ndarray:
    """A YUYV (4:2:2, studio range already) camera frame, (h, w, 2), as a new I420 frame."""
    height, width = yuyv.shape[0] & ~1, yuyv.shape[1] & ~1
    out = empty(width, height)
    out_y, out_u, out_v = planes(out)
    cv2.extractChannel(yuyv[:height, :width], 0, dst=out_y)
    # channel 1 alternates U and V along each row; two rows per I420 chroma row, averaged
    chroma = yuyv[:height, :width, 1].reshape(height, width // 2, 2)
    for index, target in ((0, out_u), (1, out_v)):
        plane = np.ascontiguousarray(chroma[:, :, index])
        cv2.resize(plane, (width // 2, height // 2), dst=target, interpolation=cv2.INTER_AREA)
    return out


def to_bgr(i420: np.ndarray) -> np.ndarray:
    """The one conversion to BGR, for sinks that need it (files, preview) or a camera of another size."""
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def from_bgr(bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420, dst=out)


# The mask stage's input keeps at least this many lines: its work frame has 180
# (mask.resolution) and a model crop around a person 256 at most, upscaled at most 2x.
# Measured with bench/i420_quality.py (40 frames per clip): webcam framing at
# 720p, shrunk to 360 lines, J 0.818 -> 0.819, F 0.699 -> 0.696 (unchanged);
# the far DAVIS people at 480 lines, shrunk to 240, J 0.788 -> 0.755: so
# frames under 720 lines are not shrunk at all.
MASK_INPUT_MIN_LINES = 360


class ShrunkBgr:
    """An I420 frame shrunk by the largest power of two that keeps MASK_INPUT_MIN_LINES
    (720p and 1080p: half, 4K: a quarter, under 720 lines: not at all), as BGR: the
    mask stage's input, for a fraction of a full-size conversion."""

    def __init__(self) -> None:
        self._small_i420: np.ndarray | None = None
        self._bgr: np.ndarray | None = None

    def convert(self, i420: np.ndarray) -> np.ndarray:
        width, height = frame_size(i420)
        factor = 1
        while height // (factor * 2) >= MASK_INPUT_MIN_LINES:
            factor *= 2
        small_w, small_h = (width // factor) & ~1, (height // factor) & ~1
        if self._small_i420 is None or frame_size(self._small_i420) != (small_w, small_h):
            self._small_i420 = empty(small_w, small_h)
            self._bgr = np.empty((small_h, small_w, 3), np.uint8)
        if factor == 1:
            np.copyto(self._small_i420, i420)
        else:
            for source, target in zip(planes(i420), planes(self._small_i420), strict=True):
                cv2.resize(source, (target.shape[1], target.shape[0]), dst=target, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(self._small_i420, cv2.COLOR_YUV2BGR_I420, dst=self._bgr)

    @property
    def last_i420(self) -> np.ndarray | None:
        """The last frame given to `convert`, at that smaller size and still I420 (the blur starts from it)."""
        return self._small_i420
