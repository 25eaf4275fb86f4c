"""A built-in source that needs no files or camera: a moving figure over a textured room.

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


def draw_figure(image: np.ndarray, step: int) -> None:
    height, width = image.shape[:2]
    cx = int(width * (0.5 + 0.08 * np.sin(step / SWAY_PERIOD * 2 * np.pi)))
    skin, shirt = (140, 170, 220), (150, 80, 40)
    axes = (int(width * 0.2), int(height * 0.45))
    cv2.ellipse(image, (cx, int(height * 0.62)), axes, 0, 180, 360, shirt, -1)
    cv2.circle(image, (cx, int(height * 0.38)), int(height * 0.16), skin, -1)


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
