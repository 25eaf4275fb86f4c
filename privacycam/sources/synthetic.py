"""A built-in source that needs no files or camera: a swaying head-and-shoulders figure over a textured room.

Used by `privacycam bench` and the demo when nothing else is there. The room is
drawn once; each frame is a fresh copy with the figure drawn in, like a camera
driver handing over a new buffer (a reused ring would be overwritten by the
capture thread while a slow consumer still holds the frame).
"""

from __future__ import annotations

import cv2
import numpy as np

from privacycam.sources.base import Frame

SWAY_PERIOD = 90  # frames for the figure to sway left and back


def draw_room(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    texture = rng.integers(40, 200, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    room = cv2.resize(texture, (width, height), interpolation=cv2.INTER_NEAREST)
    for x in range(0, width, max(8, width // 16)):  # bookshelf-like vertical edges
        cv2.line(room, (x, 0), (x, height), (30, 30, 30), max(1, width // 400))
    return room


def draw_figure(image: np.ndarray, step: int, person: tuple[int, ...] | None = None) -> None:
    """A head-and-shoulders figure like a webcam user, swaying; `person`: one colour for all of it (a mask).

    The body runs down to the frame's bottom edge, as a webcam cuts a user: a
    figure ending in mid-air (the old scene's half-ellipse) made the segmenter
    guess a body below it, inside the crop only, a block of sharp room texture.
    """
    height, width = image.shape[:2]
    cx = width * (0.5 + 0.08 * np.sin(step / SWAY_PERIOD * 2 * np.pi))
    skin, shirt, hair = (140, 170, 220), (150, 80, 40), (40, 50, 60)
    if person is not None:
        skin = shirt = hair = person
    head_y, head_r = 0.36 * height, 0.11 * height
    shoulder_y, half_shoulders = 0.58 * height, 0.15 * width
    torso = np.array(
        [
            (cx - 0.035 * width, 0.46 * height),  # neck
            (cx + 0.035 * width, 0.46 * height),
            (cx + half_shoulders * 0.8, shoulder_y - 0.03 * height),
            (cx + half_shoulders, shoulder_y + 0.04 * height),
            (cx + half_shoulders * 1.05, height),
            (cx - half_shoulders * 1.05, height),
            (cx - half_shoulders, shoulder_y + 0.04 * height),
            (cx - half_shoulders * 0.8, shoulder_y - 0.03 * height),
        ],
        np.int32,
    )
    cv2.fillPoly(image, [torso], shirt, cv2.LINE_AA if person is None else cv2.LINE_8)
    centre = (round(cx), round(head_y))
    cv2.ellipse(
        image,
        (centre[0], round(head_y - 0.03 * height)),
        (round(head_r * 0.95), round(head_r * 0.8)),
        0,
        180,
        360,
        hair,
        -1,
    )
    cv2.ellipse(image, centre, (round(head_r * 0.85), round(head_r)), 0, 0, 360, skin, -1)


def person_mask(width: int, height: int, step: int) -> np.ndarray:
    """The figure of frame `step` as a mask (255 = person): the scene's exact ground truth."""
    mask = np.zeros((height, width, 1), np.uint8)
    draw_figure(mask, step, (255,))
    return mask[..., 0]


class SyntheticSource:
    live = True
    description = "built-in synthetic scene"

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0) -> None:
        self.size = (width, height)
        self.fps = fps
        self._room = draw_room(width, height)
        self._index = 0

    def read(self) -> Frame | None:
        image = self._room.copy()
        draw_figure(image, self._index)
        frame = Frame(image, self._index, f"{self._index:05d}")
        self._index += 1
        return frame

    def close(self) -> None:
        pass
