"""Mattes that cannot be right are refused, so that frame fails closed (fully hidden).

A damaged or wrong model can answer with values that pass every type check
and still show the background sharp: everything marked as person, the person
and the background swapped, or noise. Three signs, on the final whole-frame
matte (after smoothing and feathering, i.e. what the compositor would blend):

- it marks nearly the whole frame as person;
- most of it is undecided (neither person nor background), as noise is once
  resized and feathered;
- it flips most pixels against the last accepted matte while the image is
  still (a still image cannot swap person and background).

The thresholds come from `python -m bench.mask_plausibility` on shared/data
(DAVIS clips as they are and framed like a webcam, the unlabeled clips and the
portrait), with margin; see the constants. Cost: ~0.2 ms per frame (thumbnails).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from privacycam.segmenters.base import SegmenterOutputError

# Measured maxima over 691 frames of PrivacyCam's own default mattes
# (python -m bench.mask_plausibility): person share 0.57 (the astronaut portrait,
# a person close to the camera; 0.41 on webcam-framed DAVIS, whose ground truth
# peaks at 0.22), undecided share 0.13, flipped share 0.004 over 82 still frames
# (0.28 between frames of fast motion). The limits leave a wide margin: a frame
# wrongly refused is only hidden, but a webcam user leaning in must stay sharp.
MAX_PERSON_SHARE = 0.9
MAX_UNDECIDED_SHARE = 0.5
MAX_FLIPPED_SHARE = 0.5
# Undecided: alpha within this distance of 0.5. Flipped: alpha changed by more than 0.5.
UNDECIDED_BAND = 0.3
# The checks look at the matte and the frame shrunk by this factor (area average):
# shares need no more detail, and the average evens out sensor noise.
THUMBNAIL_SHRINK = 4
# Still: fewer than STILL_SHARE of the grey thumbnail's pixels changed by more than STILL_LEVEL.
STILL_LEVEL = 12
STILL_SHARE = 0.02


class ImplausibleMatte(SegmenterOutputError):
    """The matte cannot be a person's: that frame is hidden."""


@dataclass(frozen=True)
class MatteShares:
    person: float  # alpha >= 0.5
    undecided: float  # |alpha - 0.5| < UNDECIDED_BAND
    flipped: float | None  # |alpha - previous| > 0.5; None without a previous matte


def matte_shares(alpha: np.ndarray, previous_alpha: np.ndarray | None) -> MatteShares:
    """Shares of the frame; alpha and previous_alpha of the same (small) size."""
    flipped = None if previous_alpha is None else float(np.mean(np.abs(alpha - previous_alpha) > 0.5))
    return MatteShares(
        person=float(np.mean(alpha >= 0.5)),
        undecided=float(np.mean(np.abs(alpha - 0.5) < UNDECIDED_BAND)),
        flipped=flipped,
    )


def implausible(alpha: np.ndarray, previous_alpha: np.ndarray | None, frame_is_still: bool) -> str | None:
    """Why this matte cannot be right, or None. previous_alpha: the last accepted one, same size."""
    return verdict(matte_shares(alpha, previous_alpha if frame_is_still else None))


def verdict(shares: MatteShares) -> str | None:
    if shares.person > MAX_PERSON_SHARE:
        return f"the matte marks {shares.person:.0%} of the frame as person"
    if shares.undecided > MAX_UNDECIDED_SHARE:
        return f"the matte is undecided on {shares.undecided:.0%} of the frame (noise)"
    if shares.flipped is not None and shares.flipped > MAX_FLIPPED_SHARE:
        return f"the matte flipped {shares.flipped:.0%} of the frame while the image stood still"
    return None


class MatteHistory:
    """The last accepted matte and the previous frame, as thumbnails in buffers of their own.
    One per Matter (its `plausibility`): a new model or mask config starts afresh."""

    def __init__(self) -> None:
        self._size: tuple[int, int] | None = None

    def check(self, alpha: np.ndarray, work_frame: np.ndarray) -> None:
        """Raise ImplausibleMatte for a matte that cannot be right; else remember it as the last accepted."""
        problem = verdict(self.measure(alpha, work_frame))
        if problem is not None:
            raise ImplausibleMatte(problem)
        self.accept()

    def measure(self, alpha: np.ndarray, work_frame: np.ndarray) -> MatteShares:
        """The matte's shares; `flipped` only while the frame is still. Moves the previous frame on."""
        height, width = alpha.shape
        size = (max(1, width // THUMBNAIL_SHRINK), max(1, height // THUMBNAIL_SHRINK))
        if size != self._size:
            self._size = size
            self._alpha = np.empty(size[::-1], np.float32)
            self._accepted = np.empty_like(self._alpha)
            self._grey = np.empty((height, width), np.uint8)
            self._frames = (np.empty(size[::-1], np.uint8), np.empty(size[::-1], np.uint8))
            self._changed = np.empty(size[::-1], np.uint8)
            self._has_accepted = self._has_frame = False
        cv2.resize(alpha, size, dst=self._alpha, interpolation=cv2.INTER_AREA)
        previous_frame, frame = self._frames
        cv2.cvtColor(work_frame, cv2.COLOR_BGR2GRAY, dst=self._grey)
        cv2.resize(self._grey, size, dst=frame, interpolation=cv2.INTER_AREA)
        still = self._has_frame and self._is_still(previous_frame, frame)
        self._frames, self._has_frame = (frame, previous_frame), True
        return matte_shares(self._alpha, self._accepted if self._has_accepted and still else None)

    def accept(self) -> None:
        """The matte just measured becomes the one later ones are compared with."""
        np.copyto(self._accepted, self._alpha)
        self._has_accepted = True

    def _is_still(self, previous: np.ndarray, current: np.ndarray) -> bool:
        cv2.absdiff(previous, current, dst=self._changed)
        cv2.threshold(self._changed, STILL_LEVEL, 1, cv2.THRESH_BINARY, dst=self._changed)
        return cv2.countNonZero(self._changed) < STILL_SHARE * self._changed.size
