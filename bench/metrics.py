"""Mask-quality metrics against per-frame ground truth (DAVIS-style).

All functions take a predicted alpha as uint8 (0..255, 255 = person) at the
ground truth's size and a binary ground-truth mask; a pixel counts as person
where alpha >= 0.5, i.e. uint8 >= 128 (0.5 * 255 rounds up to 128).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# alpha >= 0.5 in uint8: 0.5 * 255 = 127.5, which upsample_alpha rounds to 128.
ALPHA_HALF_U8 = 128
# DAVIS boundary tolerance: 0.8 % of the image diagonal (Perazzi et al., CVPR 2016).
BOUNDARY_TOLERANCE = 0.008
# "Leak" only counts background clearly away from the person, so that a soft,
# slightly wide edge is not called a leak: 10 px at 480p is ~1 % of the diagonal.
LEAK_MIN_DISTANCE_PX = 10
# "Cut" looks at the person's interior only: 3 px in from the GT outline.
CUT_ERODE_PX = 3
# A straight crop-box edge: along a side of a crop the segmenter was given
# (not the frame's own edge), the matte changes between person and background
# across the side line (within STRAIGHT_EDGE_SLACK px) over a run of at least
# this share of the frame height: a limb cut off, or a block of background shown.
# A generic straight-line detector cannot tell these from a low-resolution
# model's own blocky outline (the raw landscape model, which never crops, has
# runs of 5-10 % of the frame height), so the crop boxes are asked for.
STRAIGHT_EDGE_MIN_RUN = 0.02
STRAIGHT_EDGE_SLACK = 3
# A sharp block: one connected piece of background at least SHARP_BLOCK_DISTANCE
# of the image diagonal from the person (10 px at 854x480, as for leak, and
# 15 px at 1280x720, so a slightly wide edge of an upscaled view is no block),
# shown as person, of at least this share of the frame (0.25 % is ~32x32 px at
# 854x480, ~48x48 at 720p).
SHARP_BLOCK_MIN_AREA = 0.0025
SHARP_BLOCK_DISTANCE = 0.01


def disk(radius: int) -> np.ndarray:
    """Binary disk structuring element like skimage.morphology.disk (x^2 + y^2 <= r^2)."""
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_radius(height: int, width: int) -> int:
    """Matching radius in pixels, as DAVIS computes it: ceil(0.008 * diagonal)."""
    return math.ceil(BOUNDARY_TOLERANCE * math.hypot(height, width))


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask, the DAVIS `seg2bmap` for same-size output.

    A pixel is boundary if it differs from its right, lower or lower-right neighbour.
    """
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


@dataclass
class Truth:
    """Everything derived from one ground-truth mask, computed once per frame."""

    fg: np.ndarray  # bool, person
    fg_float: np.ndarray  # float32 {0, 1}, for the flicker term
    boundary: np.ndarray  # bool
    boundary_near: np.ndarray  # bool, boundary dilated by the DAVIS tolerance disk
    far_background: np.ndarray  # bool, background at least LEAK_MIN_DISTANCE_PX from the person
    block_background: np.ndarray  # bool, background at least SHARP_BLOCK_DISTANCE of the diagonal from the person
    interior: np.ndarray  # bool, person eroded by CUT_ERODE_PX
    tolerance_disk: np.ndarray

    @classmethod
    def from_mask(cls, gt_u8: np.ndarray) -> Truth:
        fg = gt_u8 > 127
        height, width = fg.shape
        tolerance = disk(boundary_radius(height, width))
        boundary = seg2bmap(fg)
        background = (~fg).astype(np.uint8)
        distance = cv2.distanceTransform(background, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        interior = cv2.erode(fg.astype(np.uint8), disk(CUT_ERODE_PX)).astype(bool)
        return cls(
            fg=fg,
            fg_float=fg.astype(np.float32),
            boundary=boundary,
            boundary_near=cv2.dilate(boundary.astype(np.uint8), tolerance).astype(bool),
            far_background=distance >= LEAK_MIN_DISTANCE_PX,
            block_background=distance >= SHARP_BLOCK_DISTANCE * math.hypot(height, width),
            interior=interior,
            tolerance_disk=tolerance,
        )


def iou(pred: np.ndarray, truth: Truth) -> float:
    """Jaccard index of two binary masks; 1 when both are empty."""
    union = np.count_nonzero(pred | truth.fg)
    return 1.0 if union == 0 else np.count_nonzero(pred & truth.fg) / union


def boundary_f(pred: np.ndarray, truth: Truth) -> float:
    """DAVIS boundary F-measure: boundary pixels matched within the tolerance disk."""
    pred_boundary = seg2bmap(pred)
    n_pred = np.count_nonzero(pred_boundary)
    n_truth = np.count_nonzero(truth.boundary)
    if n_pred == 0 and n_truth == 0:
        return 1.0
    if n_pred == 0 or n_truth == 0:
        return 0.0
    pred_near = cv2.dilate(pred_boundary.astype(np.uint8), truth.tolerance_disk).astype(bool)
    precision = np.count_nonzero(pred_boundary & truth.boundary_near) / n_pred
    recall = np.count_nonzero(truth.boundary & pred_near) / n_truth
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def leak(pred: np.ndarray, truth: Truth) -> float:
    """Share of far background shown as person."""
    n_far = np.count_nonzero(truth.far_background)
    return 0.0 if n_far == 0 else np.count_nonzero(pred & truth.far_background) / n_far


def cut(pred: np.ndarray, truth: Truth) -> float | None:
    """Share of the person's interior hidden as background; None if there is no interior."""
    n_interior = np.count_nonzero(truth.interior)
    return None if n_interior == 0 else np.count_nonzero(truth.interior & ~pred) / n_interior


def crop_box_edges(pred: np.ndarray, crops: list[tuple[int, int, int, int]]) -> int:
    """How many crop sides (crops: x0, y0, x1, y1 in frame pixels) the matte's outline runs along."""
    height, width = pred.shape
    min_run = max(2, math.ceil(STRAIGHT_EDGE_MIN_RUN * height))
    slack = STRAIGHT_EDGE_SLACK
    found = 0
    for x0, y0, x1, y1 in crops:
        # (matte, line position, along-range) for each side inside the frame; columns as rows for x sides
        sides = [(pred, y, x0, x1) for y in (y0, y1) if slack <= y <= height - slack]
        sides += [(pred.T, x, y0, y1) for x in (x0, x1) if slack <= x <= width - slack]
        for mask, line, start, end in sides:
            # person on one side of the line, background on the other, within the slack
            step = mask[line - slack] != mask[line + slack - 1]
            if _runs(step[None, max(0, start) : end], min_run):
                found += 1
    return found


def _runs(rows: np.ndarray, min_length: int) -> list[tuple[int, int, int]]:
    """(row, start, end) of every run of True at least min_length long, row by row."""
    padded = np.zeros((rows.shape[0], rows.shape[1] + 2), np.int8)
    padded[:, 1:-1] = rows
    change = np.diff(padded, axis=1)
    start_rows, starts = np.nonzero(change == 1)
    _, ends = np.nonzero(change == -1)
    long = (ends - starts) >= min_length
    return list(zip(start_rows[long].tolist(), starts[long].tolist(), ends[long].tolist(), strict=True))


def largest_leak_blob(pred: np.ndarray, truth: Truth) -> float:
    """Share of the frame covered by the largest connected piece of far background shown as person."""
    shown = (pred & truth.block_background).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(shown, connectivity=8)
    return 0.0 if count < 2 else float(stats[1:, cv2.CC_STAT_AREA].max()) / pred.size


@dataclass
class SequenceScore:
    """Accumulates per-frame figures over one sequence, frames fed in order."""

    j: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)
    flicker: list[float] = field(default_factory=list)
    leak: list[float] = field(default_factory=list)
    cut: list[float] = field(default_factory=list)
    straight_edge_frames: int = 0
    sharp_block_frames: int = 0
    _previous: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, alpha_u8: np.ndarray, truth: Truth, crops: list[tuple[int, int, int, int]] = ()) -> None:
        """One frame's matte; crops: the boxes (frame pixels) the segmenter saw crops of."""
        if alpha_u8.shape != truth.fg.shape:
            raise ValueError(f"alpha {alpha_u8.shape} and ground truth {truth.fg.shape} differ in size")
        pred = alpha_u8 >= ALPHA_HALF_U8
        self.j.append(iou(pred, truth))
        self.f.append(boundary_f(pred, truth))
        self.leak.append(leak(pred, truth))
        frame_cut = cut(pred, truth)
        if frame_cut is not None:
            self.cut.append(frame_cut)
        self.straight_edge_frames += crop_box_edges(pred, list(crops)) > 0
        self.sharp_block_frames += largest_leak_blob(pred, truth) >= SHARP_BLOCK_MIN_AREA
        alpha = alpha_u8.astype(np.float32) * (1.0 / 255.0)
        if self._previous is not None:
            previous_alpha, previous_gt = self._previous
            change_error = (alpha - previous_alpha) - (truth.fg_float - previous_gt)
            self.flicker.append(float(np.mean(np.abs(change_error))))
        self._previous = (alpha, truth.fg_float)

    def summary(self) -> dict[str, float]:
        return {
            "J": _mean(self.j),
            "F": _mean(self.f),
            "flicker": _mean(self.flicker),
            "leak": _mean(self.leak),
            "cut": _mean(self.cut),
            "straight_edge_frames": self.straight_edge_frames,
            "sharp_block_frames": self.sharp_block_frames,
        }


def self_flicker(alphas_u8: list[np.ndarray]) -> float:
    """Flicker without ground truth: mean over frames of mean |a_t - a_(t-1)|, alpha in [0, 1]."""
    changes = [
        float(np.mean(cv2.absdiff(current, previous))) / 255.0
        for previous, current in zip(alphas_u8, alphas_u8[1:], strict=False)
    ]
    return _mean(changes)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
