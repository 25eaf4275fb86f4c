"""Faults injected through the real interfaces: the camera goes away or is busy, the
segmenter raises or answers garbage, stages are slow, the output disappears, files change,
signals land at awkward moments, clients misbehave. Privacy on means every published
frame is filtered or the placeholder, whatever goes wrong."""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, cli_env, laplacian_variance, read_gray, sequence, start_cli, wait_until
from daemon_helpers import RunningDaemon
from fault_kit import (
    GARBAGE_KINDS,
    PERSON_BOX,
    SMALL,
    ClipSource,
    FaultySegmenter,
    FlakyCamera,
    RecordingSink,
    ScriptedSegmenter,
    StageGate,
    cpu_seconds,
    far_from_box,
    is_blurred,
    is_placeholder,
    lucia,
    make_pipeline,
    placeholders,
    running,
    small_config,
)

from privacycam.compositing import Compositor
from privacycam.control.client import send_command
from privacycam.errors import PrivacyCamError, SinkError
from privacycam.pipeline import Pipeline, PrivacyState
from privacycam.segmenters import create_segmenter
from privacycam.sources import LatestFrameFeed, SequentialFeed
from privacycam.sources.feed import RETRY_FIRST_S, RETRY_MAX_S

OUTAGE_S = 3.0  # how long a camera stays away in the outage tests
FAR = far_from_box(*SMALL)
WHOLE = np.ones(SMALL[::-1], bool)


def _camera_feed(camera: FlakyCamera, fps: float = 30.0) -> LatestFrameFeed:
    return LatestFrameFeed(camera.open, pace_fps=fps)


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def _assert_backoff(attempts: list[float]) -> None:
    """Each retry waited at least its turn of the schedule (RETRY_FIRST_S, doubling up to
    RETRY_MAX_S). A wait only ever runs long, so this holds on a loaded machine too (a ratio
    of consecutive gaps did not: one stretched gap made the next look short); a retry loop
    without backoff fails it."""
    gaps = _gaps(attempts)
    schedule = [min(RETRY_MAX_S, RETRY_FIRST_S * 2**turn) for turn in range(len(gaps))]
    assert all(gap >= due - 0.01 for gap, due in zip(gaps, schedule, strict=True)), (
        f"no backoff: gaps {gaps}, schedule {schedule}"
    )


def _messages(caplog, text: str, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage() and (level is None or r.levelno == level)]


# -- the camera ------------------------------------------------------------------------------
def test_unplugged_camera_gets_placeholders_then_reconnects_with_backoff(caplog):
    caplog.set_level(logging.INFO)
    camera = FlakyCamera(lucia(SMALL), fail_after=20)
    sink = RecordingSink()
    pipeline = make_pipeline(_camera_feed(camera), sink)
    known = placeholders(*SMALL, pipeline.config)
    with running(pipeline):
        wait_until(lambda: camera.unplugged_at is not None, 15, "the camera to fail")
        down_at = camera.unplugged_at
        cpu_before = cpu_seconds()
        time.sleep(OUTAGE_S)
        cpu_used = cpu_seconds() - cpu_before
        outage = sink.since(down_at + 0.25)  # the frame in flight at the unplug may still go out
        attempts = [down_at] + [t for t in camera.opens if t > down_at]
        camera.plug()
        back_at = time.monotonic()
        wait_until(
            lambda: any(e.frame is not None for e in sink.since(back_at)), RETRY_MAX_S + 5, "frames after the replug"
        )
        time.sleep(0.3)
    after = [e for e in sink.since(back_at) if e.frame is not None]

    assert len(outage) >= 3 * (OUTAGE_S - 0.25), f"only {len(outage)} frames in {OUTAGE_S} s without a camera"
    assert max(_gaps([e.at for e in outage])) < 1.0, "the output stalled while the camera was away"
    late = [e for e in outage if e.frame is not None]  # a frame captured just before the unplug, published late
    assert len(late) <= 1 and all(is_blurred(e.image, e.frame.image, FAR) for e in late)
    assert all(is_placeholder(e.image, known) for e in outage if e.frame is None), "not the placeholder"
    assert 2 <= len(attempts) <= 5, f"{len(attempts) - 1} reopen attempts in {OUTAGE_S} s"
    _assert_backoff(attempts)
    assert cpu_used < 0.2 * OUTAGE_S, f"{cpu_used:.2f} s CPU in {OUTAGE_S} s with the camera away: a busy loop"
    assert after and all(is_blurred(e.image, e.frame.image, FAR) for e in after), "unfiltered frame after the replug"
    assert len(_messages(caplog, "was unplugged", logging.WARNING)) == 1
    assert len(_messages(caplog, "does not exist", logging.WARNING)) == 1, "each retry logged again"
    assert len(_messages(caplog, "is back")) == 1


def test_busy_camera_is_reported_once_and_retried_with_backoff(caplog):
    caplog.set_level(logging.INFO)
    camera = FlakyCamera(lucia(SMALL))
    camera.busy = True
    sink = RecordingSink()
    pipeline = make_pipeline(_camera_feed(camera), sink)
    known = placeholders(*SMALL, pipeline.config)
    with running(pipeline):
        time.sleep(OUTAGE_S)
        meanwhile = sink.since(0)
        attempts = list(camera.opens)
        camera.busy = False
        freed_at = time.monotonic()
        wait_until(
            lambda: any(e.frame is not None for e in sink.since(freed_at)), RETRY_MAX_S + 5, "frames once it is free"
        )
    busy = [r for r in caplog.records if "another program is using it" in r.getMessage()]
    assert [r.levelno for r in busy] == [logging.WARNING], "the busy camera must be reported exactly once"
    assert 2 <= len(attempts) <= 5, f"{len(attempts)} open attempts in {OUTAGE_S} s"
    _assert_backoff(attempts)
    assert len(meanwhile) >= 3 * (OUTAGE_S - 0.5) and all(
        e.frame is None and is_placeholder(e.image, known) for e in meanwhile
    )
    assert len(_messages(caplog, "is back")) == 1


# -- the segmenter -----------------------------------------------------------------------------
def _offline_run(script, count: int) -> tuple[Pipeline, RecordingSink]:
    sink = RecordingSink()
    feed = SequentialFeed(ClipSource(lucia(SMALL)[:count], loop=False))
    pipeline = make_pipeline(feed, sink, ScriptedSegmenter(script), live=False)
    pipeline.run()
    assert len(sink.sent) == count
    return pipeline, sink


def _hidden_flags(pipeline: Pipeline, sink: RecordingSink) -> list[bool]:
    """Per published frame: is it exactly the fail-closed frame (background only)?"""
    compositor = Compositor(pipeline.config.background)
    return [np.array_equal(e.image, compositor.compose_hidden(e.frame.image)) for e in sink.sent]


def _person_kept(image: np.ndarray, original: np.ndarray) -> bool:
    x0, y0, x1, y1 = PERSON_BOX
    height, width = image.shape[:2]
    inner = (slice(round((y0 + 0.1) * height), height), slice(round((x0 + 0.05) * width), round((x1 - 0.05) * width)))
    return float(np.abs(image[inner].astype(int) - original[inner]).mean()) < 8


@pytest.mark.parametrize("kind", ["raise", *GARBAGE_KINDS])
def test_a_failing_segmenter_hides_that_frame_only(kind):
    pipeline, sink = _offline_run(lambda i: kind if i == 2 else "ok", 5)
    assert _hidden_flags(pipeline, sink) == [False, False, True, False, False]
    assert pipeline.status.fail_closed_frames == 1
    assert pipeline.status.last_error
    for entry in sink.sent:
        assert is_blurred(entry.image, entry.frame.image, FAR)
    assert _person_kept(sink.sent[3].image, sink.sent[3].frame.image), "no recovery on the next good frame"


@pytest.mark.parametrize("kind", ["uint8", "float64"])
def test_a_mask_of_the_wrong_dtype_fails_closed(kind):
    pipeline, sink = _offline_run(lambda i: kind if i == 1 else "ok", 3)
    assert _hidden_flags(pipeline, sink) == [False, True, False]


def test_a_long_run_of_failures_is_logged_once_and_recovers(caplog):
    caplog.set_level(logging.INFO)
    pipeline, sink = _offline_run(lambda i: "raise" if 5 <= i < 35 else "ok", 40)
    assert _hidden_flags(pipeline, sink) == [5 <= i < 35 for i in range(40)]
    assert pipeline.status.fail_closed_frames == 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "fully hidden" in warnings[0] and "exploded" in warnings[0], warnings
    assert len(_messages(caplog, "masking frames again after 30 fully hidden ones")) == 1


def test_a_segmenter_failing_on_and_off_does_not_flood_the_log(caplog):
    caplog.set_level(logging.INFO)
    pipeline, sink = _offline_run(lambda i: "raise" if i % 2 else "ok", 60)
    assert _hidden_flags(pipeline, sink) == [i % 2 == 1 for i in range(60)]
    assert pipeline.status.fail_closed_frames == 30
    lines = _messages(caplog, "fully hidden")
    assert 1 <= len(lines) <= 2, f"{len(lines)} log lines for 30 failures"


def test_frames_are_fully_hidden_while_the_model_loads(caplog):
    caplog.set_level(logging.INFO)
    loaded = threading.Event()
    segmenter = ScriptedSegmenter()

    def slow_factory(_config):
        loaded.wait(20)
        return segmenter

    sink = RecordingSink()
    pipeline = make_pipeline(_camera_feed(FlakyCamera(lucia(SMALL))), sink, factory=slow_factory)
    compositor = Compositor(pipeline.config.background)
    with running(pipeline):
        wait_until(lambda: sum(e.frame is not None for e in sink.since(0)) >= 15, 15, "frames while the model loads")
        assert pipeline.status.segmenter == "loading"
        assert pipeline.status.last_error == "the segmentation model is still loading"
        loading = [e for e in sink.since(0) if e.frame is not None]
        loaded.set()
        wait_until(lambda: segmenter.calls, 10, "the model to be used")
        # loaded: nothing wrong to report any more
        wait_until(lambda: pipeline.status.last_error is None, 10, "the loading error to clear")
    assert all(np.array_equal(e.image, compositor.compose_hidden(e.frame.image)) for e in loading)
    assert all(is_blurred(e.image, e.frame.image, WHOLE) for e in loading), "the person shown before the model"
    masked = [
        e for e in sink.sent[len(sink.sent) // 2 :] if e.frame is not None and _person_kept(e.image, e.frame.image)
    ]
    assert masked, "the model never took over"
    assert all(is_blurred(e.image, e.frame.image, FAR) for e in masked)
    assert len(_messages(caplog, "still loading", logging.INFO)) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- slow stages ---------------------------------------------------------------------------------
@pytest.mark.parametrize("slow", ["sink", "segmenter"])
def test_a_slow_stage_drops_frames_instead_of_queueing_them(slow):
    """Latest frame wins: while a stage is held, the camera goes on and its frames are dropped;
    once released, the output catches up with the camera at once instead of working off a queue.
    Counted in camera reads (Frame.index), not timed."""
    gate = StageGate()
    camera = FlakyCamera(lucia(SMALL))
    feed = _camera_feed(camera, fps=30)
    sink = RecordingSink(keep_images=False, gate=gate if slow == "sink" else None)
    segmenter = ScriptedSegmenter(gate=gate if slow == "segmenter" else None)
    pipeline = make_pipeline(feed, sink, segmenter)
    with running(pipeline):
        wait_until(lambda: len(sink.sent) >= 3, 30, "the first frames")
        for _ in range(3):
            after, newest = _frames_after_holding(gate, camera, sink)
            # at most the frame in the stage and one held for overlap are older than the release
            assert max(after, default=-1) >= newest, (
                f"frames {after} after the release: a queue behind the {slow} (camera at {camera.reads})"
            )
        assert feed.dropped >= 3 * 6, f"only {feed.dropped} frames dropped under the held stage"


def _frames_after_holding(gate: StageGate, camera: FlakyCamera, sink: RecordingSink) -> tuple[list[int], int]:
    """Holds the gated stage while the camera reads 8 frames; the camera indices of the first
    three frames sent after the release, and the index from which frames were read late in the hold."""
    gate.hold_next_call()
    wait_until(gate.holding.is_set, 30, "the stage to be held")
    held_at = camera.reads
    wait_until(lambda: camera.reads >= held_at + 6, 30, "the camera to go on under the held stage")
    newest = camera.reads  # frames with this index or later were read after this point
    wait_until(lambda: camera.reads >= newest + 2, 30, "two more camera frames")
    sent_before = len(sink.sent)
    gate.release()
    wait_until(lambda: len(sink.sent) >= sent_before + 3, 30, "frames after the release")
    return [entry.frame.index for entry in sink.sent[sent_before : sent_before + 3] if entry.frame], newest


# -- the output ----------------------------------------------------------------------------------
def test_a_failing_sink_stops_the_pipeline_and_releases_everything():
    camera = FlakyCamera(lucia(SMALL))
    feed = _camera_feed(camera)
    segmenter = ScriptedSegmenter()
    sink = RecordingSink(keep_images=False, fail_after=10)
    pipeline = make_pipeline(feed, sink, segmenter)
    with pytest.raises(SinkError, match="device gone"), running(pipeline) as thread:
        wait_until(lambda: not thread.is_alive(), 15, "the pipeline to stop by itself")
    assert len(sink.sent) == 10
    assert sink.closed and segmenter.closed and all(source.closed for source in camera.sources)
    captured = feed.frames_captured
    time.sleep(0.3)
    assert feed.frames_captured == captured, "the capture thread still runs"


def _daemon_env(runtime_dir: Path) -> dict[str, str]:
    return cli_env(XDG_RUNTIME_DIR=str(runtime_dir))


def _small_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "config.yaml"
    config.write_text("camera: {width: 320, height: 180, fps: 15}\n" + extra)
    return config


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("privacycam: error:")]
    assert len(errors) == 1 and "Fix:" in errors[0], stderr
    return errors[0]


@pytest.mark.parametrize("fault", ["folder removed", "folder replaced by a file", "disk full"])
def test_output_going_away_ends_the_daemon_with_one_clear_line(runtime_dir, tmp_path, fault):
    if fault == "disk full":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full")
        output = tmp_path / "out.mp4"
        output.symlink_to("/dev/full")  # every write fails with ENOSPC
    else:
        output = tmp_path / "out"
    config = _small_config(tmp_path)
    process = start_cli(
        "run", "--config", str(config), "--input", "synthetic", "--output", str(output), env=_daemon_env(runtime_dir)
    )
    try:
        if fault.startswith("folder"):
            wait_until(lambda: output.is_dir() and len(list(output.iterdir())) >= 5, 30, "the first frames")
            output.rename(tmp_path / "elsewhere")  # atomic: the folder is gone at once
            if fault == "folder replaced by a file":
                output.write_text("in the way")
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, stderr
    error = _one_error_line(stderr)
    assert ("cannot write" in error) if fault.startswith("folder") else ("No space left on device" in error), error
    assert not (runtime_dir / "privacycam" / "control.sock").exists()


# -- files changing under the daemon -------------------------------------------------------------
def test_a_background_image_broken_after_the_reload_was_checked_keeps_the_running_config(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    image = tmp_path / "bg.png"
    cv2.imwrite(str(image), np.full((30, 40, 3), (255, 0, 0), np.uint8))
    sink = RecordingSink()
    pipeline = make_pipeline(_camera_feed(FlakyCamera(lucia(SMALL))), sink)
    with running(pipeline) as thread:
        wait_until(lambda: len(sink.sent) >= 5, 10, "first frames")
        new_config = pipeline.config.with_overrides(background={"mode": "image", "image": str(image)})
        image.write_text("not a picture any more")  # the file changes after the reload was validated
        pipeline.request_reload(new_config)
        wait_until(lambda: pipeline.status.reloads_rejected == 1 or not thread.is_alive(), 20, "the reload")
        assert thread.is_alive(), "the pipeline died on a reload"
        rejected_at = time.monotonic()
        wait_until(lambda: len(sink.since(rejected_at)) >= 5, 20, "frames after the rejected reload")
    assert pipeline.status.reloads_applied == 0
    later = [e for e in sink.since(rejected_at) if e.frame is not None]
    assert later and all(is_blurred(e.image, e.frame.image, FAR) for e in later), "the running background was lost"
    assert _messages(caplog, "rejected") and _messages(caplog, "cannot be read as a picture")


def test_reload_with_a_bad_background_image_is_rejected_and_filtering_goes_on(runtime_dir, tmp_path):
    blue = np.full((36, 64, 3), (255, 0, 0), np.uint8)
    cv2.imwrite(str(tmp_path / "bg.png"), blue)
    (tmp_path / "text.png").write_text("not a picture")
    good = "background: {mode: image, image: bg.png}\n"
    config = _small_config(tmp_path, good)
    out = tmp_path / "out"
    daemon = RunningDaemon(runtime_dir, "--config", str(config), "--input", "synthetic", "--output", str(out))
    try:
        config.write_text(config.read_text().replace("bg.png", "missing.png"))
        assert "does not exist" in daemon.command("reload")["reload"]
        config.write_text(config.read_text().replace("missing.png", "text.png"))
        assert "cannot be read as a picture" in daemon.command("reload")["reload"]
        # The config is fine again, but the picture it names broke while the daemon ran.
        config.write_text(config.read_text().replace("text.png", "bg.png"))
        (tmp_path / "bg.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_until(lambda: daemon.status()["reloads_rejected"] == 3, 20, "the SIGHUP reload to be refused")
        before = daemon.status()["frames_out"]
        daemon.wait_until(lambda: daemon.status()["frames_out"] >= before + 15, 20, "frames after the reloads")
        newest = sorted(out.iterdir())[-3]  # not the one being written
        image = cv2.imread(str(newest))
    finally:
        code, stderr = daemon.stop()
    assert code == 0, stderr
    assert stderr.count("config reload (control socket) rejected") == 2
    assert "config reload (SIGHUP) rejected" in stderr
    # Still the blue picture far from the (centred) synthetic person, not the raw room.
    left = image[:, : image.shape[1] // 7].astype(int)
    assert np.abs(left - blue[0, 0]).mean() < 10, f"{newest.name}: far background is not the running picture"


# -- signals at awkward moments ------------------------------------------------------------------
def _assert_clean_stop(process: subprocess.Popen, socket_path: Path, codes=(0,)) -> str:
    _, stderr = process.communicate(timeout=30)
    assert process.returncode in codes, (process.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    assert not socket_path.exists(), "control socket left behind"
    return stderr


def test_sigterm_before_our_code_runs_kills_quietly(runtime_dir):
    process = start_cli("run", "--input", "synthetic", "--output", "null", env=_daemon_env(runtime_dir))
    time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    # Python itself is still starting: the default action (killed by SIGTERM) is all there is.
    _assert_clean_stop(process, runtime_dir / "privacycam" / "control.sock", codes=(0, -signal.SIGTERM))


def test_sigterm_during_start_up_stops_cleanly(runtime_dir):
    socket_path = runtime_dir / "privacycam" / "control.sock"
    for _ in range(2):
        process = start_cli("run", "--input", "synthetic", "--output", "null", env=_daemon_env(runtime_dir))
        deadline = time.monotonic() + 30
        while not socket_path.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)  # the socket exists from early in start-up: hit the window right after it
        process.send_signal(signal.SIGTERM)
        stderr = _assert_clean_stop(process, socket_path)
        assert "stopping (SIGTERM)" in stderr


SLOW_MODEL = """
import sys, time
from privacycam.segmenters import litert_selfie
real_init = litert_selfie.LiteRtSelfieSegmenter.__init__
def slow_init(self, *args, **kwargs):
    time.sleep(float(sys.argv[1]))
    real_init(self, *args, **kwargs)
litert_selfie.LiteRtSelfieSegmenter.__init__ = slow_init
from privacycam.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_while_the_model_loads_stops_cleanly(runtime_dir, tmp_path):
    script = tmp_path / "slow_model.py"
    script.write_text(SLOW_MODEL)
    socket_path = runtime_dir / "privacycam" / "control.sock"
    env = _daemon_env(runtime_dir) | {"PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script), "2.5", "run", "--input", "synthetic", "--output", "null"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def loading() -> bool:
        try:
            return send_command(socket_path, "status").get("segmenter") == "loading"
        except PrivacyCamError:
            return False

    try:
        wait_until(lambda: loading() or process.poll() is not None, 20, "the daemon to answer while loading")
        assert loading(), "the model was not loading any more"
        sent_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stderr = _assert_clean_stop(process, socket_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "stopping (SIGTERM)" in stderr
    assert time.monotonic() - sent_at < 10, "stopping waited too long for the model"


# -- the control socket --------------------------------------------------------------------------
def test_many_bad_clients_do_not_stall_the_control_socket(runtime_dir, tmp_path):
    config = _small_config(tmp_path)
    daemon = RunningDaemon(runtime_dir, "--config", str(config), "--input", "synthetic", "--output", "null")
    clients: list[socket.socket] = []
    stop_dripping = threading.Event()

    def drip(sock: socket.socket) -> None:  # one byte now and then, never a whole line
        while not stop_dripping.wait(0.1):
            try:
                sock.sendall(b"x")
            except OSError:
                return

    try:
        for i in range(30):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(2)
            client.connect(str(daemon.socket))
            clients.append(client)
            if i % 3 == 1:
                client.sendall(b"\x00\xff\xfe" * 50)  # binary, no newline
            elif i % 3 == 2:
                client.sendall(b'{"command": "sta')  # half a request, then silence
        drippers = [threading.Thread(target=drip, args=(c,), daemon=True) for c in clients[:5]]
        for thread in drippers:
            thread.start()
        for command in ("status", "off", "on", "status"):
            started = time.monotonic()
            answer = send_command(daemon.socket, command)
            assert answer["ok"], answer
            # starved, each would wait out the slow clients' 1 s deadlines one after another (~30 s);
            # `on` also waits for its first private frame at the output
            assert time.monotonic() - started < 5.0, f"{command} took {time.monotonic() - started:.1f} s"
    finally:
        stop_dripping.set()
        for client in clients:
            client.close()
        code, stderr = daemon.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr


# -- the invariant over a whole run ----------------------------------------------------------------
INVARIANT_SEED = 8
INVARIANT_RUN_S = 10.0


class InvariantSink:
    """Checks every frame as it is published: far background blurred, or the placeholder."""

    description = "invariant checker"
    consumer_watching = True

    def __init__(self, known_placeholders: list[np.ndarray]) -> None:
        self.known = known_placeholders
        self.far: dict[str, np.ndarray] = {}
        self.sharpness: dict[str, float] = {}
        masks = sequence("davis2016_lucia") / "masks"
        for name, image in lucia():
            gt = read_gray(masks / f"{name}.png") > 127
            far = cv2.dilate(gt.astype(np.uint8), np.ones((81, 81), np.uint8)) == 0
            self.far[name], self.sharpness[name] = far, laplacian_variance(image, far)
        self.frames = self.placeholders = 0
        self.leaked: list[str] = []

    def send(self, image: np.ndarray, frame) -> None:
        self.frames += 1
        if frame is None:
            self.placeholders += 1
            if not is_placeholder(image, self.known):
                self.leaked.append("placeholder")
        elif laplacian_variance(image, self.far[frame.name]) >= 0.1 * self.sharpness[frame.name]:
            self.leaked.append(frame.name)

    def close(self) -> None:
        pass


def test_privacy_invariant_holds_through_random_faults():
    rng = random.Random(INVARIANT_SEED)
    seg_rng, open_rng = random.Random(rng.random()), random.Random(rng.random())
    camera = FlakyCamera(
        lucia(),
        failing_reads=set(rng.sample(range(30, 300), 4)),
        open_fails=lambda: open_rng.random() < 0.3,
    )
    kinds = ["raise", *GARBAGE_KINDS]
    models: list[FaultySegmenter] = []

    def slow_faulty_model(segmenter_config):
        time.sleep(0.8)  # the model is still loading while the first frames go out
        fault = lambda: seg_rng.choice(kinds) if seg_rng.random() < 0.12 else None  # noqa: E731
        models.append(FaultySegmenter(create_segmenter(segmenter_config), fault))
        return models[-1]

    config = small_config(mask={"region_of_interest": True})
    sink = InvariantSink(placeholders(854, 480, config))
    pipeline = Pipeline(
        config, _camera_feed(camera), sink, (854, 480), PrivacyState(True), segmenter_factory=slow_faulty_model
    )
    with running(pipeline):
        time.sleep(INVARIANT_RUN_S / 2)
        # A new model mid-run: the old one masks until the new one is ready.
        pipeline.request_reload(config.with_overrides(segmenter={"threads": 2}))
        time.sleep(INVARIANT_RUN_S / 2)
    status = pipeline.status
    summary = {
        "frames": sink.frames,
        "camera_frames": sink.frames - sink.placeholders,
        "placeholders": sink.placeholders,
        "fail_closed": status.fail_closed_frames,
        "source_errors": camera.failed_reads,
        "failed_opens": camera.failed_opens,
        "segmenter_faults": sum(sum(m.faults.values()) for m in models),
        "model_loads": len(models),
        "leaked": len(sink.leaked),
    }
    print(f"\ninvariant run (seed {INVARIANT_SEED}): {summary}")
    assert not sink.leaked, f"unfiltered frames published: {sink.leaked[:10]}"
    assert summary["camera_frames"] >= 100 and len(models) == 2
    assert camera.failed_reads >= 2 and status.fail_closed_frames >= 20
    assert status.fail_closed_frames < 0.7 * summary["camera_frames"], "hardly any frame was really masked"


def test_an_offline_run_gives_a_slow_background_model_every_frame():
    """A file run waits for each mask: the background thread is unwrapped, no frame goes out hidden."""
    from privacycam.segmenters.background_worker import BackgroundSegmenter

    inner = ScriptedSegmenter(delay_s=0.05)
    sink = RecordingSink()
    feed = SequentialFeed(ClipSource(lucia(SMALL)[:6], loop=False))
    pipeline = make_pipeline(feed, sink, live=False, factory=lambda _config: BackgroundSegmenter(inner))
    pipeline.run()
    assert len(sink.sent) == 6
    assert _hidden_flags(pipeline, sink) == [False] * 6
    assert len(inner.calls) == 6  # one inference per frame, in line
    assert all(_person_kept(e.image, e.frame.image) for e in sink.sent)


class FrameKeepingCount(RecordingSink):
    """Notes, at each send, how many of the frames sent before are still alive somewhere."""

    def __init__(self) -> None:
        super().__init__(keep_images=False)
        self.earlier: list[weakref.ref] = []
        self.alive_at_end = 0

    def send(self, image, frame) -> None:
        super().send(image, None)  # keeps no reference to the frame itself
        if frame is not None:
            self.earlier.append(weakref.ref(frame))
        gc.collect()
        self.alive_at_end = sum(ref() is not None for ref in self.earlier[:-3])


@pytest.mark.parametrize("failure", ["raise", "nan"])
def test_failing_frames_are_not_kept_alive(failure):
    """A model failing for hours must not pin every failed frame in memory (exception tracebacks)."""
    sink = FrameKeepingCount()
    feed = SequentialFeed(ClipSource(lucia(SMALL)[:20], loop=False))
    make_pipeline(feed, sink, ScriptedSegmenter(lambda _: failure), live=False).run()
    assert len(sink.earlier) == 20
    assert sink.alive_at_end == 0
