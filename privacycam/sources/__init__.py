"""Frame sources: camera, video file, image folder, built-in synthetic scene."""

from __future__ import annotations

import os
from pathlib import Path

from privacycam.config import CameraConfig
from privacycam.errors import SourceError
from privacycam.sources.base import Frame, FrameSource
from privacycam.sources.camera import CameraSource
from privacycam.sources.feed import LatestFrameFeed, SequentialFeed
from privacycam.sources.image_folder import ImageFolderSource
from privacycam.sources.mjpeg import MJPEG_SUFFIXES, MjpegFileSource
from privacycam.sources.synthetic import SyntheticSource
from privacycam.sources.video_file import VideoFileSource

__all__ = [
    "Frame",
    "FrameSource",
    "LatestFrameFeed",
    "SequentialFeed",
    "SourceSpec",
    "describe_source",
    "open_source",
]

SYNTHETIC = "synthetic"


def is_camera(spec: int | str) -> bool:
    text = str(spec)
    return text.isdigit() or text.startswith("/dev/")


def open_source(spec: int | str, camera: CameraConfig) -> FrameSource:
    """SRC of `privacycam run --input`: camera index or /dev path, video file, raw MJPEG
    stream (.mjpeg), image folder, or `synthetic`."""
    if is_camera(spec):
        return CameraSource(spec, camera.width, camera.height, camera.fps, camera.fourcc)
    if spec == SYNTHETIC:
        return SyntheticSource(camera.width, camera.height, camera.fps)
    path = Path(os.path.expanduser(str(spec)))
    if path.is_dir():
        return ImageFolderSource(path, camera.fps)
    if path.is_file() and path.suffix.lower() in MJPEG_SUFFIXES:
        return MjpegFileSource(path, camera.fps)
    if path.is_file():
        return VideoFileSource(path, loop=False)
    raise SourceError(
        f"input {spec} does not exist",
        "give a camera index or /dev/video path, a video file, an image folder, or `synthetic`",
    )


SourceSpec = int | str


def describe_source(spec: SourceSpec) -> str:
    return f"camera {spec}" if is_camera(spec) else str(spec)
