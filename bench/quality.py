"""Mask quality benchmark: the shipping mask pipeline vs the raw per-frame segmenter.

Runs `privacycam.matte.matte_frames` (the code path of `privacycam matte`) over
every sequence with ground truth in the shared data folder and prints one JSON
object with J, F, flicker, leak, cut and ms/frame per sequence and their mean,
for the pipeline and for a "raw" reference row (the same model's confidence,
per frame, upsampled, nothing else), both computed in the same run.

    python -m bench.quality [--sequences lucia,tennis] [--max-frames 30] [--config FILE]

Progress goes to stderr, the JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.metrics import SequenceScore, Truth
from privacycam.config import Config, load_config
from privacycam.mask import upsample_alpha
from privacycam.matte import matte_frames
from privacycam.segmenters import create_segmenter
from privacycam.sources.base import Frame

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEQUENCE_PREFIX = "davis2016_"
# Timings on a shared 2-core machine are noisy: time the pipeline this many
# times per sequence and report the median of the per-run means.
DEFAULT_TIMING_RUNS = 3
METRICS = ("J", "F", "flicker", "leak", "cut", "ms_per_frame", "cpu_ms_per_frame")


@dataclass(frozen=True)
class Sequence:
    name: str  # without the davis2016_ prefix
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]


def find_sequences(data_dir: Path, names: list[str] | None = None) -> list[Sequence]:
    """Sequences with per-frame ground truth, in name order (or in the order asked for)."""
    found = {}
    for folder in sorted(data_dir.glob(f"{SEQUENCE_PREFIX}*")):
        masks = sorted((folder / "masks").glob("*.png"))
        if not masks:
            continue
        frames = tuple(_frame_for(folder / "frames", mask.stem) for mask in masks)
        found[folder.name.removeprefix(SEQUENCE_PREFIX)] = Sequence(
            folder.name.removeprefix(SEQUENCE_PREFIX), frames, tuple(masks)
        )
    if names is None:
        return list(found.values())
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"no sequence {', '.join(missing)} in {data_dir} (have: {', '.join(found)})")
    return [found[n] for n in names]


def _frame_for(folder: Path, stem: str) -> Path:
    for suffix in (".jpg", ".png"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise SystemExit(f"no frame for mask {stem} in {folder}")


def load_sequence(
    sequence: Sequence, max_frames: int | None = None, size: tuple[int, int] | None = None
) -> tuple[list[np.ndarray], list[Truth]]:
    """Frames (BGR) and ground truths in memory, so decoding is not timed; optionally resized."""
    count = len(sequence.frames) if max_frames is None else min(max_frames, len(sequence.frames))
    images, truths = [], []
    for frame_path, mask_path in zip(sequence.frames[:count], sequence.masks[:count], strict=True):
        image = cv2.imread(str(frame_path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:
            raise SystemExit(f"cannot read {frame_path} or {mask_path}")
        if size is not None:
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        images.append(image)
        truths.append(Truth.from_mask(mask))
    return images, truths


class MemorySource:
    """A FrameSource over frames already in memory (what `matte_frames` reads)."""

    live = False

    def __init__(self, images: list[np.ndarray], fps: float) -> None:
        self.images = images
        self.fps = fps
        self.description = "memory"
        self.size = (images[0].shape[1], images[0].shape[0])
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= len(self.images):
            return None
        frame = Frame(self.images[self._index], self._index, f"{self._index:05d}")
        self._index += 1
        return frame

    def close(self) -> None:
        self._index = len(self.images)


@dataclass
class Timing:
    """Per-frame wall-clock and process CPU times (all threads, so MediaPipe's too), in ms."""

    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def pipeline_alphas(images: list[np.ndarray], config: Config, timing: Timing) -> Iterator[np.ndarray]:
    """uint8 alphas at frame size from the shipping pipeline; records each frame's time.

    The first frame's time is left out: it includes loading the model.
    """
    frames = matte_frames(MemorySource(images, config.camera.fps), config)
    index = 0
    while True:
        wall, cpu = time.perf_counter(), time.process_time()
        item = next(frames, None)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if item is None:
            return
        if index > 0:
            timing.wall_ms.append(wall * 1000)
            timing.cpu_ms.append(cpu * 1000)
        index += 1
        yield item[1]


def raw_alphas(images: list[np.ndarray], config: Config, timing: Timing) -> Iterator[np.ndarray]:
    """The reference: the same model on the whole frame, per frame, confidence upsampled."""
    segmenter = create_segmenter(config.segmenter)
    width, height = segmenter.input_size
    try:
        for index, image in enumerate(images):
            wall, cpu = time.perf_counter(), time.process_time()
            small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
            confidence = np.clip(segmenter.segment(rgb, index * 33), 0.0, 1.0)
            alpha = upsample_alpha(confidence.astype(np.float32), image.shape[1], image.shape[0])
            timing.wall_ms.append((time.perf_counter() - wall) * 1000)
            timing.cpu_ms.append((time.process_time() - cpu) * 1000)
            yield alpha
    finally:
        segmenter.close()


def score(alphas: Iterator[np.ndarray], truths: list[Truth]) -> SequenceScore:
    result = SequenceScore()
    for alpha, truth in zip(alphas, truths, strict=True):
        result.add(alpha, truth)
    return result


def timed_only(make: Iterator[np.ndarray]) -> None:
    for _ in make:
        pass


def evaluate_sequence(
    images: list[np.ndarray], truths: list[Truth], config: Config, timing_runs: int
) -> dict[str, dict[str, float]]:
    rows = {}
    for row, producer in (("pipeline", pipeline_alphas), ("raw", raw_alphas)):
        timings = [Timing()]
        figures = score(producer(images, config, timings[0]), truths).summary()
        for _ in range(timing_runs - 1):
            timings.append(Timing())
            timed_only(producer(images, config, timings[-1]))
        figures["ms_per_frame"] = _median_of_means([t.wall_ms for t in timings])
        figures["cpu_ms_per_frame"] = _median_of_means([t.cpu_ms for t in timings])
        rows[row] = figures
    return rows


def _median_of_means(runs: list[list[float]]) -> float:
    means = [statistics.fmean(run) for run in runs if run]
    return statistics.median(means) if means else float("nan")


def mean_rows(per_sequence: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    rows = {}
    for row in ("pipeline", "raw"):
        rows[row] = {m: float(np.mean([seq[row][m] for seq in per_sequence.values()])) for m in METRICS}
    return rows


def run(
    config: Config,
    data_dir: Path = DEFAULT_DATA,
    names: list[str] | None = None,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    timing_runs: int = DEFAULT_TIMING_RUNS,
) -> dict:
    """The benchmark as a dict (what main prints as JSON)."""
    per_sequence = {}
    for sequence in find_sequences(data_dir, names):
        started = time.perf_counter()
        images, truths = load_sequence(sequence, max_frames, size)
        rows = evaluate_sequence(images, truths, config, timing_runs)
        rows["frames"] = len(images)
        rows["resolution"] = f"{images[0].shape[1]}x{images[0].shape[0]}"
        per_sequence[sequence.name] = rows
        print(
            f"{sequence.name}: {len(images)} frames, pipeline J {rows['pipeline']['J']:.3f} "
            f"({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
        )
    return {
        "segmenter": f"{config.segmenter.backend}:{config.segmenter.model}",
        "mask": config.mask.model_dump(mode="json"),
        "sequences": per_sequence,
        "mean": mean_rows(per_sequence),
    }


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", help="comma-separated names, e.g. lucia,tennis (default: all)")
    parser.add_argument("--max-frames", type=int, help="use only the first N frames of each sequence")
    parser.add_argument("--config", help="PrivacyCam YAML config (default: the built-in defaults)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"data folder (default {DEFAULT_DATA})")
    parser.add_argument("--resize", type=_size, help="resize frames and masks to WxH first, e.g. 1280x720")
    parser.add_argument("--timing-runs", type=int, default=DEFAULT_TIMING_RUNS, help="median over this many runs")
    args = parser.parse_args(argv)
    config = load_config(args.config)[0] if args.config else Config()
    names = args.sequences.split(",") if args.sequences else None
    result = run(config, args.data, names, args.max_frames, args.resize, max(1, args.timing_runs))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
