"""An OpenCV window showing the output, when a display is there."""

from __future__ import annotations

import os

import cv2
import numpy as np

from privacycam.sources.base import Frame

WINDOW = "PrivacyCam preview"


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class PreviewSink:
    description = "preview window"
    consumer_watching = True

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        cv2.imshow(WINDOW, image)
        cv2.waitKey(1)

    def close(self) -> None:
        cv2.destroyWindow(WINDOW)
