"""Region of interest: where to point the segmenter next frame.

The selfie models see their whole input at 256x256 (or 256x144). A person who
fills 5 % of a 480p frame is then ~20 px wide to the network, too small for
clean edges. `RoiTracker` remembers where the people were in the last matte,
predicts where they will be (constant velocity), and proposes a crop with a
margin, in the model's aspect ratio so the person is not stretched. A full-frame
pass runs periodically, and whenever the crop lost everyone, to find people who
enter. When the people fill a large part of the frame (a webcam user close to
the camera) the crop becomes the whole frame, so nobody is cropped.

All boxes are in matte ("work") pixels; the caller maps them to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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

    def union(self, other: Box) -> Box:
        return Box(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1))

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(round(self.x0 + dx), round(self.y0 + dy), round(self.x1 + dx), round(self.y1 + dy))

    def scaled(self, sx: float, sy: float) -> Box:
        """The same region in another pixel grid (e.g. matte -> frame)."""
        return Box(round(self.x0 * sx), round(self.y0 * sy), round(self.x1 * sx), round(self.y1 * sy))


@dataclass(frozen=True)
class RoiSettings:
    margin: float  # extra context on each side, as a fraction of the people's larger side
    full_frame_every: int  # frames between full-frame passes that look for people entering
    whole_frame_above: float  # a crop covering this share of the frame area becomes the frame
    min_height: float  # smallest crop, as a share of the frame height (the model needs context)
    min_area: float  # smallest blob that counts as a person, as a share of the frame area


@dataclass(frozen=True)
class RoiPlan:
    box: Box  # where to segment, in work pixels
    whole_frame: bool  # box is the whole frame
    full_pass: bool  # also segment the whole frame (to find people outside the box)


# A blob's velocity is damped before it widens the next crop: constant-velocity
# prediction overshoots when someone stops, and the margin covers the rest.
VELOCITY_DAMPING = 0.7


class RoiTracker:
    """Proposes the next crop from the last matte; one instance per video stream."""

    def __init__(self, work_size: tuple[int, int], model_aspect: float, settings: RoiSettings) -> None:
        self.work_width, self.work_height = work_size
        self.model_aspect = model_aspect  # width / height of the model input
        self.settings = settings
        self._frame = Box(0, 0, self.work_width, self.work_height)
        self._people: Box | None = None
        self._velocity = (0.0, 0.0)
        self._since_full = 0
        self._labels = np.empty((self.work_height, self.work_width), np.int32)

    def reset(self) -> None:
        self._people = None
        self._velocity = (0.0, 0.0)
        self._since_full = 0

    def plan(self) -> RoiPlan:
        if self._people is None:
            return RoiPlan(self._frame, whole_frame=True, full_pass=True)
        box = self._crop_around(self._people)
        whole = box == self._frame
        full = whole or self._since_full + 1 >= self.settings.full_frame_every
        return RoiPlan(box, whole_frame=whole, full_pass=full)

    def observe(self, person_u8: np.ndarray, plan: RoiPlan, found: Box | None = None) -> None:
        """Take the new matte (uint8, nonzero = person) at work size, and where a full pass found people."""
        people = self._people_box(person_u8)
        if found is not None:
            people = found if people is None else people.union(found)
        self._since_full = 0 if plan.full_pass else self._since_full + 1
        if people is None or self._people is None:
            self._velocity = (0.0, 0.0)
        else:
            (cx, cy), (px, py) = people.center, self._people.center
            self._velocity = (VELOCITY_DAMPING * (cx - px), VELOCITY_DAMPING * (cy - py))
        self._people = people

    def lost(self, person_u8: np.ndarray) -> bool:
        """No person-sized blob in this matte: time for a full-frame look."""
        return self._people_box(person_u8) is None

    def people_box(self, person_u8: np.ndarray) -> Box | None:
        return self._people_box(person_u8)

    def _people_box(self, person_u8: np.ndarray) -> Box | None:
        labels = self._labels[: person_u8.shape[0], : person_u8.shape[1]]
        count, _, stats, _ = cv2.connectedComponentsWithStats(person_u8, labels, 8, cv2.CV_32S)
        min_pixels = self.settings.min_area * self.work_width * self.work_height
        box = None
        for index in range(1, count):  # a handful of blobs, not pixels
            x, y, w, h, area = (int(v) for v in stats[index])
            if area < min_pixels:
                continue
            blob = Box(x, y, x + w, y + h)
            box = blob if box is None else box.union(blob)
        return box

    def _crop_around(self, people: Box) -> Box:
        dx, dy = self._velocity
        box = people.union(people.shifted(dx, dy))
        margin = self.settings.margin * max(box.width, box.height)
        width = min(box.width + 2 * margin, self.work_width)
        height = min(max(box.height + 2 * margin, self.settings.min_height * self.work_height), self.work_height)
        if self.model_aspect > 0:
            # the model's aspect ratio, so the crop is resized without stretching the person
            width, height = max(width, height * self.model_aspect), max(height, width / self.model_aspect)
            width, height = min(width, self.work_width), min(height, self.work_height)
        if width * height >= self.settings.whole_frame_above * self.work_width * self.work_height:
            return self._frame
        cx, cy = box.center
        return _placed(cx, cy, round(width), round(height), self.work_width, self.work_height)


def _placed(cx: float, cy: float, width: int, height: int, frame_w: int, frame_h: int) -> Box:
    """A width x height box centred on (cx, cy), slid (not shrunk) to lie inside the frame."""
    x0 = min(max(0, round(cx - width / 2)), frame_w - width)
    y0 = min(max(0, round(cy - height / 2)), frame_h - height)
    return Box(x0, y0, x0 + width, y0 + height)
