"""Mask quality benchmark: the shipping mask pipeline vs the raw per-frame segmenter.

Runs `privacycam.matte.matte_frames` (the code path of `privacycam matte`) over
every sequence with ground truth in the shared data folder and prints one JSON
object: J, F, flicker, leak, cut, ms/frame and the number of frames with a
straight crop-box edge or a sharp block of background, per sequence and their
mean (counts: their sum), for the pipeline and for a "raw" reference row (the
confidence of the model the
segmenter runs on whole frames, the landscape one by default, on the whole
frame, per frame, upsampled, nothing else), both computed in the same run.
Unlabeled videos (`*_unlabeled`) add speed at their own size (1280x720 for the
juggling clip) and the prediction's own flicker, mean |a_t - a_(t-1)|.

    python -m bench.quality [--sequences lucia,tennis] [--max-frames 30] [--config FILE] [--framing webcam]

Progress goes to stderr, the JSON to stdout. Metric definitions: bench/metrics.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` and `privacycam` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.metrics import SequenceScore, Truth, self_flicker  # noqa: E402
from privacycam.config import Config, load_config  # noqa: E402
from privacycam.mask import upsample_alpha  # noqa: E402
from privacycam.matte import matte_frames  # noqa: E402
from privacycam.segmenters import create_segmenter  # noqa: E402
from privacycam.sources.base import Frame  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELED_PREFIX = "davis2016_"
UNLABELED_SUFFIX = "_unlabeled"
# Timings on a shared 2-core machine are noisy: the pipeline runs this many
# times per sequence and the median of the per-run means is reported.
DEFAULT_TIMING_RUNS = 3
# Frames of each unlabeled video used: enough for a stable speed figure while
# keeping the decoded 720p frames (2.7 MB each) in memory modest.
UNLABELED_FRAMES = 90
# The raw reference's frame clock, as matte_frames uses for a 30 fps source.
RAW_FRAME_MS = 1000 / 30
LABELED_METRICS = ("J", "F", "flicker", "leak", "cut", "ms_per_frame", "cpu_ms_per_frame")
# Frame counts (bench/metrics.py): summed over the sequences in the "mean" rows.
COUNT_METRICS = ("straight_edge_frames", "sharp_block_frames")
ROWS = ("pipeline", "raw")
FRAMINGS = ("davis", "webcam")
# --framing webcam (see webcam_framing): the window is this share of the
# person's full height (head and torso), starts this share of itself above
# their head, pans with a moving average over this many frames.
WEBCAM_WINDOW_HEIGHT = 0.55
WEBCAM_HEADROOM = 0.1
WEBCAM_PAN_FRAMES = 5
WEBCAM_SIZE = (1280, 720)

# Each producer yields (uint8 alpha at frame size, the crop boxes the segmenter saw, frame pixels).
Producer = Callable[[list[np.ndarray], Config, "Timing"], Iterator[tuple[np.ndarray, list]]]


@dataclass(frozen=True)
class Sequence:
    name: str  # without the davis2016_ prefix
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]


@dataclass
class Timing:
    """Per-frame wall-clock and process CPU times (all threads, MediaPipe's too), in ms."""

    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def find_sequences(data_dir: Path, names: list[str] | None = None) -> list[Sequence]:
    """Sequences with per-frame ground truth, in name order (or in the order asked for)."""
    found = {}
    for folder in sorted(data_dir.glob(f"{LABELED_PREFIX}*")):
        masks = tuple(sorted((folder / "masks").glob("*.png")))
        if masks:
            name = folder.name.removeprefix(LABELED_PREFIX)
            found[name] = Sequence(name, tuple(_frame_for(folder / "frames", m.stem) for m in masks), masks)
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


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return image


def load_sequence(
    sequence: Sequence, max_frames: int | None = None, size: tuple[int, int] | None = None, framing: str = "davis"
) -> tuple[list[np.ndarray], list[Truth]]:
    """Frames (BGR) and ground truths in memory, so decoding is not timed; optionally resized.

    framing "webcam": head and torso filling the view (see `webcam_framing`).
    """
    count = len(sequence.frames) if max_frames is None else min(max_frames, len(sequence.frames))
    images, masks = [], []
    for frame_path, mask_path in zip(sequence.frames[:count], sequence.masks[:count], strict=True):
        images.append(_read(frame_path, cv2.IMREAD_COLOR))
        masks.append(_read(mask_path, cv2.IMREAD_GRAYSCALE))
    if framing == "webcam":
        images, masks = webcam_framing(images, masks)
    if size is not None:
        images = [cv2.resize(image, size, interpolation=cv2.INTER_LINEAR) for image in images]
        masks = [cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) for mask in masks]
    return images, [Truth.from_mask(mask) for mask in masks]


def webcam_framing(images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The same sequence as a webcam would frame it: head and torso filling a 1280x720 view.

    The DAVIS people are small and full-body; a webcam user fills the frame and
    is cut by its bottom edge. A 16:9 window WEBCAM_WINDOW_HEIGHT of the person's
    tallest extent high follows their box (centre smoothed like a camera
    operator's pan), its top a little above their head, and frames and masks
    are scaled to WEBCAM_SIZE. The upscaled frames are soft, but the models see
    256 or fewer lines of them either way.
    """
    boxes = np.array([cv2.boundingRect(mask) for mask in masks], np.float64)
    source_h, source_w = images[0].shape[:2]
    window_h = min(source_h, WEBCAM_WINDOW_HEIGHT * boxes[:, 3].max())
    window_w = min(source_w, window_h * 16 / 9)
    window_h = window_w * 9 / 16
    kernel = np.ones(WEBCAM_PAN_FRAMES) / WEBCAM_PAN_FRAMES
    pad = WEBCAM_PAN_FRAMES // 2
    centre_x = np.convolve(np.pad(boxes[:, 0] + boxes[:, 2] / 2, pad, mode="edge"), kernel, "valid")
    top = np.convolve(np.pad(boxes[:, 1], pad, mode="edge"), kernel, "valid") - WEBCAM_HEADROOM * window_h
    width, height = WEBCAM_SIZE
    framed_images, framed_masks = [], []
    for image, mask, x, y in zip(images, masks, centre_x, top, strict=True):
        x0 = float(np.clip(x - window_w / 2, 0, source_w - window_w))
        y0 = float(np.clip(y, 0, source_h - window_h))
        to_source = np.array([[window_w / width, 0, x0], [0, window_h / height, y0]])
        for source, framed in ((image, framed_images), (mask, framed_masks)):
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            framed.append(cv2.warpAffine(source, to_source, WEBCAM_SIZE, flags=flags, borderMode=cv2.BORDER_REPLICATE))
    return framed_images, framed_masks


def load_unlabeled(folder: Path, max_frames: int) -> list[np.ndarray]:
    """Frames of an unlabeled clip: its frames/ folder, else its video.mp4."""
    frames = sorted((folder / "frames").glob("*.jpg")) + sorted((folder / "frames").glob("*.png"))
    if frames:
        return [_read(path, cv2.IMREAD_COLOR) for path in frames[:max_frames]]
    capture = cv2.VideoCapture(str(folder / "video.mp4"))
    images = []
    try:
        while len(images) < max_frames:
            ok, image = capture.read()
            if not ok:
                break
            images.append(image)
    finally:
        capture.release()
    return images


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


def pipeline_alphas(images: list[np.ndarray], config: Config, timing: Timing) -> Iterator[tuple[np.ndarray, list]]:
    """uint8 alphas at frame size from the shipping pipeline, with their crops; records each frame's time.

    The first frame's time is left out: it includes loading the model.
    """
    crops: list[list[tuple[int, int, int, int]]] = []
    frames = matte_frames(MemorySource(images, config.camera.fps), config, crops)
    for index in range(len(images) + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        item = next(frames, None)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if item is None:
            return
        if index > 0:
            timing.wall_ms.append(wall * 1000)
            timing.cpu_ms.append(cpu * 1000)
        yield item[1], crops[-1]


def raw_alphas(images: list[np.ndarray], config: Config, timing: Timing) -> Iterator[tuple[np.ndarray, list]]:
    """The reference: the segmenter's whole-frame model on the whole frame, per frame, confidence upsampled."""
    segmenter = create_segmenter(config.segmenter)
    width, height = segmenter.input_size
    try:
        for index, image in enumerate(images):
            wall, cpu = time.perf_counter(), time.process_time()
            small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
            confidence = np.clip(segmenter.segment(rgb, round(index * RAW_FRAME_MS)), 0.0, 1.0)
            alpha = upsample_alpha(confidence.astype(np.float32), image.shape[1], image.shape[0])
            timing.wall_ms.append((time.perf_counter() - wall) * 1000)
            timing.cpu_ms.append((time.process_time() - cpu) * 1000)
            yield alpha, []
    finally:
        segmenter.close()


def _median_of_means(runs: list[list[float]]) -> float:
    means = [statistics.fmean(run) for run in runs if run]
    return statistics.median(means) if means else float("nan")


def _timed(
    produce: Producer,
    images: list[np.ndarray],
    config: Config,
    runs: int,
    consume: Callable[[np.ndarray, list], None],
) -> dict[str, float]:
    """Run a producer `runs` times (the first one feeding `consume`); median ms per frame."""
    timings = []
    for run in range(runs):
        timings.append(Timing())
        for alpha, crops in produce(images, config, timings[-1]):
            if run == 0:
                consume(alpha, crops)
    return {
        "ms_per_frame": _median_of_means([t.wall_ms for t in timings]),
        "cpu_ms_per_frame": _median_of_means([t.cpu_ms for t in timings]),
    }


def _scorer(score: SequenceScore, truths: list[Truth]) -> Callable[[np.ndarray, list], None]:
    """Feeds the alphas, in order, to score against the matching ground truth."""
    truth_of = iter(truths)
    return lambda alpha, crops: score.add(alpha, next(truth_of), crops)


def evaluate_sequence(
    images: list[np.ndarray], truths: list[Truth], config: Config, timing_runs: int
) -> dict[str, dict[str, float]]:
    rows = {}
    for row, produce in zip(ROWS, (pipeline_alphas, raw_alphas), strict=True):
        score = SequenceScore()
        times = _timed(produce, images, config, timing_runs, _scorer(score, truths))
        rows[row] = score.summary() | times
    return rows


def evaluate_unlabeled(images: list[np.ndarray], config: Config, timing_runs: int) -> dict[str, dict[str, float]]:
    rows = {}
    for row, produce in zip(ROWS, (pipeline_alphas, raw_alphas), strict=True):
        alphas: list[np.ndarray] = []
        times = _timed(produce, images, config, timing_runs, lambda alpha, _crops, keep=alphas.append: keep(alpha))
        rows[row] = {"self_flicker": self_flicker(alphas)} | times
    return rows


def mean_rows(per_sequence: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per row: the mean of each figure over the sequences, and the sum of each frame count."""
    rows = {}
    for row in ROWS:
        values = [seq[row] for seq in per_sequence.values()]
        rows[row] = {m: float(np.mean([v[m] for v in values])) for m in LABELED_METRICS}
        rows[row] |= {m: int(sum(v[m] for v in values)) for m in COUNT_METRICS}
    return rows


def run(
    config: Config,
    data_dir: Path = DEFAULT_DATA,
    names: list[str] | None = None,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    timing_runs: int = DEFAULT_TIMING_RUNS,
    unlabeled: bool = True,
    framing: str = "davis",
) -> dict:
    """The benchmark as a dict (what main prints as JSON)."""
    per_sequence = {}
    for sequence in find_sequences(data_dir, names):
        started = time.perf_counter()
        images, truths = load_sequence(sequence, max_frames, size, framing)
        rows = evaluate_sequence(images, truths, config, timing_runs)
        per_sequence[sequence.name] = {"frames": len(images), "resolution": _resolution(images)} | rows
        _progress(sequence.name, len(images), rows["pipeline"], "J", started)
    result = {
        "segmenter": f"{config.segmenter.backend}:{config.segmenter.model}",
        "framing": framing,
        "mask": config.mask.model_dump(mode="json"),
        "sequences": per_sequence,
        "mean": mean_rows(per_sequence),
    }
    if unlabeled:
        result["unlabeled"] = {}
        for folder in sorted(data_dir.glob(f"*{UNLABELED_SUFFIX}")):
            started = time.perf_counter()
            images = load_unlabeled(folder, min(max_frames or UNLABELED_FRAMES, UNLABELED_FRAMES))
            if len(images) < 2:
                continue
            rows = evaluate_unlabeled(images, config, timing_runs)
            result["unlabeled"][folder.name] = {"frames": len(images), "resolution": _resolution(images)} | rows
            _progress(folder.name, len(images), rows["pipeline"], "ms_per_frame", started)
    return result


def _resolution(images: list[np.ndarray]) -> str:
    return f"{images[0].shape[1]}x{images[0].shape[0]}"


def _progress(name: str, frames: int, row: dict[str, float], key: str, started: float) -> None:
    print(
        f"{name}: {frames} frames, pipeline {key} {row[key]:.3f} ({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )


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
    parser.add_argument("--no-unlabeled", action="store_true", help="skip the unlabeled videos (speed, self-flicker)")
    parser.add_argument(
        "--framing",
        choices=FRAMINGS,
        default="davis",
        help="davis: the clips as they are; webcam: head and torso filling a 1280x720 view (no unlabeled videos)",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)[0] if args.config else Config()
    names = args.sequences.split(",") if args.sequences else None
    timing_runs = max(1, args.timing_runs)
    unlabeled = not args.no_unlabeled and args.framing == "davis"
    result = run(config, args.data, names, args.max_frames, args.resize, timing_runs, unlabeled, args.framing)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
