"""Fault injection through the real interfaces: a camera that goes away, a segmenter that
raises or answers garbage, sinks that record, stall or fail. Used by test_faults and test_soak."""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from conftest import laplacian_variance, sequence

from privacycam.config import Config, SegmenterConfig
from privacycam.errors import SinkError, SourceError
from privacycam.pipeline import Pipeline, PrivacyState, placeholder_image
from privacycam.sources.base import Frame, FrameSource

SMALL = (427, 240)  # lucia at half size: real texture, cheap to process
PLACEHOLDER_TEXTS = ("PrivacyCam: waiting for camera", "PrivacyCam: camera unavailable", "PrivacyCam: camera off")
# The fake person: a box in the middle of the frame, in fractions of width and height.
PERSON_BOX = (0.38, 0.2, 0.62, 1.0)


@cache
def lucia(size: tuple[int, int] | None = None) -> tuple[tuple[str, np.ndarray], ...]:
    """(stem, BGR image) of every lucia frame, optionally resized."""
    frames = []
    for path in sorted((sequence("davis2016_lucia") / "frames").iterdir()):
        image = cv2.imread(str(path))
        if size is not None:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        frames.append((path.stem, image))
    return tuple(frames)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def far_from_box(width: int, height: int, box: tuple[float, float, float, float] = PERSON_BOX) -> np.ndarray:
    """Pixels well away from the fake person (its box grown by a tenth of the frame), as a bool mask."""
    x0, y0, x1, y1 = box
    margin_x, margin_y = round(0.1 * width), round(0.1 * height)
    near = np.zeros((height, width), bool)
    near[
        max(0, round(y0 * height) - margin_y) : round(y1 * height) + margin_y,
        max(0, round(x0 * width) - margin_x) : round(x1 * width) + margin_x,
    ] = True
    return ~near


def is_blurred(output: np.ndarray, original: np.ndarray, region: np.ndarray, ratio: float = 0.1) -> bool:
    """True if the region's fine detail (Laplacian variance) is far below the original's."""
    return laplacian_variance(output, region) < ratio * laplacian_variance(original, region)


def placeholders(width: int, height: int, config: Config) -> list[np.ndarray]:
    return [placeholder_image(width, height, config.privacy.placeholder_color, text) for text in PLACEHOLDER_TEXTS]


def is_placeholder(image: np.ndarray, known: list[np.ndarray]) -> bool:
    return any(np.array_equal(image, candidate) for candidate in known)


# -- sources -----------------------------------------------------------------------------
class ClipSource:
    """A 'camera' playing in-memory frames (looping, or once); each read hands out a fresh copy."""

    live = True
    description = "test clip"

    def __init__(self, frames: tuple[tuple[str, np.ndarray], ...], fps: float = 30.0, loop: bool = True) -> None:
        self.frames = frames
        self.fps = fps
        self.loop = loop
        height, width = frames[0][1].shape[:2]
        self.size = (width, height)
        self._index = 0
        self.closed = False

    def read(self) -> Frame | None:
        if not self.loop and self._index >= len(self.frames):
            return None
        name, image = self.frames[self._index % len(self.frames)]
        frame = Frame(image.copy(), self._index, name)
        self._index += 1
        return frame

    def close(self) -> None:
        self.closed = True


class FlakyCamera:
    """A camera that can be unplugged (reads and opens fail), busy (opens fail) or flaky.

    `open` is the feed's `open_source` callable; every attempt is timed in `opens`.
    With `fail_after`, the camera unplugs itself after that many frames. A read whose
    number is in `failing_reads` raises once (the feed then reopens); `open_fails()`,
    if given, makes an open attempt fail as busy when it returns True.
    """

    def __init__(
        self,
        frames: tuple[tuple[str, np.ndarray], ...],
        fail_after: int | None = None,
        failing_reads: set[int] | frozenset[int] = frozenset(),
        open_fails: Callable[[], bool] | None = None,
    ) -> None:
        self.frames = frames
        self.fail_after = fail_after
        self.failing_reads = failing_reads
        self.open_fails = open_fails
        self.busy = False
        self.plugged = True
        self.unplugged_at: float | None = None
        self.opens: list[float] = []
        self.failed_opens = 0
        self.failed_reads = 0
        self.sources: list[ClipSource] = []
        self.reads = 0

    def open(self) -> FrameSource:
        self.opens.append(time.monotonic())
        if self.busy or (self.open_fails is not None and self.open_fails()):
            self.failed_opens += 1
            raise SourceError(
                "camera /dev/video0 cannot be opened (another program is using it)",
                "close the other program that uses the camera",
            )
        if not self.plugged:
            self.failed_opens += 1
            raise SourceError("camera /dev/video0 does not exist", "plug the camera in")
        source = _CameraSource(self)
        self.sources.append(source)
        return source

    def unplug(self) -> None:
        self.plugged = False
        self.unplugged_at = time.monotonic()

    def plug(self) -> None:
        self.plugged = True


class _CameraSource(ClipSource):
    def __init__(self, camera: FlakyCamera) -> None:
        super().__init__(camera.frames)
        self.description = "camera /dev/video0"
        self._camera = camera
        self._index = camera.reads  # a reconnected camera goes on where it was

    def read(self) -> Frame | None:
        camera = self._camera
        if camera.fail_after is not None and camera.reads >= camera.fail_after:
            camera.fail_after = None  # once; after the replug it works again
            camera.unplug()
        if not camera.plugged:
            raise SourceError("camera /dev/video0 was unplugged", "reconnect the camera")
        camera.reads += 1
        if camera.reads in camera.failing_reads:
            camera.failed_reads += 1
            raise SourceError("camera /dev/video0 stopped delivering frames", "reconnect the camera")
        return super().read()


# -- holding a stage ---------------------------------------------------------------------
class StageGate:
    """Holds a fake stage inside one call until released, so a test can count what happens
    behind a slow stage (frames captured, dropped, queued) instead of timing it."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.holding = threading.Event()  # set while a call is held
        self._hold_next = threading.Event()
        self._released = threading.Event()
        self._timeout_s = timeout_s

    def hold_next_call(self) -> None:
        self._released.clear()
        self.holding.clear()
        self._hold_next.set()

    def release(self) -> None:
        self._hold_next.clear()
        self._released.set()

    def pass_through(self) -> None:
        if self._hold_next.is_set():
            self.holding.set()
            self._released.wait(self._timeout_s)  # bounded: a failing test must not hang the run
            self.holding.clear()


# -- segmenters --------------------------------------------------------------------------
def _garbage(kind: str, height: int, width: int) -> object:
    return {
        "nan": lambda: np.full((height, width), np.nan, np.float32),
        "inf": lambda: np.full((height, width), np.inf, np.float32),
        "shape": lambda: np.zeros((height // 2, width + 3), np.float32),
        "empty": lambda: np.zeros((0, 0), np.float32),
        "none": lambda: None,
        "list": lambda: [[0.5] * width] * height,
        "uint8": lambda: np.zeros((height, width), np.uint8),
        "float64": lambda: np.zeros((height, width), np.float64),
    }[kind]()


GARBAGE_KINDS = ("nan", "inf", "shape", "empty", "none", "list")


class ScriptedSegmenter:
    """A fake model: the person is PERSON_BOX. `script(call_index)` picks "ok", "raise" or a garbage kind."""

    name = "scripted"

    def __init__(
        self,
        script: Callable[[int], str] = lambda _: "ok",
        input_size: tuple[int, int] = (128, 72),
        delay_s: float = 0,
        gate: StageGate | None = None,
    ) -> None:
        self.input_size = input_size
        self.script = script
        self.delay_s = delay_s
        self.gate = gate
        self.calls: list[str] = []
        self.closed = False
        width, height = input_size
        x0, y0, x1, y1 = PERSON_BOX
        self._mask = np.zeros((height, width), np.float32)
        self._mask[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)] = 1.0

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        kind = self.script(len(self.calls))
        self.calls.append(kind)
        if self.gate is not None:
            self.gate.pass_through()
        if self.delay_s:
            time.sleep(self.delay_s)
        if kind == "raise":
            raise RuntimeError("the model exploded")
        if kind != "ok":
            return _garbage(kind, *rgb.shape[:2])  # type: ignore[return-value]
        return self._mask

    def close(self) -> None:
        self.closed = True


class FaultySegmenter:
    """Wraps a real segmenter; `fault()` decides per call: None (real answer), "raise" or a garbage kind."""

    def __init__(self, inner, fault: Callable[[], str | None]) -> None:
        self.inner = inner
        self.name = f"faulty-{inner.name}"
        self.input_size = inner.input_size
        self._fault = fault
        self.faults: dict[str, int] = {}

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        kind = self._fault()
        if kind is None:
            return self.inner.segment(rgb, timestamp_ms)
        self.faults[kind] = self.faults.get(kind, 0) + 1
        if kind == "raise":
            raise RuntimeError("injected segmenter failure")
        return _garbage(kind, *rgb.shape[:2])  # type: ignore[return-value]

    def close(self) -> None:
        self.inner.close()


class CropRecorder:
    """Fake models for whole frames (`segment`) and crops (`segment_crop`), each seeing a person
    standing in the middle; records (which, image shape) per call. crop_input_size: a crop
    model of another input size (segmenter.model auto), else both share input_size (pose)."""

    name = "crop recorder"

    def __init__(self, input_size=(64, 64), crop_input_size=None) -> None:
        self.input_size = input_size
        if crop_input_size is not None:
            self.crop_input_size = crop_input_size
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    @staticmethod
    def _person(height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), np.float32)
        mask[height // 4 :, width * 2 // 5 : width * 3 // 5] = 1.0
        return mask

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.calls.append(("whole", rgb.shape))
        return self._person(*rgb.shape[:2])

    def segment_crop(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.calls.append(("crop", rgb.shape))
        return self._person(*rgb.shape[:2])

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    def close(self) -> None:
        pass


def factory_of(segmenter) -> Callable[[SegmenterConfig], object]:
    return lambda _config: segmenter


# -- sinks -------------------------------------------------------------------------------
@dataclass
class Sent:
    image: np.ndarray | None  # a copy of what the sink got (None when not kept)
    frame: Frame | None  # None: placeholder
    at: float  # time.monotonic()


class RecordingSink:
    """Keeps what it is sent; can be slow (`delay_s`), held (`gate`) or fail (`fail_after` frames)."""

    description = "recording sink"
    consumer_watching = True

    def __init__(
        self,
        keep_images: bool = True,
        delay_s: float = 0.0,
        fail_after: int | None = None,
        gate: StageGate | None = None,
    ) -> None:
        self.keep_images = keep_images
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.gate = gate
        self.sent: list[Sent] = []
        self.closed = False
        self._lock = threading.Lock()

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise SinkError("writing to the test sink failed (device gone)", "plug it back in")
        if self.gate is not None:
            self.gate.pass_through()
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.sent.append(Sent(image.copy() if self.keep_images else None, frame, time.monotonic()))

    def since(self, moment: float) -> list[Sent]:
        with self._lock:
            return [entry for entry in self.sent if entry.at >= moment]

    def close(self) -> None:
        self.closed = True


# -- running a pipeline ----------------------------------------------------------------------
def small_config(**sections: dict) -> Config:
    """Defaults, but with one segment call per frame (no region-of-interest crops), so scripts line up."""
    mask = {"region_of_interest": False, **sections.pop("mask", {})}
    return Config().with_overrides(mask=mask, **sections)


def make_pipeline(
    feed, sink, segmenter=None, config: Config | None = None, live: bool = True, factory=None, size=SMALL
) -> Pipeline:
    factory = factory or factory_of(segmenter or ScriptedSegmenter())
    return Pipeline(
        config or small_config(), feed, sink, size, PrivacyState(True), segmenter_factory=factory, live=live
    )


@contextlib.contextmanager
def running(pipeline: Pipeline, join_timeout: float = 15.0) -> Iterator[threading.Thread]:
    """Runs the pipeline on a thread; stops it and re-raises what it raised on exit."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-pipeline", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        pipeline.stop()
        thread.join(join_timeout)
    assert not thread.is_alive(), "the pipeline did not stop"
    if errors:
        raise errors[0]
