"""Mask quality of the I420 path's shrunk mask input against the full-size BGR input, same frames.

    .venv/bin/python bench/i420_quality.py [--framing webcam] [--max-frames 40]

From I420 frames the mask stage gets a BGR copy shrunk to >= 360 lines
(`i420.ShrunkBgr`) instead of the full frame. This scores both inputs through
the same `Matter` with bench/quality.py's metrics and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.metrics import SequenceScore  # noqa: E402
from bench.quality import DEFAULT_DATA, find_sequences, load_sequence  # noqa: E402
from privacycam import i420  # noqa: E402
from privacycam.config import Config  # noqa: E402
from privacycam.mask import Matter, upsample_alpha  # noqa: E402
from privacycam.segmenters import create_segmenter  # noqa: E402


def score(images, truths, config: Config, shrink: bool) -> dict[str, float]:
    matter = Matter(create_segmenter(config.segmenter), config.mask, config.segmenter.people)
    shrunk = i420.ShrunkBgr()
    result = SequenceScore()
    try:
        for index, (image, truth) in enumerate(zip(images, truths, strict=True)):
            given = shrunk.convert(i420.from_bgr(image)) if shrink else image
            alpha = matter.alpha_for(given, index * 33)
            result.add(upsample_alpha(alpha, image.shape[1], image.shape[0]), truth)
    finally:
        matter.close()
    return result.summary()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framing", default="webcam", choices=("davis", "webcam"))
    parser.add_argument("--max-frames", type=int, default=40)
    args = parser.parse_args()
    config = Config()
    rows: dict[str, dict[str, dict[str, float]]] = {"full-size BGR": {}, "shrunk (I420 path)": {}}
    for sequence in find_sequences(DEFAULT_DATA):
        images, truths = load_sequence(sequence, args.max_frames, None, args.framing)
        for row, shrink in (("full-size BGR", False), ("shrunk (I420 path)", True)):
            rows[row][sequence.name] = score(images, truths, config, shrink)
    means = {
        row: {m: round(sum(s[m] for s in per.values()) / len(per), 4) for m in next(iter(per.values()))}
        for row, per in rows.items()
    }
    print(json.dumps({"framing": args.framing, "frames": args.max_frames, "mean": means, "per_sequence": rows}))


if __name__ == "__main__":
    main()
