"""A V4L2 webcam through OpenCV, asked for size, fps and fourcc, read back for what it gave."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2

from privacycam.errors import SourceError
from privacycam.sources.base import Frame

log = logging.getLogger(__name__)


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
        self._capture = capture

    def read(self) -> Frame | None:
        if self._capture is None:
            self.open()
        ok, image = self._capture.read()
        if not ok or image is None:
            self.close()
            gone = not os.path.exists(self.path)
            raise SourceError(
                f"camera {self.path} " + ("was unplugged" if gone else "stopped delivering frames"),
                "reconnect the camera; PrivacyCam retries on its own",
            )
        frame = Frame(image, self._index, f"{self._index:05d}")
        self._index += 1
        return frame

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
