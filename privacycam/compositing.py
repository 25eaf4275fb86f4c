"""Compositing: person from the frame, background blurred, replaced or coloured.

Hot path rules: every full-resolution buffer is allocated once per output size
and reused; the blur runs at reduced resolution; the blend is uint8 (OpenCV's
saturating multiply with scale), never float32 at full resolution.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np

from privacycam import i420
from privacycam.config import BackgroundConfig
from privacycam.errors import ConfigError
from privacycam.image_file import PictureError, read_picture
from privacycam.mask import HalvingPyramid, upscale_into

# The background blur runs on a smaller copy: a Gaussian of sigma s at full size
# looks the same as sigma s/k at 1/k size once upsampled, for ~1/k^2 of the work.
# k is chosen so the small sigma is about this many pixels: large enough that the
# bilinear upsample shows no blocks, small enough to stay cheap. Then the small
# copy has the same size at every output size (160x90 at the default strength),
# and the background looks the same at 720p, 1080p and 4K. A cap of 8 used to
# keep 1080p at 240x135 and 4K at 480x270: no closer to a full-size halo-free
# blur at 1080p (mean error 3.71 vs 3.73 grey levels), but 0.6 ms slower there
# and 8 ms slower at 4K.
SMALL_BLUR_SIGMA = 3.0
MAX_BLUR_DOWNSCALE = 32
# blur_strength is a sigma in pixels of a 720-line frame; other sizes scale it.
BLUR_REFERENCE_HEIGHT = 720
# Normalised-convolution floor: where almost no background is near (inside a
# large person region) fall back to the plain blur instead of dividing by ~0.
HALO_FREE_FLOOR = 0.02
# Alpha up to this counts as background when finding where to blend: at most
# 1.6 % of the sharp frame, which no one can see over the blur. The model's
# faint confidence around people would otherwise stretch the blended box: on
# real clips it shrinks by ~20 % (juggling, 1280x720: 41 % -> 32 % of the frame).
ALPHA_EPSILON = 4.0 / 255


# The last picture read, by file identity: a reload reads and checks it off the frame
# thread, and the compositor the pipeline then builds on the frame thread takes it
# from here instead of decoding a big picture there again.
_last_read: tuple[tuple, np.ndarray] | None = None
_last_read_lock = threading.Lock()


def load_background_image(path: Path) -> np.ndarray:
    """Read a picture as 8-bit BGR (read-only); grey, 16-bit, float and alpha images are converted."""
    global _last_read
    try:
        info = os.stat(path)
        key: tuple | None = (os.path.abspath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        key = None
    with _last_read_lock:
        if key is not None and _last_read is not None and _last_read[0] == key:
            return _last_read[1]
    image = _read_background_image(path)
    image.flags.writeable = False
    if key is not None:
        with _last_read_lock:
            _last_read = (key, image)
    return image


def _read_background_image(path: Path) -> np.ndarray:
    try:
        image = read_picture(path, cv2.IMREAD_UNCHANGED)
    except PictureError as exc:
        too_big = "megapixels" in str(exc)
        fix = "scale it down, e.g. to 3840x2160" if too_big else "set background.image to a PNG or JPEG file"
        problem = str(exc) if too_big else f"cannot be read as a picture ({str(exc).removeprefix('is ')})"
        raise ConfigError(f"background image {path} {problem}", fix) from None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        values = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if np.issubdtype(image.dtype, np.floating) and values.min() >= 0.0 and values.max() <= 1.0:
            image = np.round(values * 255).astype(np.uint8)  # float pictures (TIFF, EXR) are 0..1
        else:
            image = cv2.normalize(values, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] in (1, 2):  # grey, grey + alpha
        image = np.ascontiguousarray(image[..., 0])
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] != 3:
        raise ConfigError(
            f"background image {path} has {image.shape[2]} channels", "set background.image to a PNG or JPEG file"
        )
    return image


def cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to fill width x height, cropping the overflow (CSS object-fit: cover)."""
    src_h, src_w = image.shape[:2]
    scale = max(width / src_w, height / src_h)
    new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    x, y = (new_w - width) // 2, (new_h - height) // 2
    return np.ascontiguousarray(scaled[y : y + height, x : x + width])


class Compositor:
    """Blends person over background for frames of one size at a time."""

    def __init__(self, config: BackgroundConfig) -> None:
        self.config = config
        self._source_image = load_background_image(config.image) if config.mode == "image" else None
        self._size: tuple[int, int] | None = None

    def compose(self, frame: np.ndarray, alpha: np.ndarray, downscaled: np.ndarray | None = None) -> np.ndarray:
        """alpha: float32 [0,1] person matte at any resolution (upsampled here).

        frame: BGR, or I420 (`privacycam.i420`): then the result is I420 too, blurred
        and blended plane by plane, Y at full size and U/V at quarter size.
        downscaled: optionally this very frame already shrunk, in the frame's format (the
        mask stage's working image, or its shrunk I420 copy), so the blur need not shrink
        the full frame a second time.
        Returns an internal buffer, valid until the next call.
        """
        self._prepare(frame)
        out = self._output(frame)
        self._background(frame, alpha, out, downscaled)
        box = _person_box(alpha, self._full_size)
        if box is None:
            return out
        self._upsample_alpha_in(box, alpha)
        if i420.is_i420(frame):
            self._blend_planes(frame, box)
        else:
            self._blend_into_out(frame, box)
        return out

    @property
    def blurs(self) -> bool:
        """Whether the background comes from the frame (and `compose` can use a downscaled copy)."""
        return self.config.mode == "blur"

    def compose_hidden(self, frame: np.ndarray) -> np.ndarray:
        """Fail-closed frame: background only, the person hidden too (BGR or I420, as the frame)."""
        self._prepare(frame)
        return self._background(frame, None, self._output(frame))

    def _output(self, frame: np.ndarray) -> np.ndarray:
        """The output buffer for the frame's format, allocated on first use per size."""
        width, height = self._full_size
        if i420.is_i420(frame):
            if self._out_i420 is None:
                self._out_i420 = i420.empty(width, height)
            return self._out_i420
        if self._out is None:
            self._out = np.empty((height, width, 3), np.uint8)
            self._alpha3 = np.empty((height, width, 3), np.uint8)
        return self._out

    def _prepare(self, frame: np.ndarray) -> None:
        width, height = i420.frame_size(frame)
        if self._size == (width, height):
            return
        self._size = self._full_size = (width, height)
        shape = (height, width)
        self._alpha_u8 = np.empty(shape, np.uint8)
        self._alpha_small_u8: np.ndarray | None = None
        self._out: np.ndarray | None = None
        self._out_i420: np.ndarray | None = None
        self._half_size = (width // 2, height // 2)
        self._alpha_half_u8 = np.empty((height // 2, width // 2), np.uint8)
        self._plane_scratch = np.empty(shape, np.uint8)
        sigma = self.config.blur_strength * height / BLUR_REFERENCE_HEIGHT
        downscale = int(np.clip(sigma / SMALL_BLUR_SIGMA, 1, MAX_BLUR_DOWNSCALE))
        small_w = max(8, round(width / downscale))
        small_h = max(8, round(height / downscale))
        self._small_size = (small_w, small_h)
        self._small_sigma = max(0.8, sigma * small_h / height)
        self._small_u8 = np.empty((small_h, small_w, 3), np.uint8)
        self._small_planes = [np.empty((small_h, small_w), np.uint8) for _ in range(3)]
        self._pyramids: dict[tuple[int, int], HalvingPyramid] = {}  # per source size: the frame, the mask's copy
        self._small = np.empty((small_h, small_w, 3), np.float32)
        self._weight = np.empty((small_h, small_w), np.float32)
        self._fixed_bg_i420: np.ndarray | None = None
        if self.config.mode == "image":
            self._fixed_bg = cover(self._source_image, width, height)
        elif self.config.mode == "color":
            self._fixed_bg = np.empty((*shape, 3), np.uint8)
            self._fixed_bg[:] = self.config.color[::-1]  # RGB in the config, BGR in OpenCV

    def _background(
        self, frame: np.ndarray, alpha: np.ndarray | None, out: np.ndarray, downscaled: np.ndarray | None = None
    ) -> np.ndarray:
        """Writes the full-size background into `out` and returns it."""
        if not self.blurs:
            np.copyto(out, self._fixed_background_for(frame))
            return out
        if i420.is_i420(frame):
            return self._blurred_planes(frame if downscaled is None else downscaled, alpha, out)
        # Shrinking the full frame is the blur's biggest cost (0.8 ms at 720p):
        # start from the smaller copy when there is one at least the blur's size.
        small_w, small_h = self._small_size
        usable = downscaled is not None and downscaled.shape[1] >= small_w and downscaled.shape[0] >= small_h
        source = downscaled if usable else frame
        # Exact halvings, then one short linear step: INTER_AREA at a ratio that
        # is not a whole number takes its slow path (0.57 ms for 427x240 -> 160x90).
        height, width = source.shape[:2]
        pyramid = self._pyramids.get((width, height))
        if pyramid is None:
            pyramid = self._pyramids[(width, height)] = HalvingPyramid(width, height, small_w, small_h)
        pyramid.set_frame(source)
        pyramid.resize_region(0, 0, width, height, self._small_u8)
        upscale_into(self._blur_small(alpha), out, self._full_size)
        return out

    def _fixed_background_for(self, frame: np.ndarray) -> np.ndarray:
        if not i420.is_i420(frame):
            return self._fixed_bg
        if self._fixed_bg_i420 is None:
            self._fixed_bg_i420 = i420.from_bgr(self._fixed_bg)
        return self._fixed_bg_i420

    def _blurred_planes(self, frame: np.ndarray, alpha: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        """The blurred background of an I420 frame (or a smaller copy of it): Y, U and V shrunk
        to the blur's one small size (so one halo-free blur serves all three), then each
        enlarged to its plane's size in `out`."""
        small_w, small_h = self._small_size
        for plane, small in zip(i420.planes(frame), self._small_planes, strict=True):
            # whole-number ratios at the usual sizes (720p, from the shrunk copy: 4 for Y, 2 for
            # U/V): INTER_AREA's fast path. From the shrunk copy: 0.35 ms less at 720p than from the frame.
            cv2.resize(plane, (small_w, small_h), dst=small, interpolation=cv2.INTER_AREA)
        cv2.merge(self._small_planes, dst=self._small_u8)
        blurred = self._blur_small(alpha)
        half = self._half_size
        for channel, (plane, small) in enumerate(zip(i420.planes(out), self._small_planes, strict=True)):
            cv2.extractChannel(blurred, channel, dst=small)
            upscale_into(small, plane, self._full_size if channel == 0 else half)
        return out

    def _blur_small(self, alpha: np.ndarray | None) -> np.ndarray:
        """Blur `_small_u8` (3 channels of any colour space); uint8 result at the small size."""
        np.copyto(self._small, self._small_u8)
        sigma = self._small_sigma
        blurred = _blur(self._small, sigma)
        if alpha is not None:
            # Halo-free blur (normalised convolution): blur only background pixels
            # and divide by how much background each neighbourhood had, so the
            # person's colours do not smear into the blurred background.
            cv2.resize(alpha, self._small_size, dst=self._weight, interpolation=cv2.INTER_AREA)
            np.subtract(1.0, self._weight, out=self._weight)
            weighted = _blur(self._small * self._weight[..., None], sigma)
            density = _blur(self._weight, sigma)
            weighted += blurred * HALO_FREE_FLOOR
            density += HALO_FREE_FLOOR
            blurred = weighted / density[..., None]
        return cv2.convertScaleAbs(blurred)

    def _blend_planes(self, frame: np.ndarray, box: tuple[slice, slice]) -> None:
        """The I420 blend inside the person's box: Y with the full-size matte, U/V with the
        matte upsampled once more, to their quarter size (within the half-size box)."""
        rows, cols = box
        half_rows = slice(rows.start // 2, (rows.stop + 1) // 2)
        half_cols = slice(cols.start // 2, (cols.stop + 1) // 2)
        upscale_into(
            self._alpha_small_u8,
            self._alpha_half_u8[half_rows, half_cols],
            self._half_size,
            (half_cols.start, half_rows.start),
        )
        frame_planes, out_planes = i420.planes(frame), i420.planes(self._out_i420)
        for index, (source, target) in enumerate(zip(frame_planes, out_planes, strict=True)):
            region, weights = (box, self._alpha_u8) if index == 0 else ((half_rows, half_cols), self._alpha_half_u8)
            _blend_plane(source[region], target[region], weights[region], self._plane_scratch[region])

    def _upsample_alpha_in(self, box: tuple[slice, slice], alpha: np.ndarray) -> None:
        """`upsample_alpha`, but only for the full-size pixels inside box:
        0.07 ms instead of 0.37 ms for a whole 720p frame."""
        if self._alpha_small_u8 is None or self._alpha_small_u8.shape != alpha.shape:
            self._alpha_small_u8 = np.empty(alpha.shape, np.uint8)
        cv2.convertScaleAbs(alpha, dst=self._alpha_small_u8, alpha=255.0)
        rows, cols = box
        upscale_into(self._alpha_small_u8, self._alpha_u8[rows, cols], self._full_size, (cols.start, rows.start))

    def _blend_into_out(self, frame: np.ndarray, box: tuple[slice, slice]) -> None:
        """out = frame * a + out * (1 - a) inside the person's box; outside it a == 0."""
        rows, cols = box
        # One 3-channel scratch buffer serves as 1 - a, then a, then frame * a
        # (a full-size one fewer: 25 MB at 4K).
        weights = self._alpha3[rows, cols]
        cv2.bitwise_not(self._alpha_u8[rows, cols], dst=self._alpha_u8[rows, cols])
        cv2.cvtColor(self._alpha_u8[rows, cols], cv2.COLOR_GRAY2BGR, dst=weights)
        out = self._out[rows, cols]
        cv2.multiply(out, weights, dst=out, scale=1 / 255)
        cv2.bitwise_not(weights, dst=weights)
        cv2.multiply(frame[rows, cols], weights, dst=weights, scale=1 / 255)
        cv2.add(weights, out, dst=out)


def _blend_plane(frame: np.ndarray, out: np.ndarray, alpha: np.ndarray, scratch: np.ndarray) -> None:
    """out = frame * a + out * (1 - a) for one plane, the BGR blend's very steps."""
    cv2.bitwise_not(alpha, dst=scratch)
    cv2.multiply(out, scratch, dst=out, scale=1 / 255)
    cv2.multiply(frame, alpha, dst=scratch, scale=1 / 255)
    cv2.add(scratch, out, dst=out)


def _person_box(alpha: np.ndarray, full_size: tuple[int, int]) -> tuple[slice, slice] | None:
    """Full-resolution rows/cols that can hold alpha > 0 (None: no person at all).

    Blending only there makes the blend cost follow the person's size, not the frame's.
    """
    x, y, w, h = cv2.boundingRect((alpha > ALPHA_EPSILON).view(np.uint8))
    if w == 0 or h == 0:
        return None
    small_h, small_w = alpha.shape[:2]
    width, height = full_size
    # One small pixel of margin: bilinear upsampling spreads each value into its neighbours.
    x0 = max(0, (x - 1) * width // small_w)
    x1 = min(width, (x + w + 1) * width // small_w + 1)
    y0 = max(0, (y - 1) * height // small_h)
    y1 = min(height, (y + h + 1) * height // small_h + 1)
    return slice(y0, y1), slice(x0, x1)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    # stackBlur approximates a Gaussian of the same support at ~1/3 of the cost.
    size = 2 * round(3 * sigma) + 1
    return cv2.stackBlur(image, (size, size))
