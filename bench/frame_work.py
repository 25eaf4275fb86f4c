"""One frame's work in one thread, the BGR path against the I420 path, for instruction counts.

    valgrind --tool=callgrind python bench/frame_work.py --path i420 --frames 10
    valgrind --tool=callgrind python bench/frame_work.py --path i420 --frames 30

(and the same with --path bgr). Per frame: decode the real-footage MJPEG clip's
next JPEG, mask it (`Matter`), composite it, hand I420 to a sink (the BGR path
converts there). The instructions of one frame are the difference of the two
runs' totals over 20 frames: repeatable on a shared machine, where CPU times
are not. Without valgrind it prints the mean thread CPU ms per frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from privacycam import i420  # noqa: E402
from privacycam.bench import real_footage_clip  # noqa: E402
from privacycam.compositing import Compositor  # noqa: E402
from privacycam.config import Config  # noqa: E402
from privacycam.mask import Matter  # noqa: E402
from privacycam.segmenters import create_segmenter  # noqa: E402
from privacycam.sources.mjpeg import MjpegFileSource  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", choices=("i420", "bgr"), required=True)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # as the pipeline does up to 1080p
    config = Config()
    source = MjpegFileSource(real_footage_clip(args.width, args.height), loop=True, pixel_format=args.path)
    matter = Matter(create_segmenter(config.segmenter), config.mask)
    compositor = Compositor(config.background)
    shrunk = i420.ShrunkBgr()
    sink_buffer = i420.empty(args.width, args.height)
    started = time.thread_time()
    for index in range(args.frames):
        image = source.read().image
        if args.path == "i420":
            alpha = matter.alpha_for(shrunk.convert(image), index * 33)
            out = compositor.compose(image, alpha, shrunk.last_i420)
        else:
            alpha = matter.alpha_for(image, index * 33)
            out = i420.from_bgr(compositor.compose(image, alpha, matter.work_frame), sink_buffer)
        assert out.shape == sink_buffer.shape
    cpu_ms = (time.thread_time() - started) * 1000 / args.frames
    matter.close()
    print(json.dumps({"path": args.path, "frames": args.frames, "thread_cpu_ms_per_frame": round(cpu_ms, 2)}))


if __name__ == "__main__":
    main()
