"""Writes each frame as a PNG into a folder, named after its source frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from privacycam.errors import SinkError
from privacycam.sources.base import Frame


class PngFolderSink:
    consumer_watching = True

    def __init__(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(
                f"cannot create output folder {folder} ({exc.strerror})", "choose a writable folder"
            ) from None
        self.folder = folder
        self.description = f"png folder {folder}"
        self._placeholders = 0

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        if frame is None:
            name = f"placeholder-{self._placeholders:05d}"
            self._placeholders += 1
        else:
            name = frame.name
        path = self.folder / f"{name}.png"
        if not cv2.imwrite(str(path), image):
            raise SinkError(f"cannot write {path}", "check free space and permissions of the output folder")

    def close(self) -> None:
        pass
