"""`privacycam bench`: run the real pipeline on a source and print one JSON object of figures.

source -> segmenter -> mask -> compositor -> a sink that converts to I420 like the
virtual camera does, then drops the frame. Progress goes to stderr, never stdout.

The default source is what a webcam sends at 720p and 1080p: MJPEG, made once
from a real clip in ../shared/data at the requested size (cached), decoded
frame by frame on the capture thread. `--input synthetic` measures the built-in
scene instead, which no camera produces and which costs less.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from privacycam import i420
from privacycam.config import load_config
from privacycam.errors import SourceError
from privacycam.pipeline import Pipeline, PrivacyState
from privacycam.sinks import publishable_size
from privacycam.sources import LatestFrameFeed, SequentialFeed, open_source
from privacycam.sources.base import Frame, FrameSource
from privacycam.sources.mjpeg import CLIP_JPEG_QUALITY, MjpegFileSource, make_mjpeg_clip
from privacycam.sources.synthetic import SyntheticSource

log = logging.getLogger(__name__)

WARMUP_FRAMES = 20
REAL = "real"
REPO = Path(__file__).resolve().parents[1]
# A person juggling indoors, 1280x720 at 24 fps: the closest clip in ../shared/data to a webcam view.
REAL_FOOTAGE = REPO.parent / "shared" / "data" / "sam2_juggle_unlabeled" / "video.mp4"
# Frames kept in the cached MJPEG clip (looped): 5 s at 24 fps, ~40 MB at 1080p.
REAL_FOOTAGE_FRAMES = 120


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "privacycam" / "bench" if base else REPO / ".cache" / "bench"


def real_footage_clip(width: int, height: int) -> Path:
    """The real clip as MJPEG at width x height, made on first use and cached."""
    clip = cache_dir() / f"{REAL_FOOTAGE.parent.name}_{width}x{height}_q{CLIP_JPEG_QUALITY}.mjpeg"
    if clip.is_file():
        return clip
    if not REAL_FOOTAGE.is_file():
        raise SourceError(
            f"real footage {REAL_FOOTAGE} is missing",
            "put the shared data beside the repository (../shared/data), or give --input synthetic or a video file",
        )
    print(f"bench: making {clip} from {REAL_FOOTAGE} (once)", file=sys.stderr)
    return make_mjpeg_clip(REAL_FOOTAGE, clip, width, height, REAL_FOOTAGE_FRAMES)


def open_bench_source(
    spec: str, config, width: int, height: int, fps: float, pixel_format: str = "i420"
) -> FrameSource:
    """pixel_format: what the real footage's JPEGs decode to (the references filter BGR)."""
    if spec == REAL:
        clip = real_footage_clip(width, height)
        return EndlessSource(lambda: MjpegFileSource(clip, fps, loop=True, pixel_format=pixel_format))
    if spec == "synthetic":
        return SyntheticSource(width, height, fps)
    return EndlessSource(lambda: open_source(spec, config.camera))


def process_age_ms() -> float:
    """Milliseconds since this process started (from /proc, so imports count too)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime_s = float(f.read().split()[0])
    return (uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of the process
    return usage.ru_utime + usage.ru_stime


class EndlessSource:
    """Loops a finite source so a short clip can feed any number of frames."""

    def __init__(self, make) -> None:
        self._make = make
        self._source: FrameSource = make()
        self.live, self.fps, self.size = False, self._source.fps, self._source.size
        self.description = self._source.description
        self._index = 0

    def read(self) -> Frame | None:
        frame = self._source.read()
        if frame is None:
            self._source.close()
            self._source = self._make()
            frame = self._source.read()
        frame.index = self._index
        self._index += 1
        return frame

    def close(self) -> None:
        self._source.close()


class EncodingDropSink:
    """Takes frames as the virtual camera sink does (BGR converted to I420, I420 as is), then drops them.

    Also marks where the measured run starts: after the model is ready and a
    warm-up, CPU time and stage timings are reset.
    """

    description = "bench (I420 then drop)"
    consumer_watching = True
    takes_i420 = True

    def __init__(self, width: int, height: int, frames: int) -> None:
        self._i420 = np.empty((height * 3 // 2, width), np.uint8)
        self.frames = frames
        self.pipeline: Pipeline | None = None
        self.measured = 0
        self.warm = 0
        self.cpu_start = 0.0
        self.wall_start = 0.0
        self.dropped_start = 0

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        if not i420.is_i420(image):
            i420.from_bgr(image, self._i420)
        pipeline = self.pipeline
        if frame is None or pipeline is None or pipeline.status.segmenter == "loading":
            return
        if self.warm < WARMUP_FRAMES:
            self.warm += 1
            if self.warm == WARMUP_FRAMES:
                self._start_measuring(pipeline)
            return
        self.measured += 1
        if self.measured >= self.frames:
            pipeline.stop()

    def _start_measuring(self, pipeline: Pipeline) -> None:
        pipeline.restart_measurements()
        self.cpu_start = cpu_seconds()
        self.wall_start = time.perf_counter()
        self.dropped_start = pipeline.feed.dropped
        print(f"bench: warmed up, measuring {self.frames} frames", file=sys.stderr)

    def close(self) -> None:
        pass


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else 0.0


def bench_command(args: argparse.Namespace) -> int:
    width, height = publishable_size(args.width, args.height)
    if (width, height) != (args.width, args.height):
        print(f"bench: the virtual camera needs even sizes (I420): measuring {width}x{height}", file=sys.stderr)
    config, _ = load_config(args.config)
    config = config.with_overrides(privacy={"start": True}, camera={"width": width, "height": height})
    source = open_bench_source(args.input, config, width, height, args.fps or 30.0)
    if args.fps:
        # Paced like a camera: the capture thread produces at F fps whether we keep up or not.
        feed = LatestFrameFeed(lambda: source, pace_fps=args.fps, first_source=source)
    else:
        feed = SequentialFeed(source)  # throughput: the next frame as soon as we ask
    sink = EncodingDropSink(width, height, args.frames)
    pipeline = Pipeline(config, feed, sink, (width, height), PrivacyState(True), live=True)
    sink.pipeline = pipeline
    print(
        f"bench: {width}x{height}, {args.frames} frames, {f'{args.fps:.0f} fps paced' if args.fps else 'unpaced'}",
        file=sys.stderr,
    )
    pipeline.run()
    elapsed = time.perf_counter() - sink.wall_start
    cpu = cpu_seconds() - sink.cpu_start
    times = pipeline.times
    frames = max(1, times.frames)
    startup_ms = (
        (pipeline.status.first_output_at - _process_start_perf()) * 1000 if pipeline.status.first_output_at else None
    )
    result = {
        "input": source.description,
        "width": width,
        "height": height,
        "frames": times.frames,
        "fps_target": args.fps,
        "fps": round(times.frames / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_ms_per_frame": round(cpu * 1000 / frames, 2),
        "latency_ms": {q: _percentile(times.latencies_ms, n) for q, n in (("p50", 50), ("p95", 95), ("p99", 99))},
        "stage_ms": {
            name: round(getattr(times, name) / frames, 2)
            for name in ("capture", "segment", "mask", "composite", "sink")
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "startup_ms": round(startup_ms, 1) if startup_ms is not None else None,
        "dropped_frames": pipeline.feed.dropped - sink.dropped_start,
    }
    print(json.dumps(result))
    return 0


def _process_start_perf() -> float:
    """The process start expressed on the perf_counter clock."""
    return time.perf_counter() - process_age_ms() / 1000
