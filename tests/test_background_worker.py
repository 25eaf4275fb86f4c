"""BackgroundSegmenter: slow models answer at frame rate, fail closed, carry masks forward."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from privacycam.segmenters.background_worker import BackgroundSegmenter, FlowWarper, NoMaskYet, synchronous

H, W = 72, 128


class SlowSegmenter:
    """A fake model: takes `delay_s`, answers with the frame's mean brightness everywhere."""

    name = "slow"
    input_size = (W, H)

    def __init__(self, delay_s: float = 0.2, fail_on: set[int] | None = None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on or set()
        self.seen: list[int] = []
        self.started = threading.Event()
        self.closed = threading.Event()

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.started.set()
        time.sleep(self.delay_s)
        self.seen.append(timestamp_ms)
        if timestamp_ms in self.fail_on:
            raise RuntimeError(f"model broke on {timestamp_ms}")
        return np.full(rgb.shape[:2], rgb.mean() / 255.0, dtype=np.float32)

    def close(self) -> None:
        self.closed.set()


def frame(value: int, height: int = H, width: int = W) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def wait_until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def wait_for_mask(seg: BackgroundSegmenter, rgb: np.ndarray, ts: int, timeout_s: float = 30.0) -> np.ndarray:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return seg.segment(rgb, ts)
        except NoMaskYet:
            time.sleep(0.01)
    raise AssertionError("no mask in time")


class GatedSegmenter(SlowSegmenter):
    """Answers only when the test lets it: one `gate.release()` per answer."""

    def __init__(self) -> None:
        super().__init__(delay_s=0.0)
        self.gate = threading.Semaphore(0)

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.started.set()
        assert self.gate.acquire(timeout=30), "the test never let the model answer"
        return super().segment(rgb, timestamp_ms)


def _calls_while_the_model_works(seg: BackgroundSegmenter, stamps: list[int]) -> list[float]:
    """seg.segment for each frame, on a thread that must finish while the model is blocked:
    a call that waited for the model would never return (a bound on a hang, not a timing floor)."""
    answers: list[float] = []

    def calls() -> None:
        for ts in stamps:
            try:
                answers.append(float(seg.segment(frame(ts), ts)[0, 0]))
            except NoMaskYet:
                answers.append(-1.0)

    caller = threading.Thread(target=calls, daemon=True)
    caller.start()
    caller.join(10)
    assert not caller.is_alive(), "a call waited for the model"
    return answers


def test_calls_return_while_the_model_works_and_the_latest_frame_wins() -> None:
    inner = GatedSegmenter()
    seg = BackgroundSegmenter(inner, flow=False)
    try:
        assert seg.input_size == inner.input_size and "slow" in seg.name
        with pytest.raises(NoMaskYet):
            seg.segment(frame(0), 0)
        assert inner.started.wait(10)  # the model took frame 0 and works on it
        masks: list[float] = []
        for round_ in range(1, 4):
            stamps = [40 * round_ + i for i in range(1, 6)]  # five frames arrive while it is busy
            answers = _calls_while_the_model_works(seg, stamps)
            masks += [a for a in answers if a >= 0]
            inner.gate.release()  # it answers; then takes the newest frame waiting
            wait_until(lambda round_=round_: len(inner.seen) == round_, 10)
            masks.append(float(wait_for_mask(seg, frame(stamps[-1]), stamps[-1], 10)[0, 0]))
        # Latest frame wins: after frame 0 the model got the last of each burst, never the others.
        assert inner.seen == [0, 45, 85]
        assert len(set(masks)) >= 3  # the mask followed the model's answers
        assert masks == sorted(masks)  # each update shows a later frame
    finally:
        inner.gate.release()
        seg.close()
    assert inner.closed.wait(5.0)


def test_the_caller_may_reuse_its_buffer_at_once() -> None:
    inner = SlowSegmenter(0.05)
    seg = BackgroundSegmenter(inner, flow=False)
    try:
        buffer = frame(200)
        with pytest.raises(NoMaskYet):
            seg.segment(buffer, 0)
        buffer[:] = 0  # the pipeline writes the next frame into the same array
        mask = wait_for_mask(seg, frame(200), 1)
        assert mask[0, 0] == pytest.approx(200 / 255)
    finally:
        seg.close()


def test_an_inference_error_is_raised_once_then_the_worker_goes_on() -> None:
    seg = BackgroundSegmenter(SlowSegmenter(0.02, fail_on={2}), flow=False)
    try:
        wait_for_mask(seg, frame(10), 1)
        wait_until(lambda: not seg._job)  # the worker took the last frame 1
        seg.segment(frame(10), 2)
        wait_until(lambda: seg._error is not None)  # the worker has met the failure on frame 2
        with pytest.raises(RuntimeError, match="model broke on 2"):
            seg.segment(frame(30), 3)
        # The failed frame's mask is gone: fail closed until a fresh one exists.
        mask = wait_for_mask(seg, frame(30), 4)
        assert mask[0, 0] == pytest.approx(30 / 255)
    finally:
        seg.close()


def test_garbage_from_the_model_is_an_error_not_a_mask() -> None:
    class Broken(SlowSegmenter):
        def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
            self.seen.append(timestamp_ms)
            return np.full((3, 3), np.nan, dtype=np.float32)

    inner = Broken()
    seg = BackgroundSegmenter(inner, flow=False)
    try:
        with pytest.raises(NoMaskYet):
            seg.segment(frame(1), 0)
        wait_until(lambda: seg._error is not None)  # the worker has checked the garbage
        with pytest.raises(RuntimeError, match="shape"):
            seg.segment(frame(1), 1)
    finally:
        seg.close()


def test_mask_is_resized_to_the_callers_frame() -> None:
    seg = BackgroundSegmenter(SlowSegmenter(0.01), flow=False)
    try:
        wait_for_mask(seg, frame(50), 0)
        mask = seg.segment(frame(50, 2 * H, 2 * W), 1)
        assert mask.shape == (2 * H, 2 * W) and mask.dtype == np.float32
    finally:
        seg.close()


def test_a_stale_mask_is_not_used() -> None:
    seg = BackgroundSegmenter(SlowSegmenter(0.01), flow=False, max_age_s=0.2)
    try:
        wait_for_mask(seg, frame(50), 0)
        time.sleep(0.3)  # e.g. the camera was paused
        with pytest.raises(NoMaskYet, match="older"):
            seg.segment(frame(50), 1)
        wait_for_mask(seg, frame(50), 2)
    finally:
        seg.close()


def test_close_stops_the_worker_and_closes_the_model() -> None:
    inner = SlowSegmenter(0.3)
    seg = BackgroundSegmenter(inner, join_timeout_s=0.05)
    with pytest.raises(NoMaskYet):
        seg.segment(frame(1), 0)
    assert inner.started.wait(1.0)
    seg.close()  # the model is mid-inference: close returns anyway ...
    assert not inner.closed.is_set()
    assert inner.closed.wait(1.0)  # ... and the model is closed once it finishes
    with pytest.raises(NoMaskYet, match="closed"):
        seg.segment(frame(1), 1)


def test_unwrapped_for_offline_use_without_a_thread() -> None:
    inner = SlowSegmenter(0.0)
    inner.selects_people = True
    seg = BackgroundSegmenter(inner)
    assert seg.asynchronous and seg.selects_people
    assert synchronous(seg) is inner and synchronous(inner) is inner
    threads = threading.active_count()
    assert synchronous(seg).segment(frame(40), 0)[0, 0] == pytest.approx(40 / 255)
    assert threading.active_count() == threads  # no worker was started
    seg.close()
    assert inner.closed.is_set()


def textured_scene(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """A smoothly textured square on a textured background, `shift` px right of x=40."""
    rng = np.random.default_rng(1)

    def texture(height: int, width: int) -> np.ndarray:
        smooth = cv2.GaussianBlur(rng.random((height, width)), (0, 0), 3.0)
        return cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)

    image = texture(H, W)
    image[16:56, 40 + shift : 80 + shift] = texture(40, 40)
    mask = np.zeros((H, W), dtype=np.float32)
    mask[16:56, 40 + shift : 80 + shift] = 1.0
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB), mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


def test_flow_moves_the_old_mask_onto_the_person() -> None:
    warper = FlowWarper()
    source_rgb, source_mask = textured_scene(0)
    current_rgb, current_mask = textured_scene(4)
    warped = warper.warp(source_mask, warper.gray(source_rgb), current_rgb)
    assert warped.dtype == np.float32 and warped.shape == (H, W)
    assert iou(source_mask, current_mask) < 0.85
    assert iou(warped, current_mask) > 0.9


def test_flow_is_used_between_inferences() -> None:
    class SquareFinder(SlowSegmenter):
        def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
            time.sleep(self.delay_s)
            return textured_scene(timestamp_ms)[1]

    seg = BackgroundSegmenter(SquareFinder(0.3))
    try:
        wait_for_mask(seg, textured_scene(0)[0], 0)
        current_rgb, current_mask = textured_scene(4)
        assert iou(seg.segment(current_rgb, 4), current_mask) > 0.9
    finally:
        seg.close()


def test_flow_cost_per_frame_is_small() -> None:
    warper = FlowWarper()
    source = np.random.default_rng(0).integers(0, 255, (288, 512, 3), dtype=np.uint8)
    mask = np.zeros((288, 512), dtype=np.float32)
    gray = warper.gray(source)
    warper.warp(mask, gray, source)
    times = []
    for _ in range(10):
        started = time.perf_counter()
        warper.warp(mask, gray, source)
        times.append(time.perf_counter() - started)
    # ~1-2 ms here; the bound only catches a gross regression on a loaded CI machine
    assert min(times) < 0.015
