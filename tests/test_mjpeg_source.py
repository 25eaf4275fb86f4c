"""The MJPEG source decodes a webcam-like stream of JPEG images, frame by frame, and loops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import sequence

from privacycam.config import CameraConfig
from privacycam.errors import SourceError
from privacycam.sources import open_source
from privacycam.sources.mjpeg import MjpegFileSource, make_mjpeg_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("mjpeg") / "juggle.mjpeg"
    return make_mjpeg_clip(sequence("sam2_juggle_unlabeled") / "video.mp4", out, 320, 240, 6)


@pytest.mark.parametrize("pixel_format, shape", [("i420", (360, 320)), ("bgr", (240, 320, 3))])
def test_clip_holds_the_requested_frames_at_the_requested_size(clip, pixel_format, shape):
    source = MjpegFileSource(clip, pixel_format=pixel_format)
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert source.size == (320, 240)
    assert [f.index for f in frames] == list(range(6))
    assert all(f.image.shape == shape and f.image.dtype == np.uint8 for f in frames)
    assert np.abs(frames[0].image.astype(int) - frames[5].image.astype(int)).mean() > 1, "real motion, not one frame"


def test_frames_decode_like_opencv_decodes_the_same_jpeg(clip):
    data = clip.read_bytes()
    first_jpeg = data[: data.index(b"\xff\xd9") + 2]
    expected = cv2.imdecode(np.frombuffer(first_jpeg, np.uint8), cv2.IMREAD_COLOR)
    got = MjpegFileSource(clip, pixel_format="bgr").read().image
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 1.5  # two IDCTs, two colour conversions


def test_looping_source_starts_over(clip):
    source = MjpegFileSource(clip, loop=True)
    first = source.read().image.copy()
    for _ in range(5):
        source.read()
    seventh = source.read()
    assert seventh.index == 6 and np.array_equal(seventh.image, first)


def test_run_input_takes_mjpeg_files(clip):
    source = open_source(str(clip), CameraConfig())
    assert isinstance(source, MjpegFileSource)


def test_damaged_stream_is_one_clear_error(tmp_path):
    broken = tmp_path / "broken.mjpeg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    with pytest.raises(SourceError) as caught:
        MjpegFileSource(broken)
    assert "broken.mjpeg" in caught.value.message


def test_matte_command_takes_an_mjpeg_file(clip, tmp_path):
    from conftest import run_cli

    result = run_cli("matte", str(clip), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    mattes = sorted((tmp_path / "out").glob("*.png"))
    assert len(mattes) == 6 and cv2.imread(str(mattes[0]), cv2.IMREAD_GRAYSCALE).shape == (240, 320)
