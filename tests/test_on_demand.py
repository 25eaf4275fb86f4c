"""Camera only while someone watches: reader detection and the pipeline's pause/resume."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np

from privacycam.config import Config
from privacycam.pipeline import Pipeline, PrivacyState
from privacycam.sinks.reader_watch import ReaderWatch, holders
from privacycam.sources import LatestFrameFeed
from privacycam.sources.synthetic import SyntheticSource


def _hold_open(path) -> subprocess.Popen:
    code = f"import sys, time; f = open({str(path)!r}, 'rb'); print('open', flush=True); sys.stdin.read()"
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "open"
    return process


def _wait_for(condition, timeout=8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_reader_watch_sees_other_processes_open_and_close(tmp_path):
    device = tmp_path / "video10"
    device.write_bytes(b"")
    with open(device, "rb"):  # the daemon's own writer must not count
        watch = ReaderWatch(str(device))
        try:
            assert watch.watching is False
            reader = _hold_open(device)
            assert holders(str(device), exclude_pid=0) >= 1
            assert _wait_for(lambda: watch.watching), "reader not noticed"
            reader.stdin.close()
            reader.wait(5)
            assert _wait_for(lambda: not watch.watching), "reader leaving not noticed"
        finally:
            watch.close()


class WatchedSink:
    description = "test sink"

    def __init__(self) -> None:
        self.consumer_watching = False
        self.frames: list[tuple[np.ndarray, bool]] = []  # (image, is_placeholder)
        self.lock = threading.Lock()

    def send(self, image, frame) -> None:
        with self.lock:
            self.frames.append((image.copy(), frame is None))

    def close(self) -> None:
        pass


def test_camera_opens_only_while_someone_watches():
    opened = []

    def open_camera():
        opened.append(time.monotonic())
        return SyntheticSource(320, 180, 30)

    feed = LatestFrameFeed(open_camera, start_paused=True)
    sink = WatchedSink()
    config = Config()
    pipeline = Pipeline(config, feed, sink, (320, 180), PrivacyState(True), live=True, on_demand=True)
    runner = threading.Thread(target=pipeline.run, daemon=True)
    runner.start()
    try:
        time.sleep(1.0)
        assert not opened and not feed.source_open, "camera opened with nobody watching"
        with sink.lock:
            assert sink.frames and all(placeholder for _, placeholder in sink.frames), "no placeholder while idle"
        sink.consumer_watching = True
        assert _wait_for(lambda: feed.source_open), "camera not opened for a reader"
        assert _wait_for(lambda: any(not p for _, p in sink.frames[-5:])), "no camera frames while watched"
        sink.consumer_watching = False
        assert _wait_for(lambda: not feed.source_open, timeout=10), "camera not released after the reader left"
    finally:
        pipeline.stop()
        runner.join(10)
    assert len(opened) == 1
