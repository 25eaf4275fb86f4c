"""One matte from a crop, the whole-frame view and the last frame: no crop edge, no block, no cut limb.

The segmenter usually sees a crop around the people (`privacycam.roi`), and
every `roi_full_frame_every` frames the whole frame too (the "view"). The
rules that make these one estimate (also in the README, "How the mask is made"):

1. A crop's answer fades to nothing over CROP_FADE of its size towards every
   side that is not the frame's edge, so no crop ever ends in a straight line.
2. Where the crop's person reaches such a side (a limb, a lean, someone
   standing up), a crop grown on that side is segmented in the same frame
   (`privacycam.mask`); if the person still reaches out, or the crop's person
   runs along BLOCK_BORDER_SHARE of its sides, the whole frame is segmented too
   and outside the box the matte comes from the view's blobs that continue the
   crop's person.
3. With a view in the frame, what the crop calls person farther than
   GUARD_REACH from anyone the view sees is background: a crop model that
   marks its whole crop, or a stretch of gravel, as person shows no sharp block.
4. Asymmetric trust (`NewBlobGate`): a blob of the matte that touches last
   frame's people (within BLOB_REACH), or that the whole-frame view of this
   frame also sees, appears at once (an arm rising); any other blob (a crop
   model's, away from everyone) stays background until it has been there
   NEW_BLOB_FRAMES frames in a row (a pillow marked as person for a frame).
   A matte of the whole frame is its own view: all its blobs count. With
   nobody in the last matte (start-up, after a reset) every blob counts.

All arrays here are at the matte's working resolution ("work" pixels).
"""

from __future__ import annotations

import cv2
import numpy as np

from privacycam.roi import PERSON, TRACK_DOWNSCALE, Box

# The crop's matte fades out over this share of the box's side towards an inner
# side: wide enough that the hand-over to the view never looks like a line, small
# enough to stay inside the crop's margin (roi_margin 0.1 of the people's size).
CROP_FADE = 0.06
# How far (share of the frame height) the crop may draw the person beyond what
# the view shows: the low-resolution whole-frame model misses thin limbs and
# hair by a few of its pixels (1 model pixel ~ 0.7 % of the frame height).
GUARD_REACH = 0.1
# A new blob within this share of the frame height of last frame's people is
# part of them (a hand moving fast at 30 fps travels ~2-4 % of the frame height).
BLOB_REACH = 0.06
# Frames in a row a blob away from everyone must be there before it is shown.
NEW_BLOB_FRAMES = 3
# Outside the crop the view is taken only this close (share of the frame height)
# to the crop's person: the low-resolution whole-frame model's own false alarms
# beside a fast-moving person stay out.
FILL_REACH = 0.1
# A crop whose person covers this share of its inner sides does not show a
# person but a region marked as person (a sharp block): the view decides.
BLOCK_BORDER_SHARE = 0.3


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


class CropMerger:
    """Fades a crop's matte towards its inner sides and fills the rest from the view (rules 1-3)."""

    def __init__(self, work_size: tuple[int, int]) -> None:
        width, height = work_size
        self.frame = Box(0, 0, width, height)
        self._fade_x = np.empty(width, np.float32)
        self._fade_y = np.empty(height, np.float32)
        self._weight = np.empty((height, width), np.float32)
        self._crop = np.empty((height, width), np.float32)
        self._binary = np.empty((height, width), np.uint8)
        self._allowed = np.empty((height, width), np.uint8)
        self._labels = np.empty((height, width), np.int32)
        self._guard_px = max(1.0, GUARD_REACH * height)
        self._inverted = np.empty((height, width), np.uint8)
        self._distance = np.empty((height, width), np.float32)
        self._rim = _disk(2)
        self._fill_px = max(1.0, FILL_REACH * height)

    def inner_border_person_share(self, raw: np.ndarray, box: Box) -> float:
        """Share of the box's inner sides (not the frame's edge) where the crop's matte is person."""
        sides = []
        if box.x0 > 0:
            sides.append(raw[box.y0 : box.y1, box.x0])
        if box.x1 < self.frame.x1:
            sides.append(raw[box.y0 : box.y1, box.x1 - 1])
        if box.y0 > 0:
            sides.append(raw[box.y0, box.x0 : box.x1])
        if box.y1 < self.frame.y1:
            sides.append(raw[box.y1 - 1, box.x0 : box.x1])
        length = sum(side.size for side in sides)
        return 0.0 if length == 0 else sum(np.count_nonzero(side >= PERSON) for side in sides) / length

    def merge(self, raw: np.ndarray, box: Box, view: np.ndarray | None, fill_outside: bool) -> None:
        """raw holds the crop's matte inside box (zero outside); made one matte in place.

        view: this frame's whole-frame confidence, if there is one; fill_outside:
        the crop's person reaches an inner side, so outside the box the view's
        blobs that continue them are kept.
        """
        weight = self._fade_weight(box)
        region = box.slices
        if view is None:
            np.multiply(raw[region], weight, out=raw[region])
            return
        crop = self._crop[region]
        np.copyto(crop, raw[region])
        cv2.compare(view, PERSON, cv2.CMP_GE, dst=self._binary)
        if cv2.countNonZero(self._binary[region]) > 0:
            # rule 3: the crop may not draw the person far beyond what the view sees
            self._within(self._binary, self._guard_px, dst=self._allowed)
            np.copyto(crop, 0.0, where=self._allowed[region] == 0)
        if fill_outside:
            self._view_reaching_into(view, box, out=raw)
        else:
            raw.fill(0.0)
        # rule 1 with the view behind it: raw = view + weight * (crop - view) inside the box
        inside = raw[region]
        np.subtract(crop, inside, out=crop)
        np.multiply(crop, weight, out=crop)
        np.add(inside, crop, out=inside)

    def _view_reaching_into(self, view: np.ndarray, box: Box, out: np.ndarray) -> None:
        """out = the view's blobs that have pixels inside box (with their soft rim), zero elsewhere."""
        count, labels = cv2.connectedComponents(self._binary, self._labels, 8, cv2.CV_32S)
        reaching_in = np.bincount(labels[box.slices].ravel(), minlength=count) > 0
        reaching_in[0] = False  # the background's label
        if not reaching_in.any():
            out.fill(0.0)
            return
        keep = self._allowed  # reused: the guard is done with it
        np.take(reaching_in.astype(np.uint8), labels, out=keep)
        cv2.dilate(keep, self._rim, dst=keep)
        # only next to the crop's person: the view's own false alarms further out stay out
        crop_person = self._binary
        crop_person.fill(0)
        cv2.compare(self._crop[box.slices], PERSON, cv2.CMP_GE, dst=crop_person[box.slices])
        self._within(crop_person, self._fill_px, dst=crop_person)
        cv2.bitwise_and(keep, crop_person, dst=keep)
        np.multiply(view, keep, out=out, casting="unsafe")

    def _within(self, binary: np.ndarray, reach: float, dst: np.ndarray) -> None:
        """dst = 255 within `reach` px of binary's set pixels: a dilation by a disk, in the same time at any
        radius (a distance transform; cv2.dilate with an 18 px disk took ~1 ms at 320x180)."""
        cv2.bitwise_not(binary, dst=self._inverted)
        cv2.distanceTransform(self._inverted, cv2.DIST_L2, 3, dst=self._distance)
        cv2.compare(self._distance, reach, cv2.CMP_LE, dst=dst)

    def _fade_weight(self, box: Box) -> np.ndarray:
        """Box-sized weight: 1 inside, falling to ~0 at each side that is not the frame's edge."""
        fade_x, fade_y = self._fade_x[: box.width], self._fade_y[: box.height]
        _fade(fade_x, box.x0 > 0, box.x1 < self.frame.x1, max(1, round(CROP_FADE * box.width)))
        _fade(fade_y, box.y0 > 0, box.y1 < self.frame.y1, max(1, round(CROP_FADE * box.height)))
        weight = self._weight[box.slices]
        np.multiply(fade_y[:, None], fade_x[None, :], out=weight)
        return weight


def _fade(ramp: np.ndarray, at_start: bool, at_end: bool, length: int) -> None:
    """ramp = 1, rising from ~0 over `length` entries at the ends asked for."""
    ramp.fill(1.0)
    length = min(length, ramp.size // 2)
    if length == 0:
        return
    rise = (np.arange(length, dtype=np.float32) + 0.5) / length
    if at_start:
        ramp[:length] = rise
    if at_end:
        ramp[ramp.size - length :] = rise[::-1]


class NewBlobGate:
    """Rule 4: blobs away from everyone are held back until they persist."""

    def __init__(self, work_size: tuple[int, int]) -> None:
        width, height = work_size
        track_w, track_h = max(1, width // TRACK_DOWNSCALE), max(1, height // TRACK_DOWNSCALE)
        self._track_size = (track_w, track_h)
        self._tracked = (min(width, track_w * TRACK_DOWNSCALE), min(height, track_h * TRACK_DOWNSCALE))
        self._small = np.empty((track_h, track_w), np.float32)
        self._binary = np.empty((track_h, track_w), np.uint8)
        self._known = np.empty((track_h, track_w), np.uint8)
        self._seen = np.empty((track_h, track_w), np.uint8)
        self._held = np.empty((track_h, track_w), np.uint8)
        self._held_work = np.empty((self._tracked[1], self._tracked[0]), np.uint8)
        self._labels = np.empty((track_h, track_w), np.int32)
        self._reach = _disk(max(1, round(BLOB_REACH * track_h)))
        self._rim = _disk(1)
        self.reset()

    def reset(self) -> None:
        # frames in a row each held pixel was there: this frame's and last frame's, swapped per frame
        self._persisted = np.zeros(self._track_size[::-1], np.uint8)
        self._persisted_next = np.zeros_like(self._persisted)

    def hold_new_blobs(self, raw: np.ndarray, previous: np.ndarray | None, view: np.ndarray | None) -> None:
        """Zero, in raw, the blobs that are neither near last frame's people nor confirmed by the view."""
        if previous is None or not self._binarize(previous, self._known):
            self._persisted.fill(0)
            return  # nobody known yet: there is no one to be far from
        cv2.dilate(self._known, self._reach, dst=self._known)
        if view is not None:
            self._binarize(view, self._seen)
            cv2.bitwise_or(self._known, self._seen, dst=self._known)
        self._binarize(raw, self._binary)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(self._binary, self._labels, 8, cv2.CV_32S)
        self._held.fill(0)
        persisted = self._persisted_next
        persisted.fill(0)
        for label in range(1, count):  # one iteration per blob, a handful per frame
            x, y, w, h = stats[label, :4]
            window = (slice(y, y + h), slice(x, x + w))
            blob = labels[window] == label
            if self._known[window][blob].any():
                continue
            frames = int(self._persisted[window][blob].max()) + 1
            if frames >= NEW_BLOB_FRAMES:
                continue
            persisted[window][blob] = frames
            self._held[window][blob] = 1
        self._persisted, self._persisted_next = persisted, self._persisted
        if not self._held.any():
            return
        cv2.dilate(self._held, self._rim, dst=self._held)
        cv2.resize(self._held, self._tracked, dst=self._held_work, interpolation=cv2.INTER_NEAREST)
        tracked = raw[: self._tracked[1], : self._tracked[0]]
        tracked[self._held_work > 0] = 0.0

    def _binarize(self, matte: np.ndarray, dst: np.ndarray) -> bool:
        """dst = matte >= PERSON at tracking size; whether anything is set."""
        tracked = matte[: self._tracked[1], : self._tracked[0]]
        cv2.resize(tracked, self._track_size, dst=self._small, interpolation=cv2.INTER_AREA)
        cv2.compare(self._small, PERSON, cv2.CMP_GE, dst=dst)
        return cv2.countNonZero(dst) > 0
