"""Sinks: virtual camera, video file, PNG folder, preview window, null."""

from __future__ import annotations

import logging
from pathlib import Path

from privacycam.config import OutputConfig
from privacycam.errors import SinkError
from privacycam.sinks.base import Sink
from privacycam.sinks.null import NullSink
from privacycam.sinks.png_folder import PngFolderSink
from privacycam.sinks.video_file import VideoFileSink

__all__ = ["Sink", "open_sink", "publishable_size", "sink_is_live"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv")


def sink_is_live(spec: str) -> bool:
    """Live sinks want frames in real time (the newest wins); file sinks want every frame."""
    return spec == "vcam" or spec.startswith("vcam:") or spec == "preview"


def publishable_size(width: int, height: int) -> tuple[int, int]:
    """The size the virtual camera publishes for frames of width x height: I420 needs even sides."""
    return width - width % 2, height - height % 2


def open_sink(spec: str, width: int, height: int, fps: float, output: OutputConfig) -> Sink:
    """SINK of `privacycam run --output`, and the preview window beside it when `output.preview` is on."""
    sink = _open_output(spec, width, height, fps, output)
    if not output.preview or spec == "preview":
        return sink
    from privacycam.sinks.preview import PreviewSink, WithPreview

    try:
        preview = PreviewSink()
    except SinkError as exc:
        # the preview is an extra: the output the user asked for goes on without it
        log.warning("output.preview is on, but %s; going on without it", exc.problem)
        return sink
    return WithPreview(sink, preview)


def _open_output(spec: str, width: int, height: int, fps: float, output: OutputConfig) -> Sink:
    """SINK of `privacycam run --output`: vcam, vcam:/dev/videoN, file.mp4/.mkv, folder, null, preview."""
    if spec == "null":
        return NullSink()
    if spec == "vcam" or spec.startswith("vcam:"):
        from privacycam.sinks.virtual_camera import VirtualCameraSink

        device = spec[len("vcam:") :] or None if spec.startswith("vcam:") else output.device
        return VirtualCameraSink(width, height, fps, device, output.card_label, output.backend)
    if spec == "preview":
        from privacycam.sinks.preview import PreviewSink

        return PreviewSink()
    path = Path(spec).expanduser()
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if not path.parent.is_dir():
            raise SinkError(f"folder {path.parent} for {path.name} does not exist", "create it first")
        return VideoFileSink(path, width, height, fps)
    if path.suffix:
        raise SinkError(
            f"output {spec} is neither .mp4/.mkv nor a folder",
            "use vcam, vcam:/dev/videoN, a .mp4/.mkv path, a folder, or null",
        )
    return PngFolderSink(path)
