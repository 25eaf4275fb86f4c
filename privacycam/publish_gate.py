"""The one door every published frame passes: what it may show, and when privacy is true at the device.

v4l2loopback hands a reader that opens the device the last frame written,
however old. So "privacy on" is only true once a frame decided with privacy
on has been written: `wait_private` waits for that, and writes the
placeholder itself when the loop is too slow to. The rules, in one place:

- privacy on: a frame goes out FILTERED (composited with a mask), HIDDEN
  (background only) or as a PLACEHOLDER; a RAW frame that was decided before
  privacy came on is replaced by the placeholder here, at the last moment;
- privacy off: anything, RAW included;
- closing: a sink that keeps its last frame for later readers (the virtual
  camera) gets the placeholder as its last frame, whatever the privacy state;
- a stalled loop: `StallWatch` publishes the placeholder so the device never
  freezes on a frame and never starves.

Sends are serialised by one lock (the loop, the watchdog and control threads
all publish through here).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from privacycam.sinks import Sink
from privacycam.sources.base import Frame

log = logging.getLogger(__name__)

# How long `wait_private` gives the loop to publish a filtered frame before it
# writes the placeholder itself.
LOOP_GRACE_S = 1.0
# How long anyone waits for the lock of a send in progress (a sink stuck in a write).
SEND_LOCK_WAIT_S = 2.0
STARTING_TEXT = "PrivacyCam: starting"
STOPPED_TEXT = "PrivacyCam: stopped"
PRIVACY_ON_TEXT = "PrivacyCam: privacy on"
NOT_RESPONDING_TEXT = "PrivacyCam: not responding"  # the driver's own, after a crash
PAUSED_TEXT = "PrivacyCam: paused"  # while a stage is stuck


class Shows(enum.Enum):
    FILTERED = "filtered"
    HIDDEN = "hidden"
    PLACEHOLDER = "placeholder"
    RAW = "raw"


class PrivacyState:
    """On/off, thread-safe; every change is logged with its cause.

    `generation` counts the times privacy came on, so a frame can say which
    "on" it was decided under (see `PublishGate.wait_private`).
    """

    def __init__(self, on: bool) -> None:
        self._on = on
        self.generation = 1 if on else 0
        self._lock = threading.Lock()

    @property
    def on(self) -> bool:
        return self._on

    def snapshot(self) -> tuple[bool, int]:
        with self._lock:
            return self._on, self.generation

    def set(self, on: bool, cause: str) -> bool:
        with self._lock:
            changed = on != self._on
            self._set(on)
        if changed:
            log.info("privacy %s (%s)", "on" if on else "off", cause)
        return changed

    def toggle(self, cause: str) -> bool:
        with self._lock:
            on = not self._on
            self._set(on)
        log.info("privacy %s (%s)", "on" if on else "off", cause)
        return on

    def _set(self, on: bool) -> None:
        if on and not self._on:
            self.generation += 1
        self._on = on


def placeholder_image(width: int, height: int, color_rgb: tuple[int, int, int], text: str) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = color_rgb[::-1]
    scale = max(0.4, height / 720)
    size, _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(2 * scale)))
    origin = ((width - size[0]) // 2, (height + size[1]) // 2)
    cv2.putText(
        image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (200, 200, 200), max(1, round(2 * scale)), cv2.LINE_AA
    )
    return image


class Placeholders:
    """The placeholder frames of one output size, by their text, each made once."""

    def __init__(self, size: tuple[int, int], color_rgb: tuple[int, int, int]) -> None:
        self.size = size
        self.color_rgb = color_rgb
        self._made: dict[str, np.ndarray] = {}

    def set_color(self, color_rgb: tuple[int, int, int]) -> None:
        if color_rgb != self.color_rgb:
            self.color_rgb, self._made = color_rgb, {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self._made:
            self._made[text] = placeholder_image(*self.size, self.color_rgb, text)
        return self._made[text]


class PublishGate:
    def __init__(self, sink: Sink, privacy: PrivacyState, placeholder: Callable[[str], np.ndarray]) -> None:
        self.sink = sink
        self.privacy = privacy
        self._placeholder = placeholder
        self._send_lock = threading.Lock()
        self._written = threading.Condition()
        self._private_generation = 0  # the last privacy-on generation a frame was written under
        self.last_sent_at = time.monotonic()
        self.closed = False

    @property
    def _watched_device(self) -> bool:
        """The sink shows its last frame to later readers (the virtual camera), unlike a file."""
        return getattr(self.sink, "keeps_last_frame", False)

    def start(self) -> None:
        """On a watched device: the placeholder first (whatever an earlier writer left is gone), and
        the driver's own placeholder for when PrivacyCam stops writing, where it has one."""
        if not self._watched_device:
            return
        self.publish(self._placeholder(STARTING_TEXT), Shows.PLACEHOLDER, None)
        install = getattr(self.sink, "install_timeout_image", None)
        if install is not None:
            install(self._placeholder(NOT_RESPONDING_TEXT))

    def watch_stalls(
        self, last_step_at: Callable[[], float], after_s: Callable[[], float], fps: float
    ) -> StallWatch | None:
        """A StallWatch on a watched device (a file gets no placeholder frames); close it when done."""
        if not self._watched_device:
            return None
        return StallWatch(self, last_step_at, self._placeholder(PAUSED_TEXT), after_s, fps)

    def publish(self, image: np.ndarray, shows: Shows, frame: Frame | None, lock_wait: float = -1) -> bool:
        """Send through the sink; False if the lock could not be had in `lock_wait` s (-1: wait)."""
        if not self._send_lock.acquire(timeout=lock_wait):
            return False
        try:
            if self.closed:
                return False
            on, generation = self.privacy.snapshot()
            if on and shows is Shows.RAW:
                image, frame = self._placeholder(PRIVACY_ON_TEXT), None
            self.sink.send(image, frame)
            self.last_sent_at = time.monotonic()
        finally:
            self._send_lock.release()
        if on:
            with self._written:
                self._private_generation = max(self._private_generation, generation)
                self._written.notify_all()
        return True

    def is_private_at_device(self) -> bool:
        on, generation = self.privacy.snapshot()
        return not on or self._private_generation >= generation

    def wait_private(self, grace: float = LOOP_GRACE_S) -> bool:
        """Return once privacy is on at the device (or off again); the placeholder after `grace` s.

        False only when nothing could be written (a sink stuck in a send).
        """
        with self._written:
            if self._written.wait_for(self.is_private_at_device, grace):
                return True
        self.publish(self._placeholder(PRIVACY_ON_TEXT), Shows.PLACEHOLDER, None, lock_wait=SEND_LOCK_WAIT_S)
        return self.is_private_at_device()

    def close(self, lock_wait: float = -1) -> None:
        """The placeholder as the last frame for a sink that keeps it, then close the sink (once)."""
        if self.closed:  # abandon() closed it while the loop was stuck, and the loop got out after all
            return
        if self._watched_device:
            try:
                self.publish(self._placeholder(STOPPED_TEXT), Shows.PLACEHOLDER, None, lock_wait=lock_wait)
            except Exception as exc:  # noqa: BLE001 - closing must go on; the device may be gone
                log.warning("could not leave the placeholder on %s: %s", self.sink.description, exc)
        if not self._send_lock.acquire(timeout=lock_wait):
            log.warning("%s is stuck in a write; leaving it to the kernel", self.sink.description)
            return
        try:
            self.closed = True
            self.sink.close()
        finally:
            self._send_lock.release()


class StallWatch:
    """While the loop makes no step for `after_s()` seconds, publish the placeholder at `fps`; log the stall.

    `last_step_at` is the loop's heartbeat (time.monotonic() of its last step).
    """

    def __init__(
        self,
        gate: PublishGate,
        last_step_at: Callable[[], float],
        placeholder: np.ndarray,
        after_s: Callable[[], float],
        fps: float,
    ) -> None:
        self._gate = gate
        self._last_step_at = last_step_at
        self._placeholder = placeholder
        self._after_s = after_s
        self._period = 1.0 / fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stalled_since: float | None = None
        while not self._stop.wait(self._period):
            quiet_since = self._last_step_at()
            if time.monotonic() - quiet_since < self._after_s():
                if stalled_since is not None:
                    log.info("frames flow again after a %.1f s stall", time.monotonic() - stalled_since)
                    stalled_since = None
                continue
            if stalled_since is None:
                stalled_since = quiet_since
                log.warning(
                    "the frame loop is stuck (no step for %.1f s); publishing the placeholder until it moves again",
                    time.monotonic() - quiet_since,
                )
            try:  # never waits: a send in progress means the loop is not stuck in a stage
                self._gate.publish(self._placeholder, Shows.PLACEHOLDER, None, lock_wait=0)
            except Exception as exc:  # noqa: BLE001 - the sink's own error is the loop's to report
                log.debug("stall placeholder not sent: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
