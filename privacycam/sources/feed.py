"""Feeds hand the pipeline frames from a source, in one of two disciplines.

- `LatestFrameFeed` (cameras, and files played as if live): a capture thread
  keeps only the newest frame, so a slow stage drops frames instead of queueing
  them; read failures close the source and reopen it with backoff.
- `SequentialFeed` (offline files and folders): every frame, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from privacycam.errors import SourceEndedEarly, SourceError
from privacycam.sources.base import Frame, FrameSource

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0


class SequentialFeed:
    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.finished = False
        self.dropped = 0
        self.error: str | None = None

    @property
    def source_open(self) -> bool:
        return not self.finished

    def next(self, timeout: float) -> Frame | None:
        started = time.perf_counter()
        frame = self.source.read()
        if frame is None:
            self.finished = True
        else:
            frame.captured_at = time.perf_counter()
            frame.read_ms = (frame.captured_at - started) * 1000
        return frame

    def close(self) -> None:
        self.source.close()


class LatestFrameFeed:
    """Capture on its own thread; `next()` returns the newest frame not yet taken."""

    def __init__(
        self,
        open_source: Callable[[], FrameSource],
        pace_fps: float | None = None,
        first_source: FrameSource | None = None,
        start_paused: bool = False,
    ) -> None:
        self._open_source = open_source
        self._source = first_source
        self._pace_fps = pace_fps
        self._latest: Frame | None = None
        self._taken = True
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._paused = start_paused
        self.finished = False
        self.dropped = 0
        self.frames_captured = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    @property
    def source_open(self) -> bool:
        return self._source is not None

    def set_paused(self, paused: bool) -> None:
        """Paused: the source is closed (camera LED off) until resumed."""
        with self._cond:
            self._paused = paused
            self._cond.notify_all()

    def next(self, timeout: float) -> Frame | None:
        with self._cond:
            if self._taken and not self.finished:
                self._cond.wait(timeout)
            if self._taken:
                return None
            self._taken = True
            return self._latest

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        self._close_source()

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()

    def _wait_until_due(self, last_due: float) -> float:
        """Sleep until the slot after `last_due`; a late feed starts counting from now."""
        due = last_due + 1.0 / self._pace_fps
        delay = due - time.perf_counter()
        if delay <= 0:
            return time.perf_counter()
        self._stop.wait(delay)
        return due

    def _run(self) -> None:
        retry_s = RETRY_FIRST_S
        next_due = time.perf_counter()
        while not self._stop.is_set():
            if self._paused:
                self._close_source()
                with self._cond:
                    self._cond.wait_for(lambda: not self._paused or self._stop.is_set())
                continue
            try:
                if self._source is None:
                    self._source = self._open_source()
                    if self.error:
                        log.info("%s is back", self._source.description)
                    self.error = None
                    retry_s = RETRY_FIRST_S
                if self._pace_fps:
                    # Like a camera: a frame is read (decoded) when it is due and handed on at once,
                    # not decoded early and left to go cold in the cache while the thread sleeps.
                    next_due = self._wait_until_due(next_due)
                read_started = time.perf_counter()
                frame = self._source.read()
                read_ms = (time.perf_counter() - read_started) * 1000
            except SourceEndedEarly as exc:  # played as live: say so and end as at the normal end
                log.warning("%s", exc.problem)
                with self._cond:
                    self.finished = True
                    self._cond.notify_all()
                return
            except SourceError as exc:
                self._close_source()
                if self.error != exc.message:
                    log.warning("%s; retrying every few seconds", exc.message)
                self.error = exc.message
                # Back off: a dead camera must never become a busy loop.
                self._stop.wait(retry_s)
                retry_s = min(RETRY_MAX_S, retry_s * 2)
                continue
            if frame is None:
                with self._cond:
                    self.finished = True
                    self._cond.notify_all()
                return
            frame.read_ms = read_ms
            frame.captured_at = time.perf_counter()
            with self._cond:
                if not self._taken:
                    self.dropped += 1
                self._latest = frame
                self._taken = False
                self.frames_captured += 1
                self._cond.notify_all()
