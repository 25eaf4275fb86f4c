"""Wiring and the privacy state: feed -> matter -> compositor -> sink.

The loop is the only place that decides what a published frame shows, and it
fails closed: while privacy is on, a frame goes out composited with a mask, or
fully hidden (background only), or as the placeholder; never raw.

Three threads overlap: capture (the feed's, newest frame wins), the mask stage
(segmenter + matte of frame N+1) and this loop (compositing and sending frame
N). On 1280x720 unpaced that takes `privacycam bench` from ~99 to ~130 fps.
With no frame N waiting (a camera slower than the pipeline, the usual case)
the loop masks frame N+1 itself: the hand-over to another thread, and often
another core with cold caches, cost ~0.5 ms of CPU per 720p frame for nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from privacycam import i420
from privacycam.compositing import Compositor, cover
from privacycam.config import Config, SegmenterConfig
from privacycam.errors import ConfigError, ModelError, PrivacyCamError, SourceError
from privacycam.mask import Matter
from privacycam.publish_gate import (
    SEND_LOCK_WAIT_S,
    Placeholders,
    PrivacyState,
    PublishGate,
    Shows,
    placeholder_image,
)
from privacycam.segmenters import Segmenter, create_segmenter
from privacycam.segmenters.background_worker import synchronous
from privacycam.sinks import Sink
from privacycam.sources.base import Frame

log = logging.getLogger(__name__)

# With no camera frame for this long, publish the placeholder so consumers
# never see a frozen image and the virtual camera never starves.
PLACEHOLDER_AFTER_S = 1.0
# Rate of placeholder frames while the camera is away or nobody watches.
PLACEHOLDER_FPS = 5.0
# On-demand camera: how long nobody must watch before the camera (and its LED)
# goes off; long enough that an app re-opening the device does not flap it.
ON_DEMAND_GRACE_S = 2.0
# On stop, how long a model still loading may take to finish so it can be
# released properly (native code must not be torn down mid-load).
CLOSE_WAIT_S = 5.0
# Latencies kept for percentiles: the most recent frames only, so a daemon
# running for weeks does not grow by a float per frame.
LATENCY_WINDOW = 10_000
# A segmenter failing on and off: its first failure is logged, later ones at
# most this often (each failure streak would otherwise log two lines).
FAILURE_LOG_INTERVAL_S = 60.0
# OpenCV splits each call across its worker threads. Up to 1080p our calls are
# short (0.05-0.8 ms): waking the workers costs more CPU than it saves, and the
# pipeline's own threads already use both cores. One OpenCV thread saved ~0.6 ms
# of CPU per frame at 720p and ~1.3 ms at 1080p (bench/perf.py, 30 fps, medians
# of 3-6 runs); at 4K calls are long enough to share, and one thread dropped frames.
OPENCV_ONE_THREAD_UP_TO_PIXELS = 1920 * 1080
# A live loop that makes no step for this long is stuck in a stage (a hung model,
# a blocked camera read): the placeholder goes out until it moves again. At least
# STALL_AFTER_S, and STALL_STEPS times the slowest of the last STALL_HISTORY steps,
# so a machine that is merely slow (an emulated CPU under load: 1-5 s per frame,
# varying) gets its frames, not placeholders between them.
STALL_AFTER_S = 2.0
STALL_STEPS = 3
STALL_HISTORY = 30

__all__ = ["Pipeline", "PrivacyState", "placeholder_image"]


@dataclass
class StageTimes:
    """Milliseconds spent per frame in each stage, summed; divide by `frames`."""

    frames: int = 0
    capture: float = 0.0
    segment: float = 0.0
    mask: float = 0.0
    composite: float = 0.0
    sink: float = 0.0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


@dataclass
class PipelineStatus:
    frames_in: int = 0
    frames_out: int = 0
    fail_closed_frames: int = 0
    placeholder_frames: int = 0
    fps: float = 0.0
    latency_ms: float = 0.0
    last_error: str | None = None
    segmenter: str = "loading"
    first_output_at: float | None = None  # perf_counter of the first frame handed to the sink
    reloads_applied: int = 0  # configs a reload handed over that the loop now runs with
    reloads_rejected: int = 0  # ... and ones it refused (kept the running config)


class SegmenterLoader:
    """Builds the segmenter on a thread so frames keep flowing (fail closed) meanwhile."""

    def __init__(self, config: SegmenterConfig, factory: Callable[[SegmenterConfig], Segmenter]) -> None:
        self.segmenter: Segmenter | None = None
        self.error: PrivacyCamError | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        self._thread = threading.Thread(target=self._load, args=(config, factory), name="model-load", daemon=True)
        self._thread.start()

    def _load(self, config: SegmenterConfig, factory: Callable[[SegmenterConfig], Segmenter]) -> None:
        started = time.perf_counter()
        try:
            segmenter = factory(config)
        except PrivacyCamError as exc:
            self.error = exc
            return
        except Exception as exc:  # noqa: BLE001 - a model's own failure must not leave frames hidden forever
            detail = str(exc).splitlines()[0] if str(exc) else ""
            self.error = ModelError(
                f"segmenter {config.backend} failed to load ({type(exc).__name__}: {detail})",
                "check the segmenter settings and model files; `privacycam doctor` checks the installation",
            )
            return
        with self._lock:
            if self._abandoned:  # the pipeline stopped while we loaded
                segmenter.close()
                return
            self.segmenter = segmenter
        log.info("segmenter %s ready in %.0f ms", segmenter.name, (time.perf_counter() - started) * 1000)

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Release the model, also one still loading (given a moment to finish)."""
        with self._lock:
            self._abandoned = True
            segmenter, self.segmenter = self.segmenter, None
        if segmenter is not None:
            segmenter.close()
        self.wait(timeout)


class Pipeline:
    def __init__(
        self,
        config: Config,
        feed,
        sink: Sink,
        size: tuple[int, int],
        privacy: PrivacyState,
        segmenter_factory: Callable[[SegmenterConfig], Segmenter] = create_segmenter,
        live: bool = True,
        on_demand: bool = False,
    ) -> None:
        self.config = config
        self.feed = feed
        self.sink = sink
        self.size = size
        self.privacy = privacy
        self.live = live
        self.status = PipelineStatus()
        self.times = StageTimes()
        self.stop_event = threading.Event()
        self._placeholder = Placeholders(size, config.privacy.placeholder_color)
        self.gate = PublishGate(sink, privacy, self._placeholder)
        self.gate.start()
        self.last_step_at = time.monotonic()  # the loop's heartbeat, for the stall watch
        self._step_seconds: deque[float] = deque(maxlen=STALL_HISTORY)  # how long the last steps took
        if not live:
            # Offline every frame waits for its own mask: a slow model runs in line.
            segmenter_factory = _in_line(segmenter_factory)
        self._segmenter_factory = segmenter_factory
        cv2.setNumThreads(1 if size[0] * size[1] <= OPENCV_ONE_THREAD_UP_TO_PIXELS else -1)  # -1: OpenCV's default
        self._compositor = Compositor(config.background)  # first: a bad background image fails before a model loads
        self._loader = SegmenterLoader(config.segmenter, segmenter_factory)
        self._matter: Matter | None = None
        self._next_loader: SegmenterLoader | None = None  # a new model loading after a reload
        self._fitted: np.ndarray | None = None
        self._pending_config: Config | None = None
        self._failures = FailureStreak(self.status)
        self._last_placeholder = 0.0
        self._last_camera_frame_at = 0.0  # perf_counter of the last camera frame sent
        self._fps_window: list[float] = []
        self.on_demand = on_demand
        self._restart_measurements = False
        self._max_frames: int | None = None  # run(max_frames): stop after sending this many
        self._last_alpha: np.ndarray | None = None
        self._frames_since_mask = 0
        # The mask stage's thread and its two alternating result slots (see _matte).
        self._mask_stage = ThreadPoolExecutor(max_workers=1, thread_name_prefix="privacycam-mask")
        self._matte_copies: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
        self._shrunk_bgr = i420.ShrunkBgr()  # the mask stage's input from I420 frames
        self._copy_slot = 0
        self._pending: _Masked | None = None  # masked, not yet composited
        self._mask_ms = _Average()  # how long a frame's mask takes
        self._publish_ms = _Average()  # how long compositing and sending a frame take
        # On-demand: camera closed because nobody watches. The daemon starts the feed
        # paused in that case, so the pipeline starts idle until a reader appears.
        self.idle = on_demand
        self._last_watched = time.perf_counter()

    # -- control (any thread) --------------------------------------------------
    def request_reload(self, config: Config) -> None:
        """Apply a new, already validated config between two frames."""
        self._pending_config = config

    def stop(self) -> None:
        self.stop_event.set()

    def restart_measurements(self) -> None:
        """Zero the stage timings from the next frame on (benchmarks call this after warm-up)."""
        self._restart_measurements = True

    # -- the loop ----------------------------------------------------------------
    def run(self, max_frames: int | None = None) -> None:
        self._max_frames = max_frames
        stall_watch = self.gate.watch_stalls(lambda: self.last_step_at, self._stall_after_s, PLACEHOLDER_FPS)
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                self._step_seconds.append(now - self.last_step_at)
                self.last_step_at = now
                if self._frame_limit_reached():
                    break
                self._apply_pending_config()
                self._check_loader()
                self._update_on_demand()
                if not self.live and self._matter is None and self.privacy.on:
                    # Offline: every frame deserves a real mask, so wait for the model.
                    self._loader.wait()
                    self._check_loader()
                if not self._step():
                    break
            self._check_loader()  # a model that failed to load must not end as a quiet success
        except SourceError:
            # the input ended in error (a video cut short): the frame already masked still goes out
            if self._pending is not None:
                self._publish(self._pending)
                self._pending = None
            raise
        finally:
            if stall_watch is not None:
                stall_watch.close()
            self._close()

    def _step(self) -> bool:
        """Take the newest frame into the mask stage while the previous one is composited and sent.

        The mask stage runs on its own thread when there is a previous frame, so
        segmenting frame N+1 overlaps compositing frame N (otherwise on this
        thread); it is waited for before the step ends, so between
        steps nothing else touches the matter (reloads, model swaps, resets).
        With no newer frame at hand the previous one goes out at once: pacing
        adds no latency.
        """
        if self._restart_measurements:
            self._restart_measurements = False
            self.times = StageTimes()
        pending = self._pending
        frame = self.feed.next(timeout=0.0 if pending is not None else 1.0 / PLACEHOLDER_FPS)
        self._pending = None  # after next(): a feed that fails leaves the held frame to run()'s flush
        started = self._start_mask(frame, overlap=pending is not None) if frame is not None else None
        if pending is not None:
            self._publish(pending)
        if started is None:
            if getattr(self.feed, "finished", False):
                return False
            if pending is None:
                self._maybe_placeholder()
            return True
        self._pending = self._finish_mask(*started)
        # A step can send two frames (the held one and this one): not past `--frames N`,
        # nor after stop() (the benchmark's sink stops the run at its frame count).
        if not self._overlap_pays() and not self._frame_limit_reached() and not self.stop_event.is_set():
            self._publish(self._pending)
            self._pending = None
        return True

    def _stall_after_s(self) -> float:
        return max(STALL_AFTER_S, STALL_STEPS * max(self._step_seconds, default=0.0))

    def _frame_limit_reached(self) -> bool:
        return self._max_frames is not None and self.status.frames_out >= self._max_frames

    def _overlap_pays(self) -> bool:
        """Hold a masked frame back for overlap only while masking is the slower stage.

        When compositing + sending is slower (a slow consumer), a frame held back
        would wait for it and go out stale: then each frame goes out at once.
        """
        return self._publish_ms.value < self._mask_ms.value

    def _start_mask(self, frame: Frame, overlap: bool) -> tuple[_Masked, Future | None]:
        self.status.frames_in += 1
        masked = _Masked(frame, self._fit(frame.image), filtered=self.privacy.on)
        if not masked.filtered:
            return masked, None
        matter = self._matter
        if matter is None:
            masked.error = _NotReady("the segmentation model is still loading")
            return masked, None
        if self._last_alpha is not None and self._frames_since_mask + 1 < self.config.segmenter.every_nth_frame:
            # in-between frame (segmenter.every_nth_frame > 1): the last matte again
            self._frames_since_mask += 1
            masked.alpha = self._last_alpha
            return masked, None
        self._copy_slot ^= 1
        job = (self._mask_stage.submit if overlap else _run_here)(
            self._matte, matter, masked, self._matte_copies[self._copy_slot]
        )
        return masked, job

    def _matte(self, matter: Matter, masked: _Masked, copies: dict[str, np.ndarray]) -> None:
        """On the mask thread, or the loop's own (see _step). The matter's buffers are overwritten
        by its next frame, so the results are copied into one of two slots that alternate: the
        frame being composited keeps the other."""
        t0 = time.perf_counter()
        planar = i420.is_i420(masked.image)
        # I420 frames are masked from a shrunk BGR copy (i420.ShrunkBgr): no full-size BGR frame is made
        image = self._shrunk_bgr.convert(masked.image) if planar else masked.image
        alpha = matter.alpha_for(image, masked.frame.timestamp_ms)
        matter.plausibility.check(alpha, matter.work_frame)  # a matte that cannot be right fails closed
        masked.alpha = _copy_into(copies, "alpha", alpha)
        if self._compositor.blurs:  # an image or colour background never looks at the frame
            downscaled = self._shrunk_bgr.last_i420 if planar else matter.work_frame
            masked.downscaled = _copy_into(copies, "downscaled", downscaled)
        masked.segment_ms = matter.last_segment_ms
        masked.mask_ms = (time.perf_counter() - t0) * 1000 - masked.segment_ms

    def _finish_mask(self, masked: _Masked, job: Future | None) -> _Masked:
        if job is None:
            return masked
        try:
            job.result()
            self._mask_ms.add(masked.segment_ms + masked.mask_ms)
        except Exception as exc:  # noqa: BLE001 - handed on: that frame fails closed
            # without its traceback, which holds this frame's locals (the frame itself) alive
            masked.error = exc.with_traceback(None)
        if masked.error is None:
            self._last_alpha, self._frames_since_mask = masked.alpha, 0
        else:
            self._last_alpha = None
        return masked

    def _publish(self, masked: _Masked) -> None:
        started = time.perf_counter()
        image, shows = masked.image, Shows.RAW
        if self.privacy.on:
            image, shows = self._filter(masked)
        self._send(image, shows, masked.frame)
        self._publish_ms.add((time.perf_counter() - started) * 1000)

    def _filter(self, masked: _Masked) -> tuple[np.ndarray, Shows]:
        if not masked.filtered:  # privacy came on after this frame was captured: no mask for it
            return self._compositor.compose_hidden(masked.image), Shows.HIDDEN
        failure = masked.error
        if failure is None:
            try:
                t0 = time.perf_counter()
                out = self._compositor.compose(masked.image, masked.alpha, masked.downscaled)
                composite_ms = (time.perf_counter() - t0) * 1000
            except Exception as exc:  # noqa: BLE001 - any failure must fail closed, never open
                failure = exc.with_traceback(None)
        if failure is not None:
            self._last_alpha = None
            self._failures.note_failure(failure)
            return self._compositor.compose_hidden(masked.image), Shows.HIDDEN
        self.times.segment += masked.segment_ms
        self.times.mask += masked.mask_ms
        self.times.composite += composite_ms
        self._failures.note_success()
        return out, Shows.FILTERED

    def _send(self, image: np.ndarray, shows: Shows, frame: Frame | None) -> None:
        t0 = time.perf_counter()
        if i420.is_i420(image) and not getattr(self.sink, "takes_i420", False):
            image = i420.to_bgr(image)  # files and the preview want BGR: converted once, here at the edge
        self.gate.publish(image, shows, frame)
        now = time.perf_counter()
        self.times.sink += (now - t0) * 1000
        self.status.frames_out += 1
        if self.status.first_output_at is None:
            self.status.first_output_at = now
        if frame is not None:
            self._last_camera_frame_at = now
            self.times.frames += 1
            self.times.capture += frame.read_ms
            latency = (now - frame.captured_at) * 1000
            self.status.latency_ms = latency
            self.times.latencies_ms.append(latency)
            self._fps_window.append(now)
            self._fps_window = self._fps_window[-30:]
            if len(self._fps_window) > 1:
                span = self._fps_window[-1] - self._fps_window[0]
                self.status.fps = (len(self._fps_window) - 1) / span if span > 0 else 0.0

    def _maybe_placeholder(self) -> None:
        now = time.perf_counter()
        if now - self._last_placeholder < 1.0 / PLACEHOLDER_FPS:
            return
        if not self.idle and now - self._last_camera_frame_at < PLACEHOLDER_AFTER_S:
            return  # a slow camera (low light, 5 fps): its frames, not placeholders between them
        self._last_placeholder = now
        if self.idle:
            text = "PrivacyCam: camera off"
        elif getattr(self.feed, "error", None):
            text = "PrivacyCam: camera unavailable"
        else:
            text = "PrivacyCam: waiting for camera"
        self.status.placeholder_frames += 1
        self._send(self._placeholder(text), Shows.PLACEHOLDER, None)

    def _fit(self, image: np.ndarray) -> np.ndarray:
        width, height = self.size
        if i420.frame_size(image) == (width, height):
            return image
        if i420.is_i420(image):  # a camera that gives another size: scaled in BGR (rare, not the hot path)
            image = i420.to_bgr(image)
        return cover(image, width, height)

    # -- state changes -----------------------------------------------------------
    def _update_on_demand(self) -> None:
        if not self.on_demand:
            return
        now = time.perf_counter()
        watching = self.sink.consumer_watching
        if watching:
            self._last_watched = now
        idle = not watching and (self.idle or now - self._last_watched > ON_DEMAND_GRACE_S)
        if idle == self.idle:
            return
        self.idle = idle
        log.info("camera %s", "off: nobody watches PrivacyCam" if idle else "on: an app watches PrivacyCam")
        self.feed.set_paused(idle)
        self._last_alpha = None
        if not idle and self._matter is not None:
            self._matter.reset()  # a new scene after the pause: no stale temporal state

    def _check_loader(self) -> None:
        self._check_next_loader()
        if self._matter is None and self._loader.segmenter is not None:
            self._matter = Matter(self._loader.segmenter, self.config.mask, self.config.segmenter.people)
            self.status.segmenter = self._loader.segmenter.name
        if self._loader.error is not None:
            raise self._loader.error

    def _apply_pending_config(self) -> None:
        config, self._pending_config = self._pending_config, None
        if config is None:
            return
        old = self.config
        if config.background != old.background:
            try:
                self._compositor = Compositor(config.background)
            except ConfigError as exc:  # e.g. the image changed after the reload was validated
                log.error("config reload rejected, keeping the running one: %s", exc.message)
                self.status.reloads_rejected += 1
                return
        self.config = config
        self._placeholder.set_color(config.privacy.placeholder_color)
        if config.segmenter != old.segmenter:
            # The running model keeps masking until the new one is ready; a new one
            # that fails to load is reported and dropped.
            log.info("loading new segmenter %s", config.segmenter.backend)
            if self._next_loader is not None:
                self._next_loader.close(timeout=0)
            self._next_loader = SegmenterLoader(config.segmenter, self._segmenter_factory)
        elif config.mask != old.mask and self._matter is not None:
            self._matter = Matter(self._matter.segmenter, config.mask, config.segmenter.people)
        log.info("configuration reloaded")
        self.status.reloads_applied += 1

    def _check_next_loader(self) -> None:
        next_loader = self._next_loader
        if next_loader is None:
            return
        if next_loader.error is not None:
            log.error("new segmenter rejected, keeping the running one: %s", next_loader.error.message)
            self._next_loader = None
        elif next_loader.segmenter is not None:
            self._loader.close(timeout=0)
            self._loader, self._next_loader = next_loader, None
            self._matter, self._last_alpha = None, None  # rebuilt from the new loader right away

    def _close(self) -> None:
        self.gate.close()  # first: the placeholder goes out before anything that might take long
        self._mask_stage.shutdown(wait=True)
        self._pending = None
        self._matter = None
        if self._next_loader is not None:
            self._next_loader.close()
        self._loader.close()
        self.feed.close()

    def abandon(self) -> None:
        """Stop without waiting for a stuck stage: the placeholder goes to the device, the sink closes.

        For shutdown when the loop does not end in time; the process exits right after.
        """
        self.stop_event.set()
        self.gate.close(lock_wait=SEND_LOCK_WAIT_S)


class FailureStreak:
    """Frames that went out fully hidden in a row: the first failure is logged, and the recovery.

    A segmenter failing on and off logs its first failure, later ones at most
    every FAILURE_LOG_INTERVAL_S (each streak would otherwise log two lines).
    Counted in frames sent, not captured.
    """

    def __init__(self, status: PipelineStatus) -> None:
        self.status = status
        self._since: int | None = None  # fail_closed_frames before the streak
        self._logged_at: float | None = None
        self._streak_logged = False
        self._loading_was_the_error = False

    def note_failure(self, exc: Exception) -> None:
        self.status.fail_closed_frames += 1
        message = str(exc) or type(exc).__name__
        self.status.last_error = message
        self._loading_was_the_error = isinstance(exc, _NotReady)
        if self._since is None:
            self._since = self.status.fail_closed_frames - 1
            level = logging.INFO if isinstance(exc, _NotReady) else self._log_level()
            self._streak_logged = level > logging.DEBUG
            log.log(level, "frames go out fully hidden: %s", message)

    def _log_level(self) -> int:
        """WARNING for a failure, DEBUG for further ones soon after a logged one."""
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < FAILURE_LOG_INTERVAL_S:
            return logging.DEBUG
        self._logged_at = now
        return logging.WARNING

    def note_success(self) -> None:
        if self._since is None:
            return
        if self._loading_was_the_error:
            self.status.last_error = None  # a model that finished loading is not an error to report
        log.log(
            logging.INFO if self._streak_logged else logging.DEBUG,
            "masking frames again after %d fully hidden ones",
            self.status.fail_closed_frames - self._since,
        )
        self._since = None


class _NotReady(RuntimeError):
    pass


@dataclass
class _Masked:
    """A captured frame and what the mask stage made of it, waiting to be composited."""

    frame: Frame
    image: np.ndarray  # fitted to the output size
    filtered: bool  # privacy was on when it was captured
    alpha: np.ndarray | None = None
    downscaled: np.ndarray | None = None  # the frame at the matte's size, when the matte is its own
    error: Exception | None = None
    segment_ms: float = 0.0
    mask_ms: float = 0.0


class _Average:
    """Exponential moving average of a duration."""

    def __init__(self, weight: float = 0.1) -> None:
        self.weight = weight
        self.value = 0.0

    def add(self, sample: float) -> None:
        self.value += self.weight * (sample - self.value)


def _run_here(function: Callable[..., None], *args: object) -> Future:
    """Run on this thread; the result or exception in a Future, like an executor's submit."""
    job: Future = Future()
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001 - handed on through the Future, as the executor does
        job.set_exception(exc)
    else:
        job.set_result(None)
    return job


def _copy_into(copies: dict[str, np.ndarray], name: str, array: np.ndarray) -> np.ndarray:
    """Copy into a buffer kept per name, reallocated only when the shape changes."""
    buffer = copies.get(name)
    if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
        buffer = copies[name] = np.empty_like(array)
    np.copyto(buffer, array)
    return buffer


def _in_line(factory: Callable[[SegmenterConfig], Segmenter]) -> Callable[[SegmenterConfig], Segmenter]:
    return lambda config: synchronous(factory(config))
