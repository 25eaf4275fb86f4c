"""How much of the frame real mattes mark as person, leave undecided, or flip: the data behind
`privacycam.mask_check`'s thresholds.

Runs the shipping matte (`privacycam.mask.Matter`, default config or --config) over the
DAVIS clips as they are and framed like a webcam (bench.quality's webcam framing), and
over the unlabeled clips and the portrait, measuring each matte as `mask_check` does
(its thumbnails, its still-frame test). Ground-truth person shares are reported too.
Prints one JSON object: per clip and overall maxima.

    python -m bench.mask_plausibility [--config FILE] [--max-frames N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` and `privacycam` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import DEFAULT_DATA, find_sequences, load_sequence, load_unlabeled  # noqa: E402
from privacycam.config import Config, load_config  # noqa: E402
from privacycam.mask import Matter  # noqa: E402
from privacycam.mask_check import THUMBNAIL_SHRINK, MatteHistory, matte_shares  # noqa: E402
from privacycam.segmenters import create_segmenter  # noqa: E402

UNLABELED = ("sam2_bedroom_unlabeled", "sam2_juggle_unlabeled", "unlabeled_portrait_astronaut")


def measure_clip(images: list[np.ndarray], config: Config) -> dict[str, float]:
    matter = Matter(create_segmenter(config.segmenter), config.mask, config.segmenter.people)
    history = MatteHistory()
    person, undecided, flipped, flipped_still = [], [], [], []
    previous = None
    try:
        for index, image in enumerate(images):
            alpha = matter.alpha_for(image, round(index * 1000 / 30))
            shares = history.measure(alpha, matter.work_frame)
            history.accept()
            person.append(shares.person)
            undecided.append(shares.undecided)
            if shares.flipped is not None:
                flipped_still.append(shares.flipped)
            size = (alpha.shape[1] // THUMBNAIL_SHRINK, alpha.shape[0] // THUMBNAIL_SHRINK)
            thumbnail = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
            if previous is not None:
                flipped.append(matte_shares(thumbnail, previous).flipped)
            previous = thumbnail
    finally:
        matter.close()
    return {
        "frames": len(images),
        "max_person_share": round(max(person), 4),
        "max_undecided_share": round(max(undecided), 4),
        "max_flipped_share": round(max(flipped, default=0.0), 4),
        "still_frames": len(flipped_still),
        "max_flipped_share_still": round(max(flipped_still, default=0.0), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--max-frames", type=int, default=90)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    config = load_config(args.config) if args.config else Config()
    clips: dict[str, dict[str, float]] = {}
    for sequence in find_sequences(args.data):
        for framing in ("davis", "webcam"):
            images, truths = load_sequence(sequence, args.max_frames, framing=framing)
            row = measure_clip(images, config)
            row["max_truth_person_share"] = round(max(float(np.mean(t.fg)) for t in truths), 4)
            clips[f"{sequence.name}/{framing}"] = row
            print(f"{sequence.name}/{framing}: {row}", file=sys.stderr)
    for name in UNLABELED:
        images = load_unlabeled(args.data / name, args.max_frames)
        clips[name] = measure_clip(images, config)
        print(f"{name}: {clips[name]}", file=sys.stderr)
    keys = ("max_person_share", "max_undecided_share", "max_flipped_share", "max_flipped_share_still")
    overall = {key: max(row[key] for row in clips.values()) for key in keys}
    overall["max_truth_person_share"] = max(row.get("max_truth_person_share", 0.0) for row in clips.values())
    overall["frames"] = sum(row["frames"] for row in clips.values())
    overall["still_frames"] = sum(row["still_frames"] for row in clips.values())
    print(json.dumps({"clips": clips, "overall": overall}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
