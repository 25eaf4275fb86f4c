"""A webcam's MJPEG and YUYV buffers become I420 in the camera source, without BGR.

OpenCV's V4L2 capture is replaced by a stand-in that behaves as OpenCV does with
CAP_PROP_CONVERT_RGB off: an MJPEG frame is the JPEG's bytes as a 1 x N array, a
YUYV frame is (h, w, 2).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import sequence

from privacycam import i420
from privacycam.errors import SourceError
from privacycam.sources import camera
from privacycam.sources.camera import CameraSource
from privacycam.sources.mjpeg import MjpegDecoder

FRAMES = sorted((sequence("davis2016_lucia") / "frames").glob("*.jpg"))[:3]


def _yuyv(bgr: np.ndarray) -> np.ndarray:
    """What a YUYV camera sends for this picture (studio-range BT.601, as I420 is here)."""
    planar = i420.from_bgr(bgr)
    y, u, v = i420.planes(planar)
    height, width = y.shape
    yuyv = np.empty((height, width, 2), np.uint8)
    yuyv[..., 0] = y
    yuyv[:, 0::2, 1] = np.repeat(u, 2, axis=0)
    yuyv[:, 1::2, 1] = np.repeat(v, 2, axis=0)
    return yuyv


class FakeCapture:
    def __init__(self, fourcc: str, broken: int = 0) -> None:
        self.fourcc, self.convert_rgb, self.broken, self.reads = fourcc, True, broken, 0

    def __call__(self, path, backend):  # stands in for the cv2.VideoCapture class
        return self

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_CONVERT_RGB:
            self.convert_rgb = bool(value)
        return True

    def get(self, prop):
        return {
            cv2.CAP_PROP_FRAME_WIDTH: 854,
            cv2.CAP_PROP_FRAME_HEIGHT: 480,
            cv2.CAP_PROP_FPS: 30.0,
            cv2.CAP_PROP_FOURCC: float(int.from_bytes(self.fourcc.encode(), "little")),
        }[prop]

    def read(self):
        path = FRAMES[self.reads % len(FRAMES)]
        self.reads += 1
        if self.reads <= self.broken:
            return True, np.frombuffer(path.read_bytes()[:200], np.uint8)[None, :]
        if self.convert_rgb:
            return True, cv2.imread(str(path))
        if self.fourcc == "MJPG":
            return True, np.frombuffer(path.read_bytes(), np.uint8)[None, :]
        return True, _yuyv(cv2.imread(str(path)))

    def release(self):
        pass


@pytest.fixture
def device(tmp_path):
    node = tmp_path / "video0"
    node.touch()
    return str(node)


def test_mjpeg_camera_frames_are_the_jpegs_own_planes(device, monkeypatch):
    capture = FakeCapture("MJPG")
    monkeypatch.setattr(camera.cv2, "VideoCapture", capture)
    source = CameraSource(device, 854, 480, 30.0, "MJPG")
    frame = source.read()
    assert not capture.convert_rgb, "the camera's JPEG bytes are taken raw"
    expected = MjpegDecoder("i420").decode(FRAMES[0].read_bytes())
    assert frame.image.shape == (720, 854) and np.array_equal(frame.image, expected)


def test_yuyv_camera_frames_go_to_i420_without_bgr(device, monkeypatch):
    capture = FakeCapture("YUYV")
    monkeypatch.setattr(camera.cv2, "VideoCapture", capture)
    frame = CameraSource(device, 854, 480, 30.0, "YUYV").read()
    expected = i420.from_bgr(cv2.imread(str(FRAMES[0])))
    assert frame.image.shape == (720, 854)
    assert np.array_equal(frame.image[:480], expected[:480]), "Y is the camera's own"
    assert np.abs(frame.image[480:].astype(int) - expected[480:]).max() <= 1


def test_a_damaged_jpeg_now_and_then_is_skipped(device, monkeypatch, caplog):
    monkeypatch.setattr(camera.cv2, "VideoCapture", FakeCapture("MJPG", broken=2))
    frame = CameraSource(device, 854, 480, 30.0, "MJPG").read()
    assert frame.index == 0 and frame.image.shape == (720, 854)
    assert sum("damaged JPEG" in r.message for r in caplog.records) == 1


def test_a_camera_sending_only_damaged_jpegs_is_one_clear_error(device, monkeypatch):
    monkeypatch.setattr(camera.cv2, "VideoCapture", FakeCapture("MJPG", broken=10_000))
    with pytest.raises(SourceError) as caught:
        CameraSource(device, 854, 480, 30.0, "MJPG").read()
    assert "damaged JPEG" in caught.value.message and "reconnect" in caught.value.message
