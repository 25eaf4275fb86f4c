"""Webcam-framed mask benchmark with exact ground truth and motion.

Two sets, one JSON object on stdout (progress on stderr):

- "composited": each DAVIS person, cut out with their ground-truth mask frame
  by frame (so arms and legs move as they really did), head and torso scaled
  to fill a 1280x720 view and cut by its bottom edge, pasted over a person-free
  part of another clip (scaled to 1280x720), while the whole figure sways from
  side to side, leans (rotates about the bottom centre), bobs (nods) and comes
  closer and goes back. The ground truth is the pasted alpha at 0.5: exact.
  Arm raises are not synthesised: the cut-outs only move their limbs as they did.
- "framed": the `bench.quality --framing webcam` views of the same clips.

For each: J, F, flicker, leak, cut, the frames with a straight crop-box edge
or a sharp block of background, and ms per frame, per clip and mean (counts
summed), for the shipping pipeline and the raw whole-frame model.

    python -m bench.webcam [--sequences lucia,tennis] [--max-frames 40] [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` and `privacycam` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import quality  # noqa: E402
from bench.metrics import Truth  # noqa: E402
from privacycam.config import Config, load_config  # noqa: E402

SIZE = (1280, 720)
# The visible part of the person: their top HEAD_AND_TORSO of their height,
# scaled to fill TORSO_FILL of the view's height below HEADROOM.
HEAD_AND_TORSO = 0.35
HEADROOM = 0.1
# Motion added to the cut-out (periods in frames, amplitudes in view shares/degrees).
SWAY = (90, 0.12)  # horizontal sway, share of the view width
LEAN = (120, 8.0)  # rotation about the bottom centre, degrees
BOB = (40, 0.02)  # vertical nod, share of the view height
APPROACH = (150, 0.15)  # scale change (coming closer), share of the size
# Clips whose ground truth is more than the person (kite-walk: the kite lines
# reach far above them) give backgrounds only, never the pasted person.
NOT_A_PERSON_ALONE = {"kite-walk"}
# The background: a window of at most this share of the source height from the
# first frame of another clip, on the side of the frame away from its person.
BACKGROUND_WINDOW = 0.7


def _oscillation(step: int, period_amplitude: tuple[float, float], phase: float = 0.0) -> float:
    period, amplitude = period_amplitude
    return amplitude * math.sin(2 * math.pi * step / period + phase)


def background_from(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The 16:9 window of a clip's frame beside its person (on the roomier side), scaled to SIZE."""
    height, width = image.shape[:2]
    x, _, w, _ = cv2.boundingRect(mask)
    left_room, right_room = x, width - (x + w)
    win_w = min(width, round(BACKGROUND_WINDOW * height * 16 / 9), max(left_room, right_room))
    win_h = round(win_w * 9 / 16)
    x0 = 0 if left_room >= right_room else width - win_w
    return cv2.resize(image[height - win_h :, x0 : x0 + win_w], SIZE, interpolation=cv2.INTER_LINEAR)


def composite(
    images: list[np.ndarray], masks: list[np.ndarray], background: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The person of images/masks as a moving webcam user over background; (frames, truth masks)."""
    view_w, view_h = SIZE
    boxes = np.array([cv2.boundingRect(mask) for mask in masks], np.float64)
    person_h = boxes[:, 3].max()
    base_scale = (1 - HEADROOM) * view_h / (HEAD_AND_TORSO * person_h)
    # the cut-out's anchor: top centre of their box, smoothed like quality.webcam_framing's pan
    kernel = np.ones(quality.WEBCAM_PAN_FRAMES) / quality.WEBCAM_PAN_FRAMES
    pad = quality.WEBCAM_PAN_FRAMES // 2
    anchor_x = np.convolve(np.pad(boxes[:, 0] + boxes[:, 2] / 2, pad, mode="edge"), kernel, "valid")
    anchor_y = np.convolve(np.pad(boxes[:, 1], pad, mode="edge"), kernel, "valid")
    frames, truths = [], []
    for step, (image, mask) in enumerate(zip(images, masks, strict=True)):
        scale = base_scale * (1 + _oscillation(step, APPROACH))
        centre_x = view_w * (0.5 + _oscillation(step, SWAY))
        top = HEADROOM * view_h + _oscillation(step, BOB, 1.0) * view_h
        # source -> view: scale about the anchor, then rotate about the view's bottom centre
        to_view = np.array(
            [[scale, 0, centre_x - scale * anchor_x[step]], [0, scale, top - scale * anchor_y[step]], [0, 0, 1]]
        )
        lean = cv2.getRotationMatrix2D((centre_x, float(view_h)), _oscillation(step, LEAN, 2.0), 1.0)
        matrix = (np.vstack([lean, [0, 0, 1]]) @ to_view)[:2]
        person = cv2.warpAffine(image, matrix, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, matrix, SIZE, flags=cv2.INTER_LINEAR, borderValue=0)
        weight = alpha.astype(np.float32)[..., None] * (1 / 255)
        frames.append((person * weight + background * (1 - weight)).astype(np.uint8))
        truths.append(np.where(alpha >= 128, 255, 0).astype(np.uint8))
    return frames, truths


def composited_sequences(
    sequences: list[quality.Sequence], max_frames: int | None
) -> list[tuple[str, list[np.ndarray], list[np.ndarray]]]:
    """(name, frames, truth masks): each clip's person over the next clip's background."""
    loaded = [quality.load_sequence(seq, max_frames) for seq in sequences]
    raw_masks = [[truth.fg.astype(np.uint8) * 255 for truth in truths] for _, truths in loaded]
    result = []
    for index, seq in enumerate(sequences):
        if seq.name in NOT_A_PERSON_ALONE:
            continue
        other = (index + 1) % len(sequences)
        background = background_from(loaded[other][0][0], raw_masks[other][0])
        frames, truths = composite(loaded[index][0], raw_masks[index], background)
        result.append((f"{seq.name}-over-{sequences[other].name}", frames, truths))
    return result


def evaluate(named: list[tuple[str, list[np.ndarray], list[np.ndarray]]], config: Config, runs: int) -> dict:
    per_sequence = {}
    for name, frames, masks in named:
        started = time.perf_counter()
        truths = [Truth.from_mask(mask) for mask in masks]
        rows = quality.evaluate_sequence(frames, truths, config, runs)
        share = float(np.mean([truth.fg.mean() for truth in truths]))
        per_sequence[name] = {"frames": len(frames), "person_share": share} | rows
        print(
            f"{name}: {len(frames)} frames, pipeline J {rows['pipeline']['J']:.3f} "
            f"({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
        )
    return {"sequences": per_sequence, "mean": quality.mean_rows(per_sequence)}


def run(config: Config, data_dir: Path, names: list[str] | None, max_frames: int | None, runs: int) -> dict:
    sequences = quality.find_sequences(data_dir, names)
    if len(sequences) < 2:
        raise SystemExit("the composited set needs at least two sequences (one gives the other's background)")
    framed = []
    for seq in sequences:
        images, truths = quality.load_sequence(seq, max_frames, None, "webcam")
        framed.append((seq.name, images, [truth.fg.astype(np.uint8) * 255 for truth in truths]))
    return {
        "segmenter": f"{config.segmenter.backend}:{config.segmenter.model}",
        "mask": config.mask.model_dump(mode="json"),
        "composited": evaluate(composited_sequences(sequences, max_frames), config, runs),
        "framed": evaluate(framed, config, runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", help="comma-separated names, e.g. lucia,tennis (default: all)")
    parser.add_argument("--max-frames", type=int, help="use only the first N frames of each sequence")
    parser.add_argument("--config", help="PrivacyCam YAML config (default: the built-in defaults)")
    parser.add_argument("--data", type=Path, default=quality.DEFAULT_DATA, help="data folder")
    parser.add_argument("--timing-runs", type=int, default=1, help="median over this many runs")
    args = parser.parse_args(argv)
    config = load_config(args.config)[0] if args.config else Config()
    names = args.sequences.split(",") if args.sequences else None
    result = run(config, args.data, names, args.max_frames, max(1, args.timing_runs))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
