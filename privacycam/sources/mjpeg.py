"""MJPEG, what a webcam sends at 720p and 1080p: a stream of JPEG images, decoded here.

`MjpegFileSource` plays a raw MJPEG file (concatenated JPEGs, ffmpeg's `-f mjpeg`)
and decodes each frame inside `read()`, so on a `LatestFrameFeed` the decode runs
on the capture thread as a camera's would. `make_mjpeg_clip` writes such a file
once from any video PyAV reads (the benchmark's real footage).

Decoding is PyAV's MJPEG decoder, a dependency already: on this machine it
decodes as fast as libjpeg-turbo through PyTurboJPEG or simplejpeg (720p 4:2:2
at quality 85: 4.6-5.4 ms for all three, the machine shared), and it hands out
the JPEG's own Y/Cb/Cr planes without a colour conversion. Frames leave as I420
(`privacycam.i420`) by default: 0.9 ms less than asking PyAV for BGR at 720p,
and 2.5 ms less than its own swscale conversion to yuv420p.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import cv2
import numpy as np

from privacycam import i420
from privacycam.errors import SourceError
from privacycam.sources.base import Frame

log = logging.getLogger(__name__)

# What common UVC webcams send: 4:2:2 chroma, quality in the 80s.
CLIP_JPEG_QUALITY = 85
MJPEG_SUFFIXES = (".mjpeg", ".mjpg")


def make_mjpeg_clip(video: Path, out: Path, width: int, height: int, max_frames: int) -> Path:
    """Write the first `max_frames` frames of `video`, scaled to cover width x height, as MJPEG."""
    from privacycam.compositing import cover  # lazily: compositing imports the mask stage

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        CLIP_JPEG_QUALITY,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    ]
    written = 0
    with av.open(str(video)) as container, partial.open("wb") as sink:
        for decoded in container.decode(video=0):
            image = cover(decoded.to_ndarray(format="bgr24"), width, height)
            ok, jpeg = cv2.imencode(".jpg", image, params)
            if not ok:
                raise SourceError(f"cannot encode a frame of {video} as JPEG", "check the video file")
            sink.write(jpeg.tobytes())
            written += 1
            if written >= max_frames:
                break
    if written == 0:
        partial.unlink()
        raise SourceError(f"video {video} has no frame to make an MJPEG clip of", "give a video that plays")
    partial.replace(out)  # whole or not at all: a cache never holds half a clip
    return out


# JPEG layouts whose planes go to I420 without a colour conversion.
JPEG_PLANES = {"yuvj420p", "yuvj422p"}


class MjpegDecoder:
    """JPEG bytes -> a new BGR or I420 frame array (a new one each time: a capture thread hands
    frames to other threads, which may still hold the previous one)."""

    def __init__(self, pixel_format: str = "i420") -> None:
        if pixel_format not in ("i420", "bgr"):
            raise ValueError(f"pixel_format {pixel_format!r}: use i420 or bgr")
        self.pixel_format = pixel_format
        self._codec = av.CodecContext.create("mjpeg", "r")

    def decode(self, jpeg: av.Packet | bytes) -> np.ndarray:
        """Raises av.FFmpegError or ValueError for data that is not a JPEG image."""
        packet = jpeg if isinstance(jpeg, av.Packet) else av.Packet(jpeg)
        decoded = self._codec.decode(packet)
        if len(decoded) != 1:
            raise ValueError("no image in the data")
        (picture,) = decoded
        if self.pixel_format == "bgr":
            return picture.to_ndarray(format="bgr24")
        width, height = picture.width & ~1, picture.height & ~1  # I420 needs even sides
        out = i420.empty(width, height)
        if picture.format.name not in JPEG_PLANES:  # 4:4:4, grey: rare in cameras, via BGR
            return i420.from_bgr(picture.to_ndarray(format="bgr24")[:height, :width], out)
        y, cb, cr = (_plane_view(plane, plane.height, plane.width) for plane in picture.planes)
        chroma_rows = height if picture.format.name == "yuvj422p" else height // 2
        return i420.from_jpeg_planes(
            y[:height, :width], cb[:chroma_rows, : width // 2], cr[:chroma_rows, : width // 2], out
        )


def _plane_view(plane: av.video.plane.VideoPlane, height: int, width: int) -> np.ndarray:
    """The plane's pixels without a copy (its rows are `line_size` bytes apart)."""
    return np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)[:, :width]


class MjpegFileSource:
    """A raw MJPEG file, decoded frame by frame like a camera's stream (optionally looping)."""

    live = False

    def __init__(self, path: Path, fps: float = 30.0, loop: bool = False, pixel_format: str = "i420") -> None:
        self.path = path
        self.fps = fps
        self.loop = loop
        self.description = f"MJPEG {path}"
        self._decoder = MjpegDecoder(pixel_format)
        self._index = 0
        self._open()
        self.size = i420.frame_size(self._decode(self._next_packet()))
        self._open()  # from the start again: the first frame is read like every other

    def _open(self) -> None:
        try:
            self._container = av.open(str(self.path), format="mjpeg")
            self._packets = self._container.demux(video=0)
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"MJPEG file {self.path} cannot be read ({exc})", "give a raw .mjpeg stream") from None

    def _next_packet(self) -> av.Packet | None:
        for packet in self._packets:
            if packet.size:
                return packet
        return None

    def _decode(self, packet: av.Packet | None) -> np.ndarray:
        if packet is None:
            raise SourceError(f"MJPEG file {self.path} holds no frame", "give a raw .mjpeg stream")
        try:
            return self._decoder.decode(packet)
        except (av.FFmpegError, ValueError) as exc:
            raise SourceError(
                f"MJPEG frame {self._index} of {self.path} is damaged ({exc})", "re-make the clip"
            ) from None

    def read(self) -> Frame | None:
        packet = self._next_packet()
        if packet is None:
            if not self.loop:
                return None
            self._container.close()
            self._open()
            packet = self._next_packet()
        frame = Frame(self._decode(packet), self._index, f"{self._index:05d}")
        self._index += 1
        return frame

    def close(self) -> None:
        self._container.close()
