"""Encodes frames into an .mp4/.mkv file with PyAV (H.264, yuv420p)."""

from __future__ import annotations

import contextlib
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
        self._broken = False

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        if image.shape[1] % 2 or image.shape[0] % 2:
            image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        try:
            self._container.mux(self._stream.encode(video_frame))
        except (OSError, av.FFmpegError) as exc:  # av.error.OSError is both; a full disk, a vanished mount
            self._broken = True
            raise _write_error(self.path, exc) from None

    def close(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        try:
            # After a failed write PyAV crashes (SIGSEGV) when asked to flush the encoder,
            # so a broken file is only closed.
            if not self._broken:
                container.mux(self._stream.encode(None))
        except (OSError, av.FFmpegError) as exc:
            raise _write_error(self.path, exc) from None
        finally:
            with contextlib.suppress(OSError, av.FFmpegError):
                container.close()


def _write_error(path: Path, exc: BaseException) -> SinkError:
    reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
    return SinkError(
        f"writing video {path} failed ({reason})", "check free space and that the output path stays writable"
    )
