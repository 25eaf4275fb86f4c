"""Reading a picture file without trusting it: input frames and the background image.

OpenCV decodes whatever a header claims, up to 2^30 pixels (then it raises
cv2.error, a traceback), and opening a FIFO named `.png` blocks forever. So
the file is opened without blocking and must be a regular file, its size is
read from the header (Pillow reads only the header on open) and checked before
anything is decoded, and then OpenCV decodes that same open file.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

# 64 megapixels: more than any camera frame (8K is 33) or phone photo (~50), and a
# decoded copy (200 MB as BGR) that still fits beside the pipeline.
MAX_PIXELS = 1 << 26
MAX_FILE_BYTES = 256 << 20


class PictureError(Exception):
    """Why a file cannot be used as a picture, phrased to follow its name."""


def read_picture(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise PictureError(f"cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PictureError("is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise PictureError(f"is larger than {MAX_FILE_BYTES >> 20} MB")
        _check_size(file)
        # The file checked above, by its descriptor: renaming a FIFO over the name meanwhile
        # changes nothing. (imread, not imdecode: only imread keeps a truncated JPEG's top part.)
        try:
            image = cv2.imread(f"/proc/self/fd/{fd}", flags)
        except cv2.error:
            image = None
    if image is None or image.size == 0:
        raise PictureError("is not a readable image")
    return image


def _check_size(file: BinaryIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(file) as header:  # reads the header only
                width, height = header.size
        except Image.DecompressionBombError:  # Pillow's own limit, above ours
            raise PictureError(f"has more than {MAX_PIXELS >> 20} megapixels") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return  # a format Pillow does not know: OpenCV's own limit still applies
    if width * height > MAX_PIXELS:
        raise PictureError(
            f"is {width}x{height} ({width * height / 1e6:.0f} megapixels); at most {MAX_PIXELS / 1e6:.0f} are read"
        )
