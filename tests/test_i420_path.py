"""MJPEG from camera to virtual camera in I420: no full-size BGR frame on the way, and the
same picture (within 2 grey levels) as the BGR path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import pyvirtualcam
from conftest import laplacian_variance, read_gray, sequence

from privacycam import compositing, i420, pipeline
from privacycam.compositing import Compositor, cover
from privacycam.config import BackgroundConfig, Config, OutputConfig
from privacycam.pipeline import Pipeline, PrivacyState
from privacycam.sinks import open_sink
from privacycam.sinks.virtual_camera import VirtualCameraSink
from privacycam.sources import LatestFrameFeed
from privacycam.sources.mjpeg import MjpegDecoder, MjpegFileSource

WIDTH, HEIGHT = 1280, 720  # a webcam's MJPEG size
READY_FRAMES_KEPT = 8


class RecordingBackend:
    """pyvirtualcam's Backend contract; keeps what the sink wrote to the 'device'."""

    instances: list[RecordingBackend] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fourcc, self._device = width, height, fourcc, device
        self.frames: list[np.ndarray] = []
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "recording-device"

    def native_fourcc(self):
        return self.fourcc


@pytest.fixture(scope="module")
def camera_stream(tmp_path_factory):
    """lucia's frames at 720p as one MJPEG stream of 4:2:2 JPEGs, what a webcam sends; the
    JPEG bytes and the ground truth of each, at that size."""
    folder = sequence("davis2016_lucia")
    params = [cv2.IMWRITE_JPEG_QUALITY, 85, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
    jpegs, truths = [], []
    for path in sorted((folder / "frames").glob("*.jpg"))[:20]:
        jpegs.append(cv2.imencode(".jpg", cover(cv2.imread(str(path)), WIDTH, HEIGHT), params)[1].tobytes())
        mask = cv2.resize(
            read_gray(folder / "masks" / f"{path.stem}.png"), (1281, 720), interpolation=cv2.INTER_NEAREST
        )
        truths.append(cover(mask, WIDTH, HEIGHT) > 127)
    stream = tmp_path_factory.mktemp("camera") / "lucia.mjpeg"
    stream.write_bytes(b"".join(jpegs))
    return stream, jpegs, truths


def _count_calls(monkeypatch, owner, name: str, calls: list) -> None:
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_mjpeg_bytes_reach_the_virtual_camera_as_filtered_i420_without_a_bgr_frame(camera_stream, monkeypatch):
    stream, jpegs, truths = camera_stream
    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend("recording-i420", RecordingBackend)
    # Every way the pipeline makes a full-size BGR frame, counted: none may run.
    bgr_made: list[str] = []
    _count_calls(monkeypatch, i420, "to_bgr", bgr_made)
    _count_calls(monkeypatch, compositing.Compositor, "_blend_into_out", bgr_made)
    _count_calls(monkeypatch, compositing, "cover", bgr_made)
    _count_calls(monkeypatch, pipeline, "cover", bgr_made)
    mask_inputs: list[tuple[int, ...]] = []
    convert = i420.ShrunkBgr.convert
    monkeypatch.setattr(i420.ShrunkBgr, "convert", lambda self, f: mask_inputs.append(f.shape) or convert(self, f))
    composited: list[tuple[int, ...]] = []
    compose = Compositor.compose

    def compose_seen(self, frame, alpha, downscaled=None):
        composited.append(frame.shape)
        return compose(self, frame, alpha, downscaled)

    monkeypatch.setattr(Compositor, "compose", compose_seen)
    # (source index, position on the device) of each camera frame the sink got once the model was ready
    sent: list[tuple[int, int]] = []
    send = VirtualCameraSink.send

    def send_seen(self, image, frame):
        send(self, image, frame)
        if frame is not None and run.status.segmenter != "loading":
            sent.append((frame.index, len(RecordingBackend.instances[-1].frames) - 1))
            if len(sent) >= READY_FRAMES_KEPT:
                run.stop()

    monkeypatch.setattr(VirtualCameraSink, "send", send_seen)

    config = Config().model_copy(update={"output": OutputConfig(backend="recording-i420")})
    sink = open_sink("vcam", WIDTH, HEIGHT, 30.0, config.output)
    # the real capture path: a capture thread paced like a camera, decoding each JPEG as it comes
    feed = LatestFrameFeed(lambda: MjpegFileSource(stream, 30.0, loop=True), pace_fps=30.0)
    run = Pipeline(config, feed, sink, (WIDTH, HEIGHT), PrivacyState(True), live=True)
    run.run()

    assert bgr_made == [], "a full-size BGR frame was made between the camera and the virtual camera"
    assert composited and all(shape == (HEIGHT * 3 // 2, WIDTH) for shape in composited)
    assert mask_inputs and all(shape == (HEIGHT * 3 // 2, WIDTH) for shape in mask_inputs)
    assert run._shrunk_bgr.last_i420.shape == (HEIGHT * 3 // 4, WIDTH // 2), "the mask stage sees a half-size copy"
    device = RecordingBackend.instances[-1].frames
    decoder = MjpegDecoder("i420")
    assert len(sent) == READY_FRAMES_KEPT
    for index, position in sent[3:]:  # the first frames after the model is ready may still be hidden
        out = device[position].reshape(HEIGHT * 3 // 2, WIDTH)
        original = decoder.decode(jpegs[index % len(jpegs)])
        gt = truths[index % len(truths)]
        person = cv2.erode(gt.view(np.uint8), np.ones((7, 7), np.uint8)) > 0
        far = cv2.dilate(gt.view(np.uint8), np.ones((61, 61), np.uint8)) == 0
        out_y, original_y = i420.planes(out)[0], i420.planes(original)[0]
        assert np.abs(out_y[person].astype(int) - original_y[person]).mean() < 8, "the person stays sharp"
        assert laplacian_variance(out_y, far) < 0.1 * laplacian_variance(original_y, far), "background blurred"


@pytest.mark.parametrize("mode", ["blur", "color"])
def test_i420_compositing_matches_the_bgr_path_within_two_grey_levels(mode):
    folder = sequence("davis2016_tennis")
    frames = sorted((folder / "frames").glob("*.jpg"))[:3]
    bgr_path, i420_path = Compositor(BackgroundConfig(mode=mode)), Compositor(BackgroundConfig(mode=mode))
    from_half_size = Compositor(BackgroundConfig(mode=mode))
    half_size = i420.ShrunkBgr()
    for path in frames:
        bgr = cv2.imread(str(path))
        planar = i420.from_bgr(bgr)  # the same frame
        gt = read_gray(folder / "masks" / f"{path.stem}.png")
        alpha = cv2.GaussianBlur(cv2.resize(gt, (320, 180), interpolation=cv2.INTER_AREA), (0, 0), 2) / 255
        alpha = alpha.astype(np.float32)
        expected = i420.from_bgr(bgr_path.compose(bgr, alpha))  # today's path, converted by the sink
        got = i420_path.compose(planar, alpha)
        half_size.convert(planar)  # as the mask stage does: the blur may start from its half-size copy
        got_from_half_size = from_half_size.compose(planar, alpha, half_size.last_i420)
        for result in (got, got_from_half_size):
            assert result.shape == expected.shape
            for name, want, have in zip("YUV", i420.planes(expected), i420.planes(result), strict=True):
                difference = np.abs(want.astype(int) - have)
                assert np.percentile(difference, 99.9) <= 2, f"{name} plane of {path.name}"
                assert difference.mean() < 0.75, f"{name} plane of {path.name}"
        hidden_want = i420.from_bgr(bgr_path.compose_hidden(bgr))
        hidden = i420_path.compose_hidden(planar)
        assert np.percentile(np.abs(hidden_want.astype(int) - hidden), 99.9) <= 2


def test_mjpeg_planes_give_what_the_bgr_decode_converted_to_i420_gives():
    jpeg = (sequence("davis2016_lucia") / "frames" / "00010.jpg").read_bytes()
    planar = MjpegDecoder("i420").decode(jpeg)
    via_bgr = i420.from_bgr(MjpegDecoder("bgr").decode(jpeg))
    luma = np.abs(i420.planes(planar)[0].astype(int) - i420.planes(via_bgr)[0])
    assert np.percentile(luma, 99.9) <= 2 and luma.mean() < 0.75
    chroma = np.abs(planar[480:].astype(int) - via_bgr[480:])  # the DAVIS frames are 854x480
    assert np.percentile(chroma, 99) <= 3


def test_shrunk_bgr_for_the_mask_stage():
    bgr = cover(cv2.imread(str(sequence("davis2016_lucia") / "frames" / "00000.jpg")), 1280, 720)
    half = i420.ShrunkBgr().convert(i420.from_bgr(bgr))
    assert half.shape == (360, 640, 3)
    expected = cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(int) - expected).mean() < 3


@pytest.mark.parametrize(
    "size, small", [((1280, 720), (640, 360)), ((1920, 1080), (960, 540)), ((3840, 2160), (960, 540))]
)
def test_the_mask_stage_input_keeps_at_least_360_lines(size, small):
    width, height = size
    shrunk = i420.ShrunkBgr().convert(i420.empty(width, height))
    assert (shrunk.shape[1], shrunk.shape[0]) == small
