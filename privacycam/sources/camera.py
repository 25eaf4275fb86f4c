"""A V4L2 webcam through OpenCV, asked for size, fps and fourcc, read back for what it gave.

MJPEG and YUYV frames are taken raw (OpenCV's CAP_PROP_CONVERT_RGB off) and
turned into I420 here, the virtual camera's format, without a BGR frame:
JPEGs by `MjpegDecoder`, YUYV by `i420.from_yuyv`. A backend that ignores the
setting still hands BGR, which the pipeline takes as well.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import cv2
import numpy as np

from privacycam import i420
from privacycam.errors import SourceError
from privacycam.sources.base import Frame
from privacycam.sources.mjpeg import MjpegDecoder

log = logging.getLogger(__name__)

# Fourccs whose raw frames become I420 here.
RAW_FOURCCS = ("MJPG", "YUYV")
# A USB glitch now and then hands a truncated JPEG: skip it, but this many in a row means trouble.
MAX_BAD_FRAMES_IN_A_ROW = 30


def device_path(device: int | str) -> str:
    """`0` -> /dev/video0; by-id links are resolved so reconnects find the same camera."""
    if isinstance(device, int) or str(device).isdigit():
        return f"/dev/video{int(device)}"
    return str(device)


class CameraSource:
    live = True

    def __init__(self, device: int | str, width: int, height: int, fps: float, fourcc: str) -> None:
        self.path = device_path(device)
        self.description = f"camera {self.path}"
        self._requested = (width, height, fps, fourcc)
        self._capture: cv2.VideoCapture | None = None
        self._index = 0
        self.open()

    def open(self) -> None:
        if not os.path.exists(self.path):
            raise SourceError(
                f"camera {self.path} does not exist",
                "plug the camera in, or set camera.device (`privacycam doctor` lists cameras)",
            )
        real = str(Path(self.path).resolve())
        capture = cv2.VideoCapture(real, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            busy = _is_busy(real)
            raise SourceError(
                f"camera {self.path} cannot be opened" + (" (another program is using it)" if busy else ""),
                "close the other program that uses the camera" if busy else "check permissions (group video)",
            )
        width, height, fps, fourcc = self._requested
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_FPS, fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        self.size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.fps = capture.get(cv2.CAP_PROP_FPS) or fps
        got = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
        if (self.size, got) != ((width, height), fourcc):
            log.info(
                "camera %s gives %dx%d %s at %.0f fps (asked %dx%d %s at %.0f)",
                self.path,
                *self.size,
                got,
                self.fps,
                width,
                height,
                fourcc,
                fps,
            )
        self._raw = got if got in RAW_FOURCCS and capture.set(cv2.CAP_PROP_CONVERT_RGB, 0) else None
        self._decoder = MjpegDecoder("i420") if self._raw == "MJPG" else None
        self._bad_in_a_row = 0
        self._capture = capture

    def read(self) -> Frame | None:
        if self._capture is None:
            self.open()
        image = None
        while image is None:
            data = self._grab()
            image = self._to_frame_image(data)
        frame = Frame(image, self._index, f"{self._index:05d}")
        self._index += 1
        return frame

    def _to_frame_image(self, data: np.ndarray) -> np.ndarray | None:
        """The camera's buffer as BGR or I420; None for a damaged JPEG (skipped)."""
        if data.ndim == 3 and data.shape[2] == 3:  # the backend converted after all
            return data
        if data.ndim == 3 and data.shape[2] == 2:
            return i420.from_yuyv(data)
        if self._decoder is None:
            raise SourceError(f"camera {self.path} gives frames of shape {data.shape}", "set camera.fourcc: MJPG")
        try:
            image = self._decoder.decode(data.tobytes())
        except (av.FFmpegError, ValueError) as exc:
            self._bad_in_a_row += 1
            if self._bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW:
                raise SourceError(
                    f"camera {self.path} sends damaged JPEG frames ({exc})", "reconnect the camera"
                ) from None
            if self._bad_in_a_row == 1:
                log.warning("camera %s sent a damaged JPEG frame (%s); skipping it", self.path, exc)
            return None
        self._bad_in_a_row = 0
        return image

    def _grab(self) -> np.ndarray:
        ok, image = self._capture.read()
        if not ok or image is None:
            self.close()
            gone = not os.path.exists(self.path)
            raise SourceError(
                f"camera {self.path} " + ("was unplugged" if gone else "stopped delivering frames"),
                "reconnect the camera; PrivacyCam retries on its own",
            )
        return image

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _is_busy(path: str) -> bool:
    """True if some other process holds the device open."""
    target = os.path.realpath(path)
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if pid == me:
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.path.realpath(f"/proc/{pid}/fd/{fd}") == target:
                    return True
        except OSError:
            continue
    return False
