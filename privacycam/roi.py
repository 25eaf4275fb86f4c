"""Region of interest: where to point the segmenter next.

The selfie models see their whole input at 256x256 (or 256x144). A person who
fills 5 % of a 16:9 frame is squeezed to a few dozen pixels, too few for clean
edges. `RoiTracker` remembers where the people were in the last matte, predicts
where they will be (damped constant velocity), and proposes a crop around them
with a margin, in the model's aspect ratio so nobody is stretched. A full-frame
pass runs periodically, and whenever the crop lost everyone, to find people who
enter. When the people fill a large part of the frame (a webcam user close to
the camera) the crop becomes the whole frame, so nobody is cropped.

All boxes are in matte ("work") pixels; the caller maps them to the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# People are found on a copy of the matte this many times smaller: connected
# components cost ~1 ms at 427x240 but ~0.1 ms at 107x60, and a box 4 work
# pixels too large is absorbed by the margin.
TRACK_DOWNSCALE = 4
# The matte value from which a pixel counts as person (the compositor's half-way point).
PERSON = 0.5
# Blobs smaller than this share of the frame are speckle, not people: the DAVIS
# people cover 3-6 % of the frame, a webcam user 20-50 %.
MIN_PERSON_AREA = 0.002
# A blob's velocity is damped before it moves the next crop: constant-velocity
# prediction overshoots when someone stops, and the margin covers the rest.
VELOCITY_DAMPING = 0.7
# People whose box reaches within one tracking pixel of a crop side that is not
# the frame's edge were probably cut by the crop; that side then gets
# EDGE_GROWTH of the people's size as extra room next frame.
EDGE_TOUCH_PX = TRACK_DOWNSCALE
EDGE_GROWTH = 0.25
# A crop this large a share of the frame gains little resolution over the whole
# frame but risks cutting someone: use the whole frame.
CROP_WHOLE_FRAME_AREA = 0.7
# Once people are large enough for the whole frame, they must shrink to this
# share of the threshold before cropping resumes, so someone hovering at the
# threshold does not make the matte switch back and forth.
WHOLE_FRAME_HYSTERESIS = 0.8


@dataclass(frozen=True)
class Box:
    """Half-open pixel rectangle [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def slices(self) -> tuple[slice, slice]:
        """numpy index of this box: array[box.slices]."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def union(self, other: Box) -> Box:
        return Box(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1))

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(round(self.x0 + dx), round(self.y0 + dy), round(self.x1 + dx), round(self.y1 + dy))

    def scaled(self, sx: float, sy: float) -> Box:
        """The same region in another pixel grid, rounded outwards."""
        return Box(math.floor(self.x0 * sx), math.floor(self.y0 * sy), math.ceil(self.x1 * sx), math.ceil(self.y1 * sy))

    def clipped(self, width: int, height: int) -> Box:
        return Box(max(0, self.x0), max(0, self.y0), min(width, self.x1), min(height, self.y1))


@dataclass(frozen=True)
class RoiSettings:
    margin: float  # context on each side, as a fraction of the people's larger side
    full_frame_every: int  # frames between full-frame passes that look for people entering
    whole_frame_above: float  # people whose bounding box covers this share of the frame get the whole frame
    model_aspect: float  # width / height of the model input; crops keep it
    min_height: float = 0.0  # smallest crop height in work pixels (the caller limits upscaling with it)


@dataclass(frozen=True)
class RoiPlan:
    box: Box  # where to segment, in work pixels
    whole_frame: bool  # box is the whole frame
    full_pass: bool  # also look at the whole frame for people outside the box
    several_people: bool = False  # the last matte showed more than one person (separate blobs)
    cut_by_bottom: bool = False  # the people reach the frame's bottom edge (head and torso, like a webcam user)


class RoiTracker:
    """Proposes the next crop from the last matte; one instance per video stream and size."""

    def __init__(self, work_size: tuple[int, int], settings: RoiSettings) -> None:
        self.work_width, self.work_height = work_size
        self.settings = settings
        self.frame = Box(0, 0, self.work_width, self.work_height)
        # an exact factor (the last few rows/columns dropped) keeps INTER_AREA on its fast path
        track_w = max(1, self.work_width // TRACK_DOWNSCALE)
        track_h = max(1, self.work_height // TRACK_DOWNSCALE)
        self._track_size = (track_w, track_h)
        self._tracked_area = (
            min(self.work_width, track_w * TRACK_DOWNSCALE),
            min(self.work_height, track_h * TRACK_DOWNSCALE),
        )
        self._to_work = (self._tracked_area[0] / track_w, self._tracked_area[1] / track_h)
        self._small = np.empty((track_h, track_w), np.float32)
        self._small_u8 = np.empty((track_h, track_w), np.uint8)
        self._labels = np.empty((track_h, track_w), np.int32)
        self._min_pixels = max(1.0, MIN_PERSON_AREA * track_w * track_h)
        self.reset()

    def reset(self) -> None:
        self._people: Box | None = None
        self._velocity = (0.0, 0.0)
        self._grow = (0.0, 0.0, 0.0, 0.0)  # extra room left, top, right, bottom
        self._since_full = 0
        self._large = False  # people large enough for the whole frame
        self._several = False  # more than one person in view (see observe)

    @property
    def tracking(self) -> bool:
        """Somebody was in the last matte."""
        return self._people is not None

    def plan(self) -> RoiPlan:
        if self._people is None or self._large:
            return RoiPlan(self.frame, whole_frame=True, full_pass=True)
        dx, dy = self._velocity
        people = self._people.union(self._people.shifted(dx, dy))
        box = self.crop_for(people, self._grow)
        whole = box == self.frame
        full = whole or self._since_full + 1 >= self.settings.full_frame_every
        return RoiPlan(
            box,
            whole_frame=whole,
            full_pass=full,
            several_people=self._several,
            cut_by_bottom=self.cut_by_bottom(people),
        )

    def cut_by_bottom(self, people: Box) -> bool:
        """The people's box reaches the frame's bottom edge: only head and torso are in view."""
        return people.y1 >= self.work_height - EDGE_TOUCH_PX

    def crop_for(self, people: Box, grow: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> Box:
        """The crop for people in `people`: margin, model aspect, inside the frame, or the whole frame."""
        size = max(people.width, people.height)
        margin = self.settings.margin * size
        left, top, right, bottom = (margin + g * size for g in grow)
        x0, y0 = people.x0 - left, people.y0 - top
        x1, y1 = people.x1 + right, people.y1 + bottom
        width = min(x1 - x0, self.work_width)
        height = min(max(y1 - y0, self.settings.min_height), self.work_height)
        aspect = self.settings.model_aspect
        width, height = max(width, height * aspect), max(height, width / aspect)
        width, height = min(width, self.work_width), min(height, self.work_height)
        if width * height >= CROP_WHOLE_FRAME_AREA * self.work_width * self.work_height:
            return self.frame
        return _placed((x0 + x1) / 2, (y0 + y1) / 2, round(width), round(height), self.work_width, self.work_height)

    def people_in(self, matte: np.ndarray, exclude: Box | None = None) -> Box | None:
        """Bounding box (work pixels) of all person-sized blobs of the matte, or None.

        `exclude`: a region of the matte to ignore (e.g. the crop already segmented).
        """
        return bounding_box(self.blobs_in(matte, exclude))

    def blobs_in(self, matte: np.ndarray, exclude: Box | None = None) -> list[Box]:
        """Bounding boxes (work pixels) of the matte's person-sized blobs, one per blob."""
        tracked = matte[: self._tracked_area[1], : self._tracked_area[0]]
        cv2.resize(tracked, self._track_size, dst=self._small, interpolation=cv2.INTER_AREA)
        cv2.compare(self._small, PERSON, cv2.CMP_GE, dst=self._small_u8)
        if exclude is not None:
            inner = Box(
                math.ceil(exclude.x0 / self._to_work[0]),
                math.ceil(exclude.y0 / self._to_work[1]),
                math.floor(exclude.x1 / self._to_work[0]),
                math.floor(exclude.y1 / self._to_work[1]),
            )
            self._small_u8[inner.slices] = 0
        count, _, stats, _ = cv2.connectedComponentsWithStats(self._small_u8, self._labels, 8, cv2.CV_32S)
        blobs = [
            Box(int(x), int(y), int(x + w), int(y + h))
            for x, y, w, h, area in stats[1:count]
            if area >= self._min_pixels
        ]
        return [blob.scaled(*self._to_work).clipped(self.work_width, self.work_height) for blob in blobs]

    def observe(self, matte: np.ndarray, plan: RoiPlan, found: Box | None = None) -> None:
        """Take this frame's matte (float, work size) and any people a full pass found outside the crop."""
        blobs = self.blobs_in(matte)
        people = bounding_box(blobs)
        # Several people: separate blobs on this matte, or newcomers a full pass found beside them.
        self._several = len(blobs) > 1 or (found is not None and people is not None)
        self._since_full = 0 if plan.full_pass else self._since_full + 1
        if people is None or self._people is None or found is not None:
            self._velocity = (0.0, 0.0)  # nothing to compare, or the box jumped to take in newcomers
        else:
            (cx, cy), (px, py) = people.center, self._people.center
            self._velocity = (VELOCITY_DAMPING * (cx - px), VELOCITY_DAMPING * (cy - py))
        self._grow = edges_touched(people, plan.box, self.frame) if people is not None else (0.0, 0.0, 0.0, 0.0)
        if found is not None:
            people = found if people is None else people.union(found)
        self._people = people
        self._large = people is not None and self.is_large(people, self._large)

    def is_large(self, people: Box, was_large: bool = False) -> bool:
        """People big enough that the whole frame is their crop (a webcam user close to the camera)."""
        share = people.width * people.height / (self.work_width * self.work_height)
        threshold = self.settings.whole_frame_above * (WHOLE_FRAME_HYSTERESIS if was_large else 1.0)
        return share >= threshold


def bounding_box(boxes: list[Box]) -> Box | None:
    """The smallest box holding all of boxes; None for none."""
    if not boxes:
        return None
    union = boxes[0]
    for box in boxes[1:]:
        union = union.union(box)
    return union


def edges_touched(people: Box, crop: Box, frame: Box) -> tuple[float, float, float, float]:
    """EDGE_GROWTH for each crop side (left, top, right, bottom) the people reach, unless it is the frame's edge."""
    return (
        EDGE_GROWTH if crop.x0 > frame.x0 and people.x0 - crop.x0 <= EDGE_TOUCH_PX else 0.0,
        EDGE_GROWTH if crop.y0 > frame.y0 and people.y0 - crop.y0 <= EDGE_TOUCH_PX else 0.0,
        EDGE_GROWTH if crop.x1 < frame.x1 and crop.x1 - people.x1 <= EDGE_TOUCH_PX else 0.0,
        EDGE_GROWTH if crop.y1 < frame.y1 and crop.y1 - people.y1 <= EDGE_TOUCH_PX else 0.0,
    )


def _placed(cx: float, cy: float, width: int, height: int, frame_w: int, frame_h: int) -> Box:
    """A width x height box centred on (cx, cy), slid (not shrunk) to lie inside the frame."""
    x0 = min(max(0, round(cx - width / 2)), frame_w - width)
    y0 = min(max(0, round(cy - height / 2)), frame_h - height)
    return Box(x0, y0, x0 + width, y0 + height)
