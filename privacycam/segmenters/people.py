"""Which person is "the user" when several people are in view (`segmenter.people: user`).

The rule, applied to every frame's candidates (Mask R-CNN person instances, or
for any other backend the connected blobs of its mask):

1. Prominence. Each candidate scores `area x (1 - 0.5 x d)`, where `area` is the
   share of the frame its mask covers and `d` is the distance from the centre of
   its bounding box to the centre of the frame, scaled so a corner is 1. So the
   biggest person wins, and between two of similar size the more central one.
   A Mask R-CNN instance's score is also multiplied by its detection confidence.
2. Persistence. The person chosen last time keeps the role: a candidate whose
   bounding box overlaps the last choice with IoU >= 0.3 has its score doubled,
   so someone else must be more than twice as prominent to take over, and the
   choice does not flip between two similar people from frame to frame. When
   nobody overlaps the last choice (the user left, or was missed), the most
   prominent candidate is chosen afresh; the last choice is forgotten after 15
   frames in which no one was found.
3. Everyone else is background (blurred or replaced), as is everything when no
   one is found.

The blob version (`keep_main_person`, for masks without instances) works on the
pixels with confidence >= 0.5. Blobs less than 3% of the frame height apart
count as one, so a user split by a thin gap (an arm, a low-confidence neck)
stays whole, and the user's soft edge is kept within 1.5% of the frame height
around their blob. People who touch in the image form one blob and are kept or
hidden together. It only ever removes person, never adds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CENTRE_WEIGHT = 0.5
STICKY_IOU = 0.3
STICKY_BONUS = 2.0
FORGET_AFTER_MISSES = 15
MASK_THRESHOLD = 0.5
BLOB_GAP = 0.03  # fraction of the mask height: blobs closer than this are one


@dataclass
class MainPersonState:
    """What the rule remembers between frames; one per video stream."""

    box: np.ndarray | None = None  # last chosen person: (x0, y0, x1, y1) as fractions of the frame
    misses: int = 0  # consecutive frames without any candidate


def prominence(boxes: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Score of each candidate: area share, discounted by distance from the frame centre.

    boxes: (N, 4) normalised x0, y0, x1, y1; areas: (N,) share of the frame.
    """
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    distance = np.hypot(centre_x - 0.5, centre_y - 0.5) / np.hypot(0.5, 0.5)
    return areas * (1.0 - CENTRE_WEIGHT * np.clip(distance, 0.0, 1.0))


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each of `boxes` (N, 4) with one `box` (4,), all x0, y0, x1, y1."""
    width = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    height = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = width * height
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def choose_main(
    boxes: np.ndarray, areas: np.ndarray, state: MainPersonState, confidence: np.ndarray | None = None
) -> int | None:
    """Index of the user among the candidates (None if there are none); updates `state`.

    boxes: (N, 4) normalised x0, y0, x1, y1; areas: (N,) share of the frame;
    confidence: (N,) optional detection scores in [0, 1].
    """
    if len(boxes) == 0:
        state.misses += 1
        if state.misses >= FORGET_AFTER_MISSES:
            state.box = None
        return None
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = prominence(boxes, np.asarray(areas, dtype=np.float64))
    if confidence is not None:
        scores = scores * np.asarray(confidence, dtype=np.float64)
    if state.box is not None:
        scores = np.where(box_iou(boxes, state.box) >= STICKY_IOU, scores * STICKY_BONUS, scores)
    best = int(np.argmax(scores))
    state.box = boxes[best].copy()
    state.misses = 0
    return best


def select_main_instance(
    boxes: np.ndarray, masks: np.ndarray, scores: np.ndarray, state: MainPersonState
) -> int | None:
    """The user among person instances: boxes (N, 4) in pixels, masks (N, H, W) in [0, 1], scores (N,)."""
    if len(boxes) == 0:
        return choose_main(np.zeros((0, 4)), np.zeros(0), state)
    height, width = masks.shape[1:3]
    normalised = np.asarray(boxes, dtype=np.float64) / np.array([width, height, width, height])
    areas = (masks >= MASK_THRESHOLD).mean(axis=(1, 2))
    return choose_main(normalised, areas, state, confidence=np.asarray(scores))


def keep_main_person(alpha: np.ndarray, state: MainPersonState) -> np.ndarray:
    """Zero every person blob in a float32 HxW confidence map except the user's.

    Usable on any backend's mask. The user's blob keeps its soft edge (values
    below the threshold within the blob gap around it).
    """
    person = (alpha >= MASK_THRESHOLD).astype(np.uint8)
    height, width = alpha.shape
    radius = max(1, round(BLOB_GAP * height / 2))
    # Dilating joins blobs up to 2 * radius apart and takes in the soft edge.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    grouped = cv2.dilate(person, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
    if count <= 1:
        choose_main(np.zeros((0, 4)), np.zeros(0), state)
        return np.zeros_like(alpha, dtype=np.float32)
    x, y, w, h = (stats[1:, i].astype(np.float64) for i in range(4))
    boxes = np.stack([x / width, y / height, (x + w) / width, (y + h) / height], axis=1)
    areas = np.bincount(labels[person.astype(bool)], minlength=count)[1:] / alpha.size
    main = choose_main(boxes, areas, state)
    if main is None:
        return np.zeros_like(alpha, dtype=np.float32)
    keep = labels == (main + 1)
    return np.where(keep, alpha, 0.0).astype(np.float32)
