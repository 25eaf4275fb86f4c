"""Bad media: damaged or empty images, odd and tiny frame sizes, every kind of background
picture, truncated and damaged videos. Nothing crashes, nothing prints a traceback; what
can be read is processed and what cannot is named in one line."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import first_frames, laplacian_variance, read_gray, run_cli, sequence, wait_until
from fault_kit import ClipSource, RecordingSink, lucia, make_pipeline
from PIL import Image

from privacycam.compositing import Compositor
from privacycam.config import BackgroundConfig, Config
from privacycam.errors import SourceEndedEarly, SourceError
from privacycam.segmenters import create_segmenter
from privacycam.sinks.png_folder import PngFolderSink
from privacycam.sinks.video_file import VideoFileSink
from privacycam.sources import LatestFrameFeed, SequentialFeed
from privacycam.sources.image_folder import ImageFolderSource
from privacycam.sources.video_file import VideoFileSource

LUCIA = sequence("davis2016_lucia")


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("privacycam: error:")]


class _Shared:
    """One real model for the whole module; pipelines 'close' it without closing it."""

    def __init__(self, segmenter) -> None:
        self.inner = segmenter
        self.name = segmenter.name
        self.input_size = segmenter.input_size

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        return self.inner.segment(rgb, timestamp_ms)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def model():
    segmenter = create_segmenter(Config().segmenter)
    yield _Shared(segmenter)
    segmenter.close()


# -- image folders -------------------------------------------------------------------------------
def test_unreadable_images_in_a_folder_are_skipped(tmp_path):
    frames = tmp_path / "in"
    frames.mkdir()
    good = sorted((LUCIA / "frames").iterdir())[:3]
    (frames / "00000.jpg").symlink_to(good[0])
    (frames / "00001.jpg").write_bytes(good[1].read_bytes()[: good[1].stat().st_size * 2 // 5])  # truncated
    (frames / "00002.jpg").symlink_to(good[2])
    (frames / "0-damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # sorts first
    (frames / "00003.png").write_text("not a picture")
    (frames / "00004.jpg").write_bytes(b"")
    out = tmp_path / "out"
    result = run_cli("run", "--input", str(frames), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert not _errors(result.stderr)
    skipped = [line for line in result.stderr.splitlines() if "skipping" in line]
    assert len(skipped) == 3 and all("not a readable image" in line for line in skipped), skipped
    for name in ("0-damaged", "00003", "00004"):
        assert any(name in line for line in skipped), name
    written = sorted(p.stem for p in out.iterdir())
    # A truncated JPEG decodes partly (grey at the bottom): it is processed, not skipped.
    assert written == ["00000", "00001", "00002"], written
    for stem in written:
        filtered = cv2.imread(str(out / f"{stem}.png"))
        assert filtered.shape == (480, 854, 3)
        if stem != "00001":
            original = cv2.imread(str(frames / f"{stem}.jpg"))
            far = cv2.dilate((read_gray(LUCIA / "masks" / f"{stem}.png") > 127).astype(np.uint8), np.ones((81, 81)))
            assert laplacian_variance(filtered, far == 0) < 0.1 * laplacian_variance(original, far == 0)


def _header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with a few rows of data: no decoder gets that far."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * 4)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


HUGE_PICTURES = {"40000x30000": (40000, 30000), "2^15 x 2^15": (32768, 32768), "10000x10000": (10000, 10000)}


@pytest.mark.parametrize("name", HUGE_PICTURES)
def test_a_picture_of_too_many_pixels_in_a_folder_is_skipped_in_one_line(tmp_path, runtime_dir, name):
    frames = tmp_path / "in"
    frames.mkdir()
    (frames / "00000.jpg").symlink_to(sorted((LUCIA / "frames").iterdir())[0])
    _header_only_png(frames / "00001.png", *HUGE_PICTURES[name])
    out = tmp_path / "out"
    result = run_cli("run", "--input", str(frames), "--output", str(out), timeout=60)
    assert result.returncode == 0, result.stderr
    assert not _errors(result.stderr)
    skipped = [line for line in result.stderr.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and "00001.png" in skipped[0] and "megapixels" in skipped[0], result.stderr
    assert sorted(p.stem for p in out.iterdir()) == ["00000"]


@pytest.mark.parametrize("name", HUGE_PICTURES)
def test_a_background_of_too_many_pixels_is_one_config_error(tmp_path, runtime_dir, name):
    picture = _header_only_png(tmp_path / "bg.png", *HUGE_PICTURES[name])
    config = tmp_path / "c.yaml"
    config.write_text(f"background: {{mode: image, image: {picture}}}\n")
    result = run_cli("run", "--config", str(config), "--input", "synthetic", "--output", "null", "--frames", "1")
    assert result.returncode == 2, result.stderr
    errors = _errors(result.stderr)
    assert len(errors) == 1 and "megapixels" in errors[0] and "scale it down" in errors[0], result.stderr


def test_a_fifo_named_like_a_picture_is_skipped_not_waited_on(tmp_path, runtime_dir):
    frames = first_frames("davis2016_lucia", 2, tmp_path / "in")
    os.mkfifo(frames / "00001b.png")  # sorts between the two frames
    out = tmp_path / "out"
    result = run_cli("run", "--input", str(frames), "--output", str(out), timeout=60)
    assert result.returncode == 0, result.stderr
    assert any("00001b.png" in line and "not a regular file" in line for line in result.stderr.splitlines())
    assert sorted(p.stem for p in out.iterdir()) == ["00000", "00001"]


def test_a_folder_with_no_readable_image_is_one_clear_error(tmp_path):
    frames = tmp_path / "in"
    frames.mkdir()
    (frames / "a.png").write_bytes(b"")
    (frames / "b.jpg").write_text("nope")
    result = run_cli("run", "--input", str(frames), "--output", "null")
    assert result.returncode == 1
    errors = _errors(result.stderr)
    assert len(errors) == 1 and "can be read" in errors[0] and "Fix:" in errors[0], result.stderr


def test_odd_frame_size_through_the_cli_keeps_its_size(tmp_path):
    frames = tmp_path / "in"
    frames.mkdir()
    for path in sorted((LUCIA / "frames").iterdir())[:2]:
        cv2.imwrite(str(frames / f"{path.stem}.png"), cv2.resize(cv2.imread(str(path)), (641, 479)))
    out = tmp_path / "out"
    result = run_cli("run", "--input", str(frames), "--output", str(out))
    assert result.returncode == 0, result.stderr
    shapes = [cv2.imread(str(p)).shape for p in sorted(out.iterdir())]
    assert shapes == [(479, 641, 3)] * 2


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 2), (16, 9), (500, 1), (1, 300)])
def test_tiny_and_thin_frames_do_not_crash(model, size):
    width, height = size
    frames = tuple(
        (f"{i:05d}", cv2.resize(image, size, interpolation=cv2.INTER_AREA)) for i, (_, image) in enumerate(lucia()[:3])
    )
    sink = RecordingSink()
    pipeline = make_pipeline(
        SequentialFeed(ClipSource(frames, loop=False)), sink, model, Config(), live=False, size=size
    )
    pipeline.run()
    assert [e.image.shape for e in sink.sent] == [(height, width, 3)] * 3
    assert all(e.image.dtype == np.uint8 for e in sink.sent)


def test_frames_of_mixed_sizes_come_out_at_the_first_ones_size(model, tmp_path):
    frames = tmp_path / "in"
    frames.mkdir()
    image = lucia()[0][1]
    for name, size in (("0", (854, 480)), ("1", (641, 479)), ("2", (1, 1)), ("3", (300, 600)), ("4", (1920, 1080))):
        cv2.imwrite(str(frames / f"{name}.png"), cv2.resize(image, size))
    source = ImageFolderSource(frames)
    out = tmp_path / "out"
    pipeline = make_pipeline(SequentialFeed(source), PngFolderSink(out), model, Config(), live=False, size=source.size)
    pipeline.run()
    assert [cv2.imread(str(p)).shape for p in sorted(out.iterdir())] == [(480, 854, 3)] * 5


def test_odd_sizes_in_a_video_file_are_padded_by_one_pixel(tmp_path):
    path = tmp_path / "odd.mp4"
    sink = VideoFileSink(path, 641, 479, 30)
    for _ in range(5):
        sink.send(np.full((479, 641, 3), 90, np.uint8), None)
    sink.close()
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (480, 642, 3)


# -- background pictures -----------------------------------------------------------------------------
BACKGROUNDS = {
    "grey.png": (lambda p: cv2.imwrite(str(p), np.full((30, 40), 128, np.uint8)), (128, 128, 128)),
    "grey16.png": (lambda p: cv2.imwrite(str(p), np.full((30, 40), 40000, np.uint16)), (156, 156, 156)),
    "rgb16.png": (lambda p: cv2.imwrite(str(p), np.full((30, 40, 3), (65535, 0, 30000), np.uint16)), (255, 0, 117)),
    "rgba.png": (lambda p: cv2.imwrite(str(p), np.full((30, 40, 4), (255, 0, 0, 10), np.uint8)), (255, 0, 0)),
    "grey_alpha.png": (
        lambda p: Image.fromarray(np.full((30, 40, 2), (90, 200), np.uint8), "LA").save(p),
        (90, 90, 90),
    ),
    "palette.png": (
        lambda p: Image.new("RGB", (40, 30), (10, 200, 30)).quantize(4).save(p),
        (30, 200, 10),
    ),
    "float.tiff": (lambda p: cv2.imwrite(str(p), np.full((30, 40, 3), 0.5, np.float32)), (128, 128, 128)),
    "float_grey.tiff": (lambda p: cv2.imwrite(str(p), np.full((30, 40), 0.25, np.float32)), (64, 64, 64)),
    "one_pixel.png": (lambda p: cv2.imwrite(str(p), np.full((1, 1, 3), (0, 0, 255), np.uint8)), (0, 0, 255)),
    "two_by_three.bmp": (lambda p: cv2.imwrite(str(p), np.full((3, 2, 3), (0, 200, 0), np.uint8)), (0, 200, 0)),
}


@pytest.mark.parametrize("name", BACKGROUNDS)
def test_every_kind_of_background_picture_gives_colour_frames(tmp_path, name):
    write, expected_bgr = BACKGROUNDS[name]
    path = tmp_path / name
    write(path)
    compositor = Compositor(BackgroundConfig(mode="image", image=path))
    frame = lucia((64, 36))[0][1]
    for out in (compositor.compose(frame, np.zeros((9, 16), np.float32)), compositor.compose_hidden(frame)):
        assert out.shape == (36, 64, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - expected_bgr).max() <= 1, (name, out[0, 0])


def test_a_16_bit_grey_background_through_the_cli(tmp_path):
    frames = tmp_path / "in"
    frames.mkdir()
    (frames / "00000.jpg").symlink_to(LUCIA / "frames" / "00000.jpg")
    cv2.imwrite(str(tmp_path / "bg.png"), np.full((90, 160), 40000, np.uint16))
    config = tmp_path / "c.yaml"
    config.write_text("background: {mode: image, image: bg.png}\n")
    result = run_cli("run", "--config", str(config), "--input", str(frames), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    out = cv2.imread(str(tmp_path / "out" / "00000.png"), cv2.IMREAD_UNCHANGED)
    far = cv2.dilate((read_gray(LUCIA / "masks" / "00000.png") > 127).astype(np.uint8), np.ones((81, 81))) == 0
    assert out.shape == (480, 854, 3)
    assert (np.abs(out[far].astype(int) - 156).max(axis=1) <= 2).mean() > 0.9


# -- videos --------------------------------------------------------------------------------------------
def _write_video(path: Path, faststart: bool = False, count: int = 40) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 428, 240, "yuv420p"
        stream.options = {"g": "10"}  # a keyframe now and then, so decoding can resume after damage
        for _, image in lucia((428, 240))[:count]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))
    return path


def _read_all(source: VideoFileSource) -> int:
    count = 0
    while source.read() is not None:
        count += 1
    return count


def test_a_truncated_video_with_its_index_at_the_end_is_one_clear_error(tmp_path):
    video = _write_video(tmp_path / "whole.mp4", faststart=False)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    result = run_cli("run", "--input", str(cut), "--output", "null")
    assert result.returncode == 1
    errors = _errors(result.stderr)
    assert len(errors) == 1 and "cannot be read" in errors[0] and "Fix:" in errors[0], result.stderr


def test_a_truncated_video_with_its_index_first_plays_what_is_there_then_says_so(tmp_path):
    video = _write_video(tmp_path / "whole.mp4", faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size * 3 // 5])
    source, count = VideoFileSource(cut), 0
    with pytest.raises(SourceEndedEarly, match="the file is cut short"):
        while source.read() is not None:
            count += 1
    assert 10 <= count < 40
    assert _read_all(VideoFileSource(video)) == 40  # the whole file ends without a word


@pytest.mark.parametrize("kind", ["mp4 with its index first", "mkv"])
def test_a_truncated_video_is_processed_then_exits_1_with_one_line(tmp_path, runtime_dir, kind):
    # Issue 18, item 6: this exited 0 without a word. Chosen: every frame that decodes is
    # processed, then one error line and exit 1, so a script sees its output is short.
    video = _write_video(tmp_path / "whole.mp4", faststart=True) if kind != "mkv" else _write_video(tmp_path / "w.mkv")
    cut = tmp_path / f"cut{video.suffix}"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    out = tmp_path / "out"
    result = run_cli("run", "--input", str(cut), "--output", str(out))
    assert result.returncode == 1, result.stderr
    errors = _errors(result.stderr)
    assert len(errors) == 1 and "the file is cut short" in errors[0] and "Fix:" in errors[0], result.stderr
    decodable = 0
    with contextlib.suppress(SourceEndedEarly):
        source = VideoFileSource(cut)
        while source.read() is not None:
            decodable += 1
    assert decodable >= 10
    # every one, also the one the pipeline held in flight when the error came
    assert len(list(out.iterdir())) == decodable
    whole = run_cli("run", "--input", str(video), "--output", str(tmp_path / "whole-out"))
    assert whole.returncode == 0 and not _errors(whole.stderr) and "cut short" not in whole.stderr


def test_a_video_claiming_an_absurd_frame_rate_plays_at_30(tmp_path, caplog):
    video = tmp_path / "slow.mkv"
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(1, 1000))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="bgr24")))
        container.mux(stream.encode(None))
    with caplog.at_level(logging.WARNING):
        source = VideoFileSource(video)
    assert source.fps == 30.0
    assert "playing it at 30" in caplog.text


def test_a_damaged_stretch_is_skipped_with_one_warning(tmp_path, caplog):
    # Zeroes over two packets in the middle of a real clip: the decoder rejects them.
    data = bytearray((sequence("sam2_bedroom_unlabeled") / "video.mp4").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20000] = bytes(20000)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    source = VideoFileSource(damaged)
    count = _read_all(source)
    assert source.damaged_packets >= 1 and count >= 190, (count, source.damaged_packets)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "damaged" in r.getMessage()]
    assert len(warnings) == 1


def test_a_video_with_nothing_decodable_is_an_error_not_an_empty_run(tmp_path):
    data = bytearray(_write_video(tmp_path / "whole.mp4", faststart=True).read_bytes())
    body = data.find(b"mdat") + 8
    data[body:] = np.random.default_rng(1).integers(0, 256, len(data) - body, dtype=np.uint8).tobytes()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="is damaged"):
        _read_all(VideoFileSource(garbage))


# -- files changing while they are read ---------------------------------------------------------------
def test_images_deleted_or_spoilt_after_the_folder_was_listed_are_skipped(tmp_path, caplog):
    frames = tmp_path / "in"
    frames.mkdir()
    for name, image in lucia((64, 36))[:4]:
        cv2.imwrite(str(frames / f"{name}.png"), image)
    source = ImageFolderSource(frames)  # lists the folder and reads the first image
    (frames / "00001.png").unlink()
    (frames / "00002.png").write_bytes(b"")
    names = []
    while (frame := source.read()) is not None:
        names.append(frame.name)
    assert names == ["00000", "00003"]
    assert len([r for r in caplog.records if "skipping" in r.getMessage()]) == 2


def test_a_looping_input_video_emptied_under_the_daemon_is_retried_until_it_is_back(tmp_path, caplog):
    clip = _write_video(tmp_path / "loop.mp4", faststart=True, count=20)
    content = clip.read_bytes()

    def open_clip() -> VideoFileSource:
        source = VideoFileSource(clip, loop=True)
        source.live = True
        return source

    feed = LatestFrameFeed(open_clip, pace_fps=30)
    try:
        assert _frames_within(feed, 2.0, enough=10) >= 10
        clip.write_bytes(b"")  # emptied in place: the next loop cannot reopen it
        wait_until(lambda: "cannot be read" in (feed.error or ""), 5, "the feed to notice")
        _frames_within(feed, 0.2)  # one may still have been waiting
        assert _frames_within(feed, 0.7) == 0
        clip.write_bytes(content)
        assert _frames_within(feed, 5.0, enough=10) >= 10, "the feed did not come back with the file"
    finally:
        feed.close()
    assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 1


def _frames_within(feed: LatestFrameFeed, seconds: float, enough: int | None = None) -> int:
    count, end = 0, time.monotonic() + seconds
    while time.monotonic() < end and (enough is None or count < enough):
        count += feed.next(timeout=0.1) is not None
    return count
