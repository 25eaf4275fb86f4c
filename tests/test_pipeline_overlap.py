"""The mask stage runs one frame ahead of compositing, on its own thread, without mixing frames up."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
from conftest import wait_until
from fault_kit import ClipSource, RecordingSink, make_pipeline, running, small_config

from privacycam.sources.base import Frame
from privacycam.sources.feed import LatestFrameFeed, SequentialFeed

SIZE = (320, 180)
SQUARE = 40


def _moving_square_clip(count: int) -> tuple[tuple[str, np.ndarray], ...]:
    """Textured grey frames with a white square that jumps to a new place every frame."""
    rng = np.random.default_rng(7)
    width, height = SIZE
    frames = []
    for index in range(count):
        image = rng.integers(60, 160, (height, width, 3), dtype=np.uint8)
        x = 20 + (index * 97) % (width - SQUARE - 40)
        y = 20 + (index * 53) % (height - SQUARE - 40)
        image[y : y + SQUARE, x : x + SQUARE] = 255
        frames.append((f"{index:05d}", image))
    return tuple(frames)


class WhiteIsPerson:
    """A model whose person is whatever is white in *this* frame; counts its calls."""

    name = "white-is-person"
    input_size = (160, 90)

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.threads: list[str] = []  # per call, the thread that made it
        self.called = threading.Condition()

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        with self.called:
            self.calls += 1
            self.called.notify_all()
        time.sleep(self.delay_s)
        return (rgb.min(axis=2) > 230).astype(np.float32)

    def close(self) -> None:
        pass


class SinkWaitingForTheNextMask(RecordingSink):
    """Sending frame i waits (briefly) until the model has been called for frame i + 1: only possible with overlap."""

    def __init__(self, segmenter: WhiteIsPerson, count: int) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.count = count
        self.overlapped: list[bool] = []

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        index = len(self.sent)
        if index + 1 < self.count:
            with self.segmenter.called:
                seen = self.segmenter.called.wait_for(lambda: self.segmenter.calls >= index + 2, timeout=1.0)
            self.overlapped.append(seen)
        super().send(image, frame)


def test_the_next_frame_is_segmented_while_this_one_is_composited_and_each_keeps_its_own_mask():
    count = 8
    clip = _moving_square_clip(count)
    segmenter = WhiteIsPerson(delay_s=0.05)  # masking is the slower stage: overlap pays
    sink = SinkWaitingForTheNextMask(segmenter, count)
    feed = SequentialFeed(ClipSource(clip, loop=False))
    pipeline = make_pipeline(feed, sink, segmenter, config=small_config(), live=False, size=SIZE)
    pipeline.run()
    assert len(sink.sent) == count
    # the first frames go out one by one, until the stage times are known
    assert sink.overlapped[2:] == [True] * (count - 3), "frame i was sent before frame i+1 reached the model"
    # while a frame is composited, the next one is masked on the mask thread
    assert segmenter.threads[3:] == ["privacycam-mask_0"] * (count - 3), segmenter.threads
    for entry in sink.sent:
        square = entry.frame.image.min(axis=2) == 255
        inner = np.zeros_like(square)
        ys, xs = np.nonzero(square)
        inner[ys.min() + 6 : ys.max() - 5, xs.min() + 6 : xs.max() - 5] = True
        # a mask from another frame would blur this frame's square away
        assert entry.image[inner].min() >= 245, f"frame {entry.frame.name} composited with another frame's mask"
    for entry, following in zip(sink.sent[:-1], sink.sent[1:], strict=True):
        # and a background blurred from the next frame would show that frame's square as a bright blob
        ys, xs = np.nonzero(following.frame.image.min(axis=2) == 255)
        centre = entry.image[ys.min() + 12 : ys.max() - 11, xs.min() + 12 : xs.max() - 11]
        assert centre.mean() < 150, f"frame {entry.frame.name}'s background was blurred from the next frame"


class OneFrameThenSilence:
    """A live feed: one frame at once, then nothing for a long while (a camera at a low frame rate)."""

    finished = False

    def __init__(self, image: np.ndarray) -> None:
        self.frame: Frame | None = Frame(image, 0, "00000")
        self.delivered_at: float | None = None

    def next(self, timeout: float) -> Frame | None:
        frame, self.frame = self.frame, None
        if frame is None:
            time.sleep(timeout)
            return None
        self.delivered_at = time.monotonic()
        frame.captured_at = time.perf_counter()
        return frame

    def set_paused(self, paused: bool) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_frame_goes_out_without_waiting_for_the_next_capture():
    image = _moving_square_clip(1)[0][1]
    feed = OneFrameThenSilence(image)
    sink = RecordingSink()
    pipeline = make_pipeline(feed, sink, WhiteIsPerson(), config=small_config(), size=SIZE)
    with running(pipeline):
        wait_until(lambda: any(e.frame is not None for e in sink.sent), 5.0, "the only frame to go out")
    camera_frames = [e for e in sink.sent if e.frame is not None]
    # the next capture never comes; the frame must not wait for it (placeholders start after ~0.2 s)
    assert camera_frames[0].at - feed.delivered_at < 0.15


def test_opencv_runs_single_threaded_up_to_1080p_and_shares_cores_above():
    """Short OpenCV calls cost more CPU split across threads than done at once (see OPENCV_ONE_THREAD_UP_TO_PIXELS)."""
    import cv2

    cv2.setNumThreads(-1)
    default = cv2.getNumThreads()
    try:
        for size, expected in (((1920, 1080), 1), ((3840, 2160), default), ((1280, 720), 1)):
            pipeline = make_pipeline(SequentialFeed(ClipSource(_moving_square_clip(1))), RecordingSink(), size=size)
            assert cv2.getNumThreads() == expected, size
            pipeline._close()
    finally:
        cv2.setNumThreads(-1)


def test_with_nothing_to_overlap_the_mask_is_made_on_the_loops_own_thread():
    """A camera slower than the pipeline: each frame is masked and sent before the next one
    comes, so handing it to the mask thread would only cost a thread (and core) switch."""
    clip = _moving_square_clip(6)
    segmenter = WhiteIsPerson()
    sink = RecordingSink()
    source = ClipSource(clip)
    feed = LatestFrameFeed(lambda: source, pace_fps=20, first_source=source)
    pipeline = make_pipeline(feed, sink, segmenter, config=small_config(), size=SIZE)
    with running(pipeline) as loop_thread:
        wait_until(lambda: segmenter.calls >= 5, 5.0, "five masked frames")
    assert set(segmenter.threads) == {loop_thread.name}, segmenter.threads


def test_a_frame_limit_is_not_overshot_when_one_step_sends_two_frames(monkeypatch):
    """When overlap stops paying, a step sends the frame it held back and the new one: `--frames 10`
    once wrote 11 (a flaky CI run of tests/test_run_on_real_data.py)."""
    sink = RecordingSink()
    feed = SequentialFeed(ClipSource(_moving_square_clip(30), loop=False))
    pipeline = make_pipeline(feed, sink, WhiteIsPerson(), config=small_config(), live=False, size=SIZE)
    # send, hold one back, send two, hold, send two, ...: the tenth and eleventh fall in one step
    answers = itertools.cycle([False, True])
    monkeypatch.setattr(pipeline, "_overlap_pays", lambda: next(answers))
    pipeline.run(max_frames=10)
    assert len(sink.sent) == 10


class StopAfter(RecordingSink):
    """Stops the run from inside `send` once it has `count` frames, as the benchmark's sink does."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.pipeline = None

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        super().send(image, frame)
        if len(self.sent) >= self.count:
            self.pipeline.stop()


def test_no_frame_goes_out_after_stop_within_the_same_step(monkeypatch):
    sink = StopAfter(8)
    feed = SequentialFeed(ClipSource(_moving_square_clip(30), loop=False))
    pipeline = sink.pipeline = make_pipeline(feed, sink, WhiteIsPerson(), config=small_config(), live=False, size=SIZE)
    answers = itertools.cycle([False, True])  # the eighth frame is the held one of a two-frame step
    monkeypatch.setattr(pipeline, "_overlap_pays", lambda: next(answers))
    pipeline.run()
    assert len(sink.sent) == 8
