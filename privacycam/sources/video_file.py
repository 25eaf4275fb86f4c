"""A video file decoded with PyAV, at its own frame rate, optionally looping."""

from __future__ import annotations

from pathlib import Path

import av

from privacycam.errors import SourceError
from privacycam.sources.base import Frame


class VideoFileSource:
    live = False

    def __init__(self, path: Path, loop: bool = False) -> None:
        self.path = path
        self.loop = loop
        self.description = f"video {path}"
        self._index = 0
        self._open()

    def _open(self) -> None:
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as exc:
            raise SourceError(
                f"video {self.path} cannot be read ({_first_line(exc) or 'no video stream'})",
                "give a video file that plays (mp4, mkv, webm, ...)",
            ) from None
        stream.thread_type = "AUTO"
        self.fps = float(stream.average_rate or stream.guessed_rate or 30)
        self.size = (stream.codec_context.width, stream.codec_context.height)
        self._frames = self._container.decode(stream)

    def read(self) -> Frame | None:
        try:
            decoded = next(self._frames, None)
        except av.FFmpegError as exc:
            raise SourceError(f"video {self.path} is damaged ({_first_line(exc)})", "re-encode the file") from None
        if decoded is None:
            if not self.loop or self._index == 0:
                return None
            self._container.close()
            self._open()
            return self.read()
        image = decoded.to_ndarray(format="bgr24")
        frame = Frame(image, self._index, f"{self._index:05d}")
        self._index += 1
        return frame

    def close(self) -> None:
        self._container.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""
