"""`privacycam matte`: the daemon's own mask pipeline, frame by frame, written as PNG alphas."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from privacycam import i420
from privacycam.config import Config, load_config
from privacycam.errors import SinkError, SourceError
from privacycam.mask import Matter, upsample_alpha
from privacycam.segmenters import create_segmenter
from privacycam.segmenters.background_worker import synchronous
from privacycam.sources import open_source
from privacycam.sources.base import FrameSource

log = logging.getLogger(__name__)


def matte_frames(
    source: FrameSource, config: Config, crops: list[list[tuple[int, int, int, int]]] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """(frame name, uint8 alpha at the frame's size) for every frame, in order.

    crops: if given, gets each yielded frame's crop boxes (frame pixels; `Matter.last_crops`).
    """
    # every frame gets its own mask, however slow the model: no background thread
    matter = Matter(synchronous(create_segmenter(config.segmenter)), config.mask, config.segmenter.people)
    every_nth = config.segmenter.every_nth_frame
    try:
        timestamp_ms = 0
        frame_ms = 1000.0 / source.fps
        index = 0
        alpha: np.ndarray | None = None
        while (frame := source.read()) is not None:
            # MJPEG files and cameras give I420: the matte's frames are BGR (the full-size one is wanted here)
            image = i420.to_bgr(frame.image) if i420.is_i420(frame.image) else frame.image
            height, width = image.shape[:2]
            if index % every_nth == 0 or alpha is None or alpha.shape != (height, width):
                alpha = upsample_alpha(matter.alpha_for(image, int(timestamp_ms)), width, height)
            # else: an in-between frame (segmenter.every_nth_frame > 1) gets the last matte, as in `run`
            timestamp_ms += frame_ms
            index += 1
            if crops is not None:
                crops.append(list(matter.last_crops))
            yield frame.name, alpha
    finally:
        matter.close()


def matte_command(args: argparse.Namespace) -> int:
    config, _ = load_config(args.config)
    input_path = Path(args.input)
    if not input_path.exists():
        raise SourceError(f"input {input_path} does not exist", "give an image folder or a video file")
    source = open_source(str(input_path), config.camera)
    outdir = Path(args.outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create {outdir} ({exc.strerror})", "choose a writable folder") from None
    count = 0
    try:
        for name, alpha in matte_frames(source, config):
            path = outdir / f"{name}.png"
            if not cv2.imwrite(str(path), alpha):
                raise SinkError(f"cannot write {path}", "check free space and permissions")
            count += 1
            if count % 50 == 0:
                print(f"matte: {count} frames", file=sys.stderr)
    finally:
        source.close()
    log.info("wrote %d mattes to %s", count, outdir)
    return 0
