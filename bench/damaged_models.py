"""Damaged copies of a built-in model, loaded as a segmenter.model_path file (which has no known
sha256): how many load, how many change the output, and how many published frames show the far
background sharp, with PrivacyCam's mask checks and without them (the code before issue #18:
values clipped into [0, 1], no privacycam.mask_check). Prints one JSON object.

    python -m bench.damaged_models [--model general] [--copies 56] [--flips 5] [--frames 30]

Built-in files are refused before this point (models.model_path checks their sha256); this
measures what is left for the files it cannot check. Each copy runs in a child process: a
damaged model can crash LiteRT itself.

Measured (general model, 56 copies, 5 random bytes each, 30 lucia frames; the genuine model
shows the far background sharp in 0 frames): 1 copy crashed LiteRT (SIGSEGV), 21 did not
load, 34 loaded; 10 of those showed the far background sharp, in 244 of 1,020 frames with
the mask checks and 248 without. Their mattes mark 20-60 % of the frame as person, as a
person close to the camera does, so no plausibility limit tells them apart: the checks stop
gross failures (everything person, swapped, noise, out of range), the sha256 check stops
damaged built-in files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` and `privacycam` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import DEFAULT_DATA, MemorySource  # noqa: E402
from privacycam import mask  # noqa: E402
from privacycam.compositing import Compositor  # noqa: E402
from privacycam.config import Config  # noqa: E402
from privacycam.errors import ModelError  # noqa: E402
from privacycam.mask_check import MatteHistory  # noqa: E402
from privacycam.models import model_path  # noqa: E402
from privacycam.pipeline import Pipeline, PrivacyState  # noqa: E402
from privacycam.segmenters.base import SegmenterOutputError  # noqa: E402
from privacycam.segmenters.litert_selfie import LiteRtSelfieSegmenter  # noqa: E402
from privacycam.sources import SequentialFeed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = (427, 240)  # lucia at half size: real texture, cheap to process
# Far background: farther than this share of the frame height from the person (ground truth).
FAR_MARGIN = 0.1
# Sharp: the far background keeps more than this share of the original's fine detail.
SHARP_DETAIL_RATIO = 0.1


class ListSink:
    description = "memory"
    consumer_watching = True

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def send(self, image: np.ndarray, frame) -> None:
        if frame is not None:
            self.images.append(image.copy())

    def close(self) -> None:
        pass


def unchecked_mask(confidence: np.ndarray, height: int, width: int) -> np.ndarray:
    """checked_mask as it was: shape, dtype and finiteness only (Matter then clipped to [0, 1])."""
    if not isinstance(confidence, np.ndarray) or confidence.shape[:2] != (height, width):
        raise SegmenterOutputError("bad shape")
    if not np.isfinite(confidence).all():
        raise SegmenterOutputError("mask contains NaN or infinity")
    return confidence


def detail(image: np.ndarray, region: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F)[region].var())


def run_frames(file: Path, model: str, images: list[np.ndarray], checks: bool) -> list[np.ndarray] | None:
    """Published frames of an offline run with this model file; None if it does not load."""
    try:
        segmenter = LiteRtSelfieSegmenter(model, file)
    except ModelError:
        return None
    sink = ListSink()
    config = Config()
    run = Pipeline(
        config,
        SequentialFeed(MemorySource(images, 30.0)),
        sink,
        SIZE,
        PrivacyState(True),
        segmenter_factory=lambda _config: segmenter,
        live=False,
    )
    if checks:
        run.run()
    else:
        with (
            mock.patch.object(MatteHistory, "check", lambda *_: None),
            mock.patch.object(mask, "checked_mask", unchecked_mask),
        ):
            run.run()
    return sink.images


def measure_copy(file: Path, model: str, frames: int, data: Path) -> dict:
    """Both runs of one model file (a child process does this: a damaged model may crash LiteRT)."""
    images, far, originals = _clip(data, frames)
    genuine = run_frames(model_path(model), model, images, checks=True)
    hidden_frames = [Compositor(Config().background).compose_hidden(image) for image in images]
    result = {}
    for name, checks in (("checks", True), ("no checks", False)):
        published = run_frames(file, model, images, checks)
        if published is None:
            result[name] = None
            continue
        sharp = sharp_frames(published, far, originals)
        result[name] = {
            "changed": any(not np.array_equal(a, b) for a, b in zip(published, genuine, strict=True)),
            "sharp": sum(sharp),
            "hidden": sum(np.array_equal(a, b) for a, b in zip(published, hidden_frames, strict=True)),
            "frames": len(published),
        }
    return result


def _clip(data: Path, frames: int) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """lucia's first frames (small), their far-background regions and those regions' detail."""
    folder = data / "davis2016_lucia"
    stems = sorted(p.stem for p in (folder / "masks").glob("*.png"))[:frames]
    images = [_read_small(folder / "frames" / f"{stem}.jpg") for stem in stems]
    margin = round(FAR_MARGIN * SIZE[1])
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    far = []
    for stem in stems:
        truth = cv2.resize(cv2.imread(str(folder / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE), SIZE)
        far.append(cv2.dilate(truth, kernel) == 0)
    return images, far, [detail(image, region) for image, region in zip(images, far, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="general", choices=("general", "landscape"))
    parser.add_argument("--copies", type=int, default=56)
    parser.add_argument("--flips", type=int, default=5)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child: measure this file
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_copy(args.one, args.model, args.frames, args.data)))
        return 0
    images, far, originals = _clip(args.data, args.frames)
    genuine = run_frames(model_path(args.model), args.model, images, checks=True)
    data = model_path(args.model).read_bytes()
    rng = np.random.default_rng(args.seed)
    rows = {"checks": _totals(), "no checks": _totals()}
    crashed = 0
    with tempfile.TemporaryDirectory(prefix="privacycam-damaged-") as tmp:
        for copy in range(args.copies):
            damaged = bytearray(data)
            for offset in rng.choice(len(data), size=args.flips, replace=False):
                damaged[offset] ^= int(rng.integers(1, 256))
            file = Path(tmp) / f"{copy:03d}.tflite"
            file.write_bytes(bytes(damaged))
            child = [sys.executable, "-m", "bench.damaged_models", "--one", str(file), "--model", args.model]
            child += ["--frames", str(args.frames), "--data", str(args.data)]
            done = subprocess.run(child, capture_output=True, text=True, check=False, cwd=REPO)
            if done.returncode != 0:
                crashed += 1
                print(f"copy {copy}: the child died ({done.returncode})", file=sys.stderr)
                continue
            for name, measured in json.loads(done.stdout.splitlines()[-1]).items():
                _add(rows[name], measured)
            print(f"copy {copy}: {rows}", file=sys.stderr)
    report = {"model": args.model, "copies": args.copies, "flipped_bytes": args.flips, "frames_per_copy": len(images)}
    report["crashed_loading_or_running"] = crashed
    report["genuine_sharp_background_frames"] = sum(sharp_frames(genuine, far, originals))
    print(json.dumps({**report, **rows}, indent=1))
    return 0


def _add(totals: dict[str, int], measured: dict | None) -> None:
    if measured is None:
        return
    totals["loaded"] += 1
    totals["changed_output"] += measured["changed"]
    totals["frames"] += measured["frames"]
    totals["sharp_background_frames"] += measured["sharp"]
    totals["hidden_frames"] += measured["hidden"]
    totals["copies_with_a_sharp_frame"] += measured["sharp"] > 0
    totals["worst_copy_sharp_frames"] = max(totals["worst_copy_sharp_frames"], measured["sharp"])


def _read_small(path: Path) -> np.ndarray:
    return cv2.resize(cv2.imread(str(path)), SIZE, interpolation=cv2.INTER_AREA)


def sharp_frames(published: list[np.ndarray], far: list[np.ndarray], originals: list[float]) -> list[bool]:
    """Per frame: does the far background keep its detail (shown unfiltered)?"""
    return [
        detail(image, region) > SHARP_DETAIL_RATIO * original
        for image, region, original in zip(published, far, originals, strict=True)
    ]


def _totals() -> dict[str, int]:
    keys = ("loaded", "changed_output", "frames", "sharp_background_frames", "hidden_frames")
    return {**dict.fromkeys(keys, 0), "copies_with_a_sharp_frame": 0, "worst_copy_sharp_frames": 0}


if __name__ == "__main__":
    sys.exit(main())
