"""Fail closed at the device: v4l2loopback hands a new reader the last frame written.

So "privacy on" is acknowledged only once a private frame was written, the last
frame left on the device is always the placeholder, and a stuck stage neither
freezes the output nor holds up the stop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import pyvirtualcam
from conftest import cli_env, wait_until
from fault_kit import (
    SMALL,
    ClipSource,
    RecordingSink,
    ScriptedSegmenter,
    factory_of,
    far_from_box,
    is_blurred,
    lucia,
    make_pipeline,
    running,
    small_config,
)

import privacycam.pipeline as pipeline_module
from privacycam.config import Config
from privacycam.control.client import send_command
from privacycam.daemon import Daemon
from privacycam.publish_gate import STOPPED_TEXT
from privacycam.sources import LatestFrameFeed, SequentialFeed

STUCK_DAEMON = Path(__file__).with_name("stuck_model_daemon.py")


class DeviceSink(RecordingSink):
    """A recording sink that, like v4l2loopback, shows its last frame to readers that open it later."""

    keeps_last_frame = True
    description = "recording device"


def _raw_frames() -> list[np.ndarray]:
    return [image for _, image in lucia(SMALL)]


def _is_raw(image: np.ndarray) -> bool:
    return any(np.array_equal(image, raw) for raw in _raw_frames())


def _is_private(image: np.ndarray) -> bool:
    """Not raw, and the far background is blurred (or the frame is a flat placeholder)."""
    width, height = SMALL
    far = far_from_box(width, height)
    reference = _raw_frames()[0]
    return not _is_raw(image) and is_blurred(image, reference, far, ratio=0.2)


def _slow_feed(fps: float = 2.0) -> LatestFrameFeed:
    return LatestFrameFeed(lambda: ClipSource(lucia(SMALL), fps=fps), pace_fps=fps)


# -- privacy on is acknowledged at the device ---------------------------------------------------------
class RecordingBackend:
    """pyvirtualcam's backend contract, keeping the I420 frames it was sent."""

    instances: list[RecordingBackend] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height = width, height
        self.frames: list[np.ndarray] = []
        self.lock = threading.Lock()
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        with self.lock:
            self.frames.append(frame.copy())

    def last_y_plane(self) -> np.ndarray:
        with self.lock:
            return self.frames[-1][: self.width * self.height].reshape(self.height, self.width)

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "recording-device"

    def native_fourcc(self):
        return pyvirtualcam.util.encode_fourcc("I420")


EVEN = (426, 240)  # the virtual camera publishes even sizes (I420)


@pytest.fixture
def vcam_daemon(tmp_path):
    """A real Daemon (privacy off) reading a 2 fps clip into a virtual camera with a recording backend."""
    import cv2

    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend("recording-device", RecordingBackend)
    clip = tmp_path / "clip"
    clip.mkdir()
    for stem, image in lucia(EVEN)[:8]:
        cv2.imwrite(str(clip / f"{stem}.png"), image)
    config = small_config(
        output={"backend": "recording-device"},
        control={"socket": str(tmp_path / "control.sock")},
        privacy={"start": False},
        camera={"fps": 2, "on_demand": False},
    )
    daemons: list[Daemon] = []

    def serve() -> None:  # built on its thread: the daemon installs signal handlers only on the main one
        daemons.append(Daemon(config, None, str(clip), "vcam", segmenter_factory=factory_of(ScriptedSegmenter())))
        daemons[0].serve()

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    wait_until(lambda: daemons and daemons[0].pipeline is not None, 30, "the daemon")
    yield daemons[0], RecordingBackend.instances[-1], tmp_path / "control.sock"
    daemons[0].stop("test")
    serving.join(15)
    assert not serving.is_alive()


@pytest.mark.parametrize("command", ["on", "toggle"])
def test_privacy_on_is_answered_only_once_the_device_holds_a_private_frame(vcam_daemon, command):
    import cv2

    _, backend, socket_path = vcam_daemon
    luma = [cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)[: EVEN[1]] for _, image in lucia(EVEN)[:8]]
    wait_until(lambda: len(backend.frames) > 2 and _y_is_raw(backend.last_y_plane(), luma), 30, "raw frames")
    answer = send_command(socket_path, command)
    assert answer["ok"] and answer["privacy"] is True
    # the moment the answer is in, a reader opening the device gets a private frame
    assert not _y_is_raw(backend.last_y_plane(), luma)


def test_doctor_says_when_the_virtual_camera_has_no_timeout_image(vcam_daemon):
    from privacycam.doctor import WARN, check_daemon

    daemon, _, _ = vcam_daemon
    checks = check_daemon(daemon.config)
    assert [check.status for check in checks] == ["OK", WARN]  # the recording backend has no device node
    assert "no timeout image" in checks[1].what


def test_the_timeout_image_ioctls_are_laid_out_like_the_kernels():
    from privacycam.sinks import loopback_timeout as lt

    # linux/videodev2.h on 64-bit: struct v4l2_buffer is 88 bytes, v4l2_requestbuffers 20, v4l2_control 8
    assert (lt.BUFFER.size, lt.REQUEST_BUFFERS.size, lt.CONTROL.size) == (88, 20, 8)
    assert (lt.VIDIOC_REQBUFS, lt.VIDIOC_QUERYBUF) == (0xC0145608, 0xC0585609)
    assert lt.VIDIOC_S_CTRL == 0xC008561C
    packed = lt.BUFFER.pack(0, 2, 0, 0, 0, 0, 1, 4096, 8192)
    assert int.from_bytes(packed[60:64], "little") == 1  # memory, after the timeval and timecode
    assert int.from_bytes(packed[64:68], "little") == 4096  # m.offset
    assert int.from_bytes(packed[72:76], "little") == 8192  # length


def test_a_node_that_is_not_a_loopback_takes_no_timeout_image(tmp_path):
    from privacycam.sinks.loopback_timeout import install_timeout_image

    not_a_device = tmp_path / "video10"
    not_a_device.write_bytes(b"")
    assert install_timeout_image(str(not_a_device), np.zeros((6, 4), np.uint8), 3000) is False


def _y_is_raw(y_plane: np.ndarray, luma: list[np.ndarray]) -> bool:
    # a raw frame's luma is within a grey level or two of its source's (the PNG round trip)
    return any(np.abs(y_plane.astype(np.int16) - source).mean() < 2.0 for source in luma)


def test_a_raw_frame_decided_before_privacy_came_on_is_replaced_at_the_gate():
    sink = DeviceSink()
    pipeline = make_pipeline(_slow_feed(), sink)
    pipeline.privacy.set(True, "test")
    from privacycam.publish_gate import Shows

    raw = _raw_frames()[0]
    pipeline.gate.publish(raw, Shows.RAW, None)
    assert not _is_raw(sink.sent[-1].image)
    assert pipeline.gate.is_private_at_device()


def test_privacy_on_with_a_stuck_loop_is_made_true_with_the_placeholder():
    """No frame comes from the loop: wait_private writes the placeholder itself and says so."""
    sink = DeviceSink()
    pipeline = make_pipeline(_slow_feed(), sink)
    pipeline.privacy.set(False, "test")
    from privacycam.publish_gate import Shows

    pipeline.gate.publish(_raw_frames()[0], Shows.RAW, None)
    pipeline.privacy.set(True, "test")
    assert not pipeline.gate.is_private_at_device()
    assert pipeline.gate.wait_private(grace=0.05)
    assert sink.sent[-1].frame is None and not _is_raw(sink.sent[-1].image)


# -- the last frame on the device ---------------------------------------------------------------------
def _ends_with_the_stopped_placeholder(sink: DeviceSink, config: Config) -> bool:
    expected = pipeline_module.placeholder_image(*SMALL, config.privacy.placeholder_color, STOPPED_TEXT)
    return sink.sent[-1].frame is None and np.array_equal(sink.sent[-1].image, expected)


@pytest.mark.parametrize("privacy_on", [True, False])
def test_a_stop_leaves_the_placeholder_as_the_last_frame(privacy_on):
    sink = DeviceSink()
    pipeline = make_pipeline(_slow_feed(30), sink)
    pipeline.privacy.set(privacy_on, "test")
    with running(pipeline):
        wait_until(lambda: sum(sent.frame is not None for sent in sink.sent) >= 3, 30, "frames")
    assert _ends_with_the_stopped_placeholder(sink, pipeline.config)
    assert sink.closed


class _ExplodingFeed:
    """A feed whose stage fails with an error nobody expected, after a few frames."""

    def __init__(self, after: int) -> None:
        self._inner = ClipSource(lucia(SMALL))
        self._after = after
        self.dropped = 0
        self.source_open = True

    def next(self, timeout: float):
        if self._after == 0:
            raise RuntimeError("an unexpected bug in a stage")
        self._after -= 1
        return self._inner.read()

    def set_paused(self, paused: bool) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_exception_in_a_stage_still_leaves_the_placeholder():
    sink = DeviceSink()
    pipeline = make_pipeline(_ExplodingFeed(after=4), sink)
    pipeline.privacy.set(False, "test")  # raw frames went out: the last one must not stay
    with pytest.raises(RuntimeError, match="unexpected bug"):
        pipeline.run()
    assert any(_is_raw(sent.image) for sent in sink.sent)
    assert _ends_with_the_stopped_placeholder(sink, pipeline.config)


def test_a_model_that_fails_to_load_still_leaves_the_placeholder():
    from privacycam.errors import ModelError

    def broken(_config):
        raise ModelError("model file x is damaged", "reinstall it")

    sink = DeviceSink()
    pipeline = make_pipeline(_slow_feed(30), sink, factory=broken)
    with pytest.raises(ModelError):
        pipeline.run()
    assert all(not _is_raw(sent.image) for sent in sink.sent)
    assert _ends_with_the_stopped_placeholder(sink, pipeline.config)


def test_a_file_output_gets_no_placeholder_frames(tmp_path):
    sink = RecordingSink()  # a file: every frame is content, nothing is shown to later readers
    pipeline = make_pipeline(SequentialFeed(ClipSource(lucia(SMALL), loop=False)), sink, live=False)
    pipeline.run()
    assert len(sink.sent) == len(lucia(SMALL))
    assert all(sent.frame is not None for sent in sink.sent)


# -- a stuck stage ---------------------------------------------------------------------------------------
class _HangingSegmenter(ScriptedSegmenter):
    """Answers, then hangs on its `hang_at`-th call until released."""

    def __init__(self, hang_at: int) -> None:
        super().__init__()
        self.hang_at = hang_at
        self.hanging = threading.Event()
        self.release = threading.Event()

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        if len(self.calls) == self.hang_at:
            self.hanging.set()
            self.release.wait(60)
        return super().segment(rgb, timestamp_ms)


def test_a_stuck_model_keeps_the_output_alive_with_the_placeholder_and_recovers(monkeypatch):
    monkeypatch.setattr(pipeline_module, "STALL_AFTER_S", 0.3)
    segmenter = _HangingSegmenter(hang_at=3)
    sink = DeviceSink()
    pipeline = make_pipeline(_slow_feed(30), sink, segmenter=segmenter)
    paused = pipeline_module.placeholder_image(*SMALL, pipeline.config.privacy.placeholder_color, "PrivacyCam: paused")
    with running(pipeline):
        assert segmenter.hanging.wait(30)
        stalled_at = time.monotonic()
        wait_until(
            lambda: sum(np.array_equal(s.image, paused) for s in sink.since(stalled_at)) >= 3, 30, "placeholders"
        )
        segmenter.release.set()
        released_at = time.monotonic()
        wait_until(lambda: sum(s.frame is not None for s in sink.since(released_at)) >= 3, 30, "frames again")
    assert all(not _is_raw(sent.image) for sent in sink.sent)
    camera_frames = [sent for sent in sink.since(released_at) if sent.frame is not None]
    assert all(_is_private(sent.image) for sent in camera_frames)


def test_a_slow_model_gets_its_frames_not_placeholders_between_them(monkeypatch):
    """An emulated or old CPU: seconds per frame is slow, not stuck."""
    monkeypatch.setattr(pipeline_module, "STALL_AFTER_S", 0.2)
    sink = DeviceSink()
    pipeline = make_pipeline(_slow_feed(30), sink, segmenter=ScriptedSegmenter(delay_s=0.4))
    paused = pipeline_module.placeholder_image(*SMALL, pipeline.config.privacy.placeholder_color, "PrivacyCam: paused")
    with running(pipeline):
        wait_until(lambda: sum(s.frame is not None for s in sink.sent) >= 4, 60, "the model's pace to be known")
        settled_at = time.monotonic()
        wait_until(lambda: sum(s.frame is not None for s in sink.since(settled_at)) >= 4, 60, "more frames")
    assert not any(np.array_equal(s.image, paused) for s in sink.since(settled_at))


def test_sigterm_with_a_stuck_model_exits_promptly_and_leaves_the_placeholder(tmp_path):
    """A model stuck for good (in native code the signal handler could not even run): exit 0, not a hang."""
    out = tmp_path / "frames.txt"
    process = subprocess.Popen(
        [sys.executable, str(STUCK_DAEMON), str(tmp_path / "control.sock"), str(out)],
        env=cli_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: out.exists() and "hanging" in out.read_text(), 60, "the model to hang")
        process.send_signal(signal.SIGTERM)
        # systemd kills at 10 s; a bound on a hang, not a timing floor
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "did not stop within" in stderr
    assert out.read_text().splitlines()[-1] == "sent: PrivacyCam: stopped"
