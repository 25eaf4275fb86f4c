"""Encodes frames into an .mp4/.mkv file with PyAV (H.264, yuv420p)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from privacycam.errors import SinkError
from privacycam.sources.base import Frame


class VideoFileSink:
    consumer_watching = True

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        self.description = f"video file {path}"
        self.path = path
        try:
            self._container = av.open(str(path), mode="w")
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"cannot write video {path} ({exc})", "choose a writable path") from None
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        # yuv420p needs even sizes; odd inputs are padded by one pixel.
        self._stream.width = width + width % 2
        self._stream.height = height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"preset": "veryfast", "crf": "20"}
        self._size = (width, height)

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        if image.shape[1] % 2 or image.shape[0] % 2:
            image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        self._container.mux(self._stream.encode(video_frame))

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None
