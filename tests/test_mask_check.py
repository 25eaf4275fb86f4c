"""Masks that cannot be right fail their frame closed: out-of-range values, a matte of the whole
frame, a swapped person and background on a still image, noise. None shows the background sharp."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import numpy as np
import pytest
from conftest import read_gray, sequence, wait_until
from fault_kit import (
    PERSON_BOX,
    SMALL,
    ClipSource,
    FlakyCamera,
    RecordingSink,
    far_from_box,
    is_blurred,
    lucia,
    make_pipeline,
    running,
    small_config,
)

from privacycam.compositing import Compositor
from privacycam.config import SegmenterConfig
from privacycam.errors import ModelError
from privacycam.mask_check import implausible
from privacycam.models import MODELS, model_path
from privacycam.pipeline import Pipeline
from privacycam.segmenters import SegmenterOutputError, checked_mask, create_segmenter
from privacycam.sources import LatestFrameFeed, SequentialFeed

FAR = far_from_box(*SMALL)
INPUT_SIZE = (128, 72)


def _person(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.float32)
    x0, y0, x1, y1 = PERSON_BOX
    mask[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)] = 1.0
    return mask


class AnsweringSegmenter:
    """A fake model whose answer to call i is answer(i, person mask)."""

    name = "answering"
    input_size = INPUT_SIZE

    def __init__(self, answer: Callable[[int, np.ndarray], np.ndarray]) -> None:
        self.answer = answer
        self.calls = 0
        self.person = _person(INPUT_SIZE[1], INPUT_SIZE[0])

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.calls += 1
        return self.answer(self.calls - 1, self.person).astype(np.float32)

    def close(self) -> None:
        pass


def _run(answer, frames) -> tuple[Pipeline, RecordingSink, list[bool]]:
    """An offline run over frames; per published frame, is it exactly the fail-closed (fully hidden) one."""
    sink = RecordingSink()
    feed = SequentialFeed(ClipSource(tuple(frames), loop=False))
    pipeline = make_pipeline(feed, sink, AnsweringSegmenter(answer), live=False)
    pipeline.run()
    assert len(sink.sent) == len(frames)
    compositor = Compositor(pipeline.config.background)
    hidden = [np.array_equal(e.image, compositor.compose_hidden(e.frame.image)) for e in sink.sent]
    for entry in sink.sent:
        assert is_blurred(entry.image, entry.frame.image, FAR), f"frame {entry.frame.index} shows the background sharp"
    return pipeline, sink, hidden


def _still(count: int) -> list[tuple[str, np.ndarray]]:
    stem, image = lucia(SMALL)[0]
    return [(f"{stem}-{i}", image) for i in range(count)]


RNG = np.random.default_rng(18)
BROKEN = {
    "values above 1": lambda i, person: person * 3.0,
    "negative values": lambda i, person: person - 0.5,
    "all ones": lambda i, person: np.ones_like(person),
    "noise": lambda i, person: RNG.random(person.shape),
    "binary noise": lambda i, person: (RNG.random(person.shape) > 0.5).astype(np.float32),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_mask_from_the_first_frame_hides_every_frame(kind):
    pipeline, _sink, hidden = _run(BROKEN[kind], lucia(SMALL)[:6])
    assert hidden == [True] * 6
    assert pipeline.status.last_error


def test_a_swapped_mask_on_a_still_image_is_hidden_until_the_model_is_right_again(caplog):
    frames = _still(12)
    _pipeline, _sink, hidden = _run(lambda i, person: 1.0 - person if 4 <= i < 9 else person, frames)
    assert hidden[:4] == [False] * 4
    assert hidden[4:9] == [True] * 5, "a matte swapping person and background on a still image went out"
    assert not any(hidden[10:]), "no recovery once the model answers right again"
    assert [r.getMessage() for r in caplog.records if "flipped" in r.getMessage()], "not logged with its reason"


@pytest.mark.parametrize("kind", ["all ones", "noise"])
def test_a_broken_mask_between_good_ones_hides_only_those_frames(kind):
    pipeline, _sink, hidden = _run(lambda i, person: BROKEN[kind](i, person) if 3 <= i < 6 else person, _still(10))
    assert hidden[3:6] == [True] * 3
    assert not any(hidden[:3]) and not any(hidden[7:])
    assert pipeline.status.fail_closed_frames <= 4


def test_segmenter_values_outside_zero_to_one_are_refused_not_clipped():
    person = _person(72, 128)
    with pytest.raises(SegmenterOutputError, match=r"outside \[0, 1\]"):
        checked_mask(person * 1.5, 72, 128)
    with pytest.raises(SegmenterOutputError, match="NaN"):
        checked_mask(np.where(person > 0, np.float32(np.nan), person), 72, 128)
    assert checked_mask(person, 72, 128) is person


def _truth(name: str) -> np.ndarray:
    path = sorted((sequence(name) / "masks").iterdir())[0]
    return (read_gray(path) > 127).astype(np.float32)


def test_real_person_mattes_are_plausible_and_their_inverse_is_not():
    truth = _truth("davis2016_lucia")  # a small, far person: her inverse marks nearly the whole frame
    assert implausible(truth, truth, frame_is_still=True) is None
    assert "person" in implausible(1.0 - truth, truth, frame_is_still=False)
    close = np.zeros_like(truth)
    close[100:, 250:600] = 1.0  # a webcam user: 33 % of the frame; swapped, 67 %
    assert implausible(close, close, frame_is_still=True) is None
    assert "flipped" in implausible(1.0 - close, close, frame_is_still=True)
    assert implausible(1.0 - close, close, frame_is_still=False) is None, "a moving image may change the matte"


def test_the_real_model_on_real_frames_is_never_refused():
    sink = RecordingSink(keep_images=False)
    feed = SequentialFeed(ClipSource(lucia(SMALL)[:20], loop=False))
    config = SegmenterConfig()
    pipeline = make_pipeline(feed, sink, live=False, factory=lambda _: create_segmenter(config))
    pipeline.run()
    assert len(sink.sent) == 20
    assert pipeline.status.fail_closed_frames == 0, pipeline.status.last_error


def test_a_damaged_built_in_model_publishes_only_hidden_frames_then_stops(tmp_path, monkeypatch):
    """The issue's case: a model file with flipped bytes used to load and show the background sharp."""
    folder = tmp_path / "models"
    folder.mkdir()
    for model in MODELS.values():
        shutil.copy(model_path(model.name), folder / model.filename)
    damaged = folder / MODELS["general"].filename
    data = bytearray(damaged.read_bytes())
    for offset in range(5):
        data[len(data) // 2 + offset * 997] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setenv("PRIVACYCAM_MODEL_DIR", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sink = RecordingSink()
    config = small_config(segmenter={"model": "general"})

    def load_once_frames_flow(segmenter_config):
        wait_until(lambda: len(sink.sent) >= 5, 15, "frames while the model loads")
        return create_segmenter(segmenter_config)

    pipeline = make_pipeline(
        LatestFrameFeed(FlakyCamera(lucia(SMALL)).open, pace_fps=30), sink, config=config, factory=load_once_frames_flow
    )
    with pytest.raises(ModelError, match="damaged"), running(pipeline) as thread:
        wait_until(lambda: not thread.is_alive(), 20, "the run to end on the damaged model")
    compositor = Compositor(config.background)
    published = [e for e in sink.sent if e.frame is not None]
    assert len(published) >= 5
    assert all(np.array_equal(e.image, compositor.compose_hidden(e.frame.image)) for e in published)
