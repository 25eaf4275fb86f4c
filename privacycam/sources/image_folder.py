"""A folder of still images, in name order, each a frame named by its file stem."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from privacycam.errors import SourceError
from privacycam.image_file import PictureError, read_picture
from privacycam.sources.base import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class ImageFolderSource:
    live = False

    def __init__(self, folder: Path, fps: float = 30.0) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and _regular(p))
        if not self.files:
            raise SourceError(f"folder {folder} has no images", "give a folder of .jpg or .png frames")
        self.description = f"images {folder}"
        self.fps = fps
        self._position = 0
        self._index = 0
        first = self._load_next()
        if first is None:
            raise SourceError(f"no image in {folder} can be read", "check the files")
        self._pending: Frame | None = first
        self.size = (first.image.shape[1], first.image.shape[0])

    def _load_next(self) -> Frame | None:
        while self._position < len(self.files):
            path = self.files[self._position]
            self._position += 1
            try:
                image = read_picture(path, cv2.IMREAD_COLOR)
            except PictureError as exc:
                log.warning("skipping %s: %s", path, str(exc).removeprefix("is "))
                continue
            frame = Frame(image, self._index, path.stem)
            self._index += 1
            return frame
        return None

    def read(self) -> Frame | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        return self._load_next()

    def close(self) -> None:
        self._position = len(self.files)


def _regular(path: Path) -> bool:
    """A FIFO or device named like a picture would block or never end: left out, with a word."""
    if path.is_file():
        return True
    if not path.is_dir():
        log.warning("skipping %s: not a regular file", path)
    return False
