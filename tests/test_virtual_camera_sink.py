"""The virtual-camera sink against pyvirtualcam's real API, with a recording backend."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import pyvirtualcam
from conftest import first_frames, laplacian_variance, read_gray, sequence

from privacycam.config import Config, OutputConfig
from privacycam.errors import SinkError
from privacycam.pipeline import Pipeline, PrivacyState
from privacycam.sinks import open_sink
from privacycam.sinks.virtual_camera import RELOAD_HELP, find_device_by_label, loopback_devices
from privacycam.sources import SequentialFeed, open_source


class RecordingBackend:
    """Implements pyvirtualcam's Backend contract and keeps what it was sent."""

    instances: list[RecordingBackend] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc, self._device = width, height, fps, fourcc, device
        self.frames: list[np.ndarray] = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert frame.dtype == np.uint8 and frame.ndim in (1, 2)
        self.frames.append(frame.copy())

    def close(self) -> None:
        self.closed = True

    def device(self) -> str:
        return self._device or "recording-device"

    def native_fourcc(self):
        return self.fourcc


class RefusingBackend(RecordingBackend):
    def __init__(self, **kw):
        raise RuntimeError("Device /dev/video0 is not a video output device")


@pytest.fixture(autouse=True)
def backends():
    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend("recording", RecordingBackend)
    pyvirtualcam.register_backend("refusing", RefusingBackend)


def _i420_to_bgr(flat: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.cvtColor(flat.reshape(height * 3 // 2, width), cv2.COLOR_YUV2BGR_I420)


def test_pipeline_publishes_filtered_i420_frames_of_fixed_size(tmp_path):
    frames = first_frames("davis2016_lucia", 6, tmp_path / "in")
    config = Config().model_copy(update={"output": OutputConfig(backend="recording")})
    source = open_source(str(frames), config.camera)
    sink = open_sink("vcam", 640, 360, 30.0, config.output)
    pipeline = Pipeline(config, SequentialFeed(source), sink, (640, 360), PrivacyState(True), live=False)
    pipeline.run()
    backend = RecordingBackend.instances[-1]
    assert (backend.width, backend.height, backend.fps) == (640, 360, 30.0)
    assert backend.fourcc == pyvirtualcam.util.encode_fourcc("I420")
    assert backend.closed
    # the device keeps its last frame for later readers: a placeholder first (whatever an earlier
    # writer left) and last (after the stop), the filtered frames between
    starting, *filtered, stopped = backend.frames
    assert len(filtered) == 6
    for placeholder in (starting, stopped):
        assert np.ptp(placeholder[: 640 * 360].reshape(360, 640)[:40]) == 0  # a flat frame with a line of text
    masks = sequence("davis2016_lucia") / "masks"
    for frame_path, sent in zip(sorted(frames.iterdir()), filtered, strict=True):
        assert sent.size == 640 * 360 * 3 // 2
        published = _i420_to_bgr(sent, 640, 360)
        original = cv2.resize(cv2.imread(str(frame_path)), (640, 360), interpolation=cv2.INTER_AREA)
        gt = cv2.resize(read_gray(masks / f"{frame_path.stem}.png"), (640, 360)) > 127
        far = cv2.dilate(gt.astype(np.uint8), np.ones((61, 61), np.uint8)) == 0
        assert laplacian_variance(published, far) < 0.1 * laplacian_variance(original, far)


def test_reopen_bug_gives_reload_instructions():
    with pytest.raises(SinkError) as info:
        open_sink("vcam:/dev/video0", 640, 360, 30.0, OutputConfig(backend="refusing"))
    assert "modprobe -r v4l2loopback" in info.value.message
    assert RELOAD_HELP in info.value.message


def test_missing_loopback_label_is_explained(tmp_path):
    with pytest.raises(SinkError) as info:
        open_sink("vcam", 640, 360, 30.0, OutputConfig(card_label="NoSuchCam"))
    assert "no v4l2loopback device labelled 'NoSuchCam'" in info.value.message
    assert "modprobe v4l2loopback" in info.value.message


def test_device_found_by_card_label_in_sysfs(tmp_path):
    for node, label in (("video0", "Integrated Camera"), ("video10", "PrivacyCam")):
        (tmp_path / node).mkdir()
        (tmp_path / node / "name").write_text(label + "\n")
    assert loopback_devices(str(tmp_path)) == {"/dev/video0": "Integrated Camera", "/dev/video10": "PrivacyCam"}
    assert find_device_by_label("PrivacyCam", str(tmp_path)) == "/dev/video10"
    assert find_device_by_label("Other", str(tmp_path)) is None


@pytest.mark.parametrize(
    ("fps", "per_frame"),
    [(15, (1, 15)), (30, (1, 30)), (29.97, (100, 2997)), (30000 / 1001, (1001, 30000)), (7.5, (2, 15))],
)
def test_the_advertised_frame_rate_is_laid_out_like_the_kernels_v4l2_streamparm(fps, per_frame):
    from fractions import Fraction

    from privacycam.sinks.virtual_camera import VIDIOC_S_PARM, streamparm_for

    request = streamparm_for(Fraction(fps).limit_denominator(1001))
    # linux/videodev2.h: __u32 type; union { struct v4l2_outputparm { __u32 capability, outputmode;
    # struct v4l2_fract timeperframe; ... } output; __u8 raw_data[200]; } parm;
    assert len(request) == 204
    assert int.from_bytes(request[0:4], "little") == 2  # V4L2_BUF_TYPE_VIDEO_OUTPUT
    assert (int.from_bytes(request[12:16], "little"), int.from_bytes(request[16:20], "little")) == per_frame
    assert not any(request[4:12]) and not any(request[20:])
    assert VIDIOC_S_PARM == 0xC0CC5616  # _IOWR('V', 22, 204 bytes)


def test_a_device_that_refuses_the_frame_rate_is_not_an_error(tmp_path):
    from privacycam.sinks.virtual_camera import advertise_frame_rate

    not_a_device = tmp_path / "video10"
    not_a_device.write_bytes(b"")
    assert advertise_frame_rate(str(not_a_device), 15) is False  # ENOTTY: logged, ignored
    assert advertise_frame_rate(str(tmp_path / "missing"), 15) is False
