"""A built-in source that needs no files or camera: a moving figure over a textured room.

Used by `privacycam bench` and the demo when nothing else is there. Frames are
drawn once into a small set and cycled, so producing one costs a copy at most.
"""

from __future__ import annotations

import cv2
import numpy as np

from privacycam.sources.base import Frame

CYCLE = 60  # distinct frames drawn up front


def draw_scene(width: int, height: int, step: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    texture = rng.integers(40, 200, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = cv2.resize(texture, (width, height), interpolation=cv2.INTER_NEAREST)
    for x in range(0, width, max(8, width // 16)):  # bookshelf-like vertical edges
        cv2.line(image, (x, 0), (x, height), (30, 30, 30), max(1, width // 400))
    cx = int(width * (0.5 + 0.08 * np.sin(step / CYCLE * 2 * np.pi)))
    skin, shirt = (140, 170, 220), (150, 80, 40)
    cv2.ellipse(image, (cx, int(height * 0.62)), (int(width * 0.2), int(height * 0.45)), 0, 180, 360, shirt, -1)
    cv2.circle(image, (cx, int(height * 0.38)), int(height * 0.16), skin, -1)
    return image


class SyntheticSource:
    live = True
    description = "built-in synthetic scene"

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0) -> None:
        self.size = (width, height)
        self.fps = fps
        self._frames = [draw_scene(width, height, i) for i in range(CYCLE)]
        self._index = 0

    def read(self) -> Frame | None:
        image = self._frames[self._index % CYCLE]
        frame = Frame(image, self._index, f"{self._index:05d}")
        self._index += 1
        return frame

    def close(self) -> None:
        self._frames = []
