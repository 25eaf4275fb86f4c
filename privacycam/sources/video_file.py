"""A video file decoded with PyAV, at its own frame rate, optionally looping.

A damaged stretch (packets the decoder rejects) is skipped with one warning, so
the rest of the file still plays; a long run of undecodable packets, a file
with no decodable frame at all, or one that cannot be opened, is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av

from privacycam.errors import SourceEndedEarly, SourceError
from privacycam.sources.base import Frame

log = logging.getLogger(__name__)

# Undecodable packets in a row after which the file counts as unreadable, not damaged in places.
MAX_BAD_PACKETS_IN_A_ROW = 100
# A file whose last frame ends this much before the duration its header gives was cut
# short (a copy or download that stopped). The slack covers an audio track that runs on.
CUT_SHORT_SLACK_S = 0.5
# A rate outside this is a broken header (pacing waits 1/fps); such files play at 30.
SANE_FPS = (1.0, 240.0)


class VideoFileSource:
    live = False

    def __init__(self, path: Path, loop: bool = False) -> None:
        self.path = path
        self.loop = loop
        self.description = f"video {path}"
        self.damaged_packets = 0
        self._index = 0
        self._warned_cut_short = False
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
        if not SANE_FPS[0] <= self.fps <= SANE_FPS[1]:
            log.warning("video %s claims %g fps; playing it at 30", self.path, self.fps)
            self.fps = 30.0
        self._expected_end_s = _declared_end_s(self._container, stream)
        self._last_frame_s = 0.0
        self.size = (stream.codec_context.width, stream.codec_context.height)
        # No generator of our own here: one holding `self` would form a reference cycle,
        # and the decoder (with its threads) would live on until the garbage collector runs.
        self._packets = self._container.demux(stream)
        self._decoded: list[av.VideoFrame] = []
        self._bad_in_a_row = 0

    def _next_decoded(self) -> av.VideoFrame | None:
        while not self._decoded:
            packet = next(self._packets, None)
            if packet is None:
                return None
            try:
                self._decoded = packet.decode()
            except av.InvalidDataError as exc:
                self._note_damage(exc)
                continue
            self._bad_in_a_row = 0
        return self._decoded.pop(0)

    def _note_damage(self, exc: BaseException) -> None:
        self.damaged_packets += 1
        self._bad_in_a_row += 1
        if self._bad_in_a_row >= MAX_BAD_PACKETS_IN_A_ROW:
            raise SourceError(f"video {self.path} is damaged ({_first_line(exc)})", "re-encode the file")
        if self.damaged_packets == 1:
            log.warning("video %s is damaged (%s); skipping what cannot be decoded", self.path, _first_line(exc))

    def read(self) -> Frame | None:
        try:
            decoded = self._next_decoded()
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"video {self.path} is damaged ({_first_line(exc)})", "re-encode the file") from None
        if decoded is None:
            if self._index == 0 and self.damaged_packets:
                raise SourceError(f"video {self.path} is damaged: no frame in it can be decoded", "re-encode the file")
            self._check_complete()
            if not self.loop or self._index == 0:
                return None
            self._container.close()
            self._open()
            return self.read()
        if decoded.time is not None:
            self._last_frame_s = max(self._last_frame_s, decoded.time + 1.0 / self.fps)
        image = decoded.to_ndarray(format="bgr24")
        frame = Frame(image, self._index, f"{self._index:05d}")
        self._index += 1
        return frame

    def _check_complete(self) -> None:
        """At the end: a file cut short ends a run with an error (after its frames), or warns once when looping."""
        if self._expected_end_s is None or self._last_frame_s >= self._expected_end_s - CUT_SHORT_SLACK_S:
            return
        problem = (
            f"video {self.path} ends after {self._last_frame_s:.1f} s of the {self._expected_end_s:.1f} s"
            " its header gives: the file is cut short"
        )
        if not self.loop:
            raise SourceEndedEarly(problem, "copy or download the whole file again; the frames before were processed")
        if not self._warned_cut_short:
            log.warning("%s; looping over what there is", problem)
            self._warned_cut_short = True

    def close(self) -> None:
        self._container.close()


def _declared_end_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Where the header says the video ends, in seconds of its frame times; None if it does not say."""
    base = stream.time_base
    start = float(stream.start_time * base) if stream.start_time is not None and base else 0.0
    if stream.duration and base:
        return start + float(stream.duration * base)
    if container.duration:
        return start + container.duration / av.time_base
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""
