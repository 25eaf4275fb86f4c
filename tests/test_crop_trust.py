"""A crop never leaks a block of background or cuts a limb, and new blobs earn trust (privacycam/crop_trust.py).

The fakes below answer from the frame's red channel (a red "person" on black);
they differ in what they say about crops, like a confused or a cut-off model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import metrics  # noqa: E402
from privacycam.config import MaskConfig  # noqa: E402
from privacycam.crop_trust import NEW_BLOB_FRAMES  # noqa: E402
from privacycam.mask import Matter, upsample_alpha  # noqa: E402

WIDTH, HEIGHT = 854, 480


class RedSegmenter:
    """Whole frames and crops: person confidence = red level (a model that is right)."""

    name = "fake-red"
    input_size = (256, 256)

    def __init__(self) -> None:
        self._out = np.zeros((256, 256), np.float32)
        self.crop_calls = 0

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        np.multiply(rgb[..., 0], 1 / 255, out=self._out, casting="unsafe")
        return self._out

    def segment_crop(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.crop_calls += 1
        return self.segment(rgb, timestamp_ms)

    def close(self) -> None:
        pass


class WholeCropIsPerson(RedSegmenter):
    """Right on whole frames, but calls every crop entirely person: the crop-shaped block of the issue."""

    def segment_crop(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.crop_calls += 1
        self._out.fill(1.0)
        return self._out


class CropSeesAGhost(RedSegmenter):
    """Right on whole frames; on crops also a bright square in the crop's top-left corner, far from the person."""

    def segment_crop(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        out = self.segment(rgb, timestamp_ms)
        out[8:40, 8:40] = 1.0
        return out


def _draw(frame: np.ndarray, box: tuple[float, float, float, float]) -> None:
    x0, y0, x1, y1 = box
    frame[round(y0 * HEIGHT) : round(y1 * HEIGHT), round(x0 * WIDTH) : round(x1 * WIDTH), 2] = 255


BODY = (0.45, 0.2, 0.52, 0.9)  # a DAVIS-like walker: 7 % of the frame, segmented through a crop
ARM = (0.52, 0.35, 0.85, 0.40)  # an arm stretched far out to the right


def _person(arm: bool = False) -> np.ndarray:
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    _draw(frame, BODY)
    if arm:
        _draw(frame, ARM)
    return frame


def _truth(frame: np.ndarray) -> metrics.Truth:
    return metrics.Truth.from_mask(frame[..., 2])


def test_a_crop_marked_person_everywhere_shows_no_sharp_block():
    segmenter = WholeCropIsPerson()
    matter = Matter(segmenter, MaskConfig())
    frame = _person()
    truth = _truth(frame)
    for index in range(20):  # past a periodic whole-frame look (every 15 frames)
        alpha = upsample_alpha(matter.alpha_for(frame, index * 33), WIDTH, HEIGHT)
        pred = alpha >= metrics.ALPHA_HALF_U8
        assert metrics.largest_leak_blob(pred, truth) < metrics.SHARP_BLOCK_MIN_AREA, index
        assert metrics.crop_box_edges(pred, matter.last_crops) == 0, index
        assert pred[truth.interior].mean() > 0.95  # the person stays sharp
    assert segmenter.crop_calls >= 15  # the crop model was asked all along, and overruled


def test_a_limb_leaving_the_crop_box_is_kept_in_the_same_frame():
    matter = Matter(RedSegmenter(), MaskConfig())
    for index in range(5):
        matter.alpha_for(_person(), index * 33)
    crop_before = matter.last_crops[-1]
    assert crop_before[2] < ARM[2] * WIDTH - 100  # the arm will reach far beyond the crop
    frame = _person(arm=True)
    alpha = upsample_alpha(matter.alpha_for(frame, 5 * 33), WIDTH, HEIGHT)
    arm_core = alpha[round(0.365 * HEIGHT) : round(0.385 * HEIGHT), round(0.53 * WIDTH) : round(0.83 * WIDTH)]
    assert arm_core.min() >= 128, "the arm is cut"
    pred = alpha >= metrics.ALPHA_HALF_U8
    assert metrics.crop_box_edges(pred, matter.last_crops) == 0
    assert metrics.largest_leak_blob(pred, _truth(frame)) < metrics.SHARP_BLOCK_MIN_AREA


def test_no_straight_crop_edge_where_the_person_meets_the_crop_side():
    """Someone taller than the crop cuts (standing up): the matte must not end in the crop's line."""
    matter = Matter(RedSegmenter(), MaskConfig())
    for index in range(5):
        matter.alpha_for(_person(), index * 33)
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    _draw(frame, (0.45, 0.02, 0.52, 0.9))  # the head rises far above the crop's top
    alpha = upsample_alpha(matter.alpha_for(frame, 5 * 33), WIDTH, HEIGHT)
    pred = alpha >= metrics.ALPHA_HALF_U8
    assert metrics.crop_box_edges(pred, matter.last_crops) == 0
    assert pred[truth_interior(frame)].mean() > 0.95


def truth_interior(frame: np.ndarray) -> np.ndarray:
    return _truth(frame).interior


def _ghost_alpha(frames: int) -> list[float]:
    matter = Matter(CropSeesAGhost(), MaskConfig(roi_full_frame_every=100))
    means = []
    for index in range(frames):
        alpha = matter.alpha_for(_person(), index * 33)
        crop = matter.last_crops[-1] if matter.last_crops else None
        if crop is None:
            means.append(0.0)
            continue
        # the ghost: the crop's top-left corner (crop pixels 8..40 of 256), in matte pixels
        height = alpha.shape[0]
        scale = height / HEIGHT
        x0, y0, x1, y1 = (round(v * scale) for v in crop)
        side = x1 - x0
        ghost = alpha[y0 + side * 12 // 256 : y0 + side * 36 // 256, x0 + side * 12 // 256 : x0 + side * 36 // 256]
        means.append(float(ghost.mean()))
    return means


def test_a_new_blob_far_from_everyone_waits_until_it_persists():
    means = _ghost_alpha(NEW_BLOB_FRAMES)
    # frame 0 is a whole-frame look, whose view does not see the ghost; then it must persist
    assert max(means) < 0.05, means


FLASH = (0.3, 0.22, 0.36, 0.32)  # inside the walker's crop, far from them


def _flash_mean(alpha: np.ndarray) -> float:
    height, width = alpha.shape
    x0, y0, x1, y1 = FLASH
    inner = alpha[
        round((y0 + 0.02) * height) : round((y1 - 0.02) * height),
        round((x0 + 0.01) * width) : round((x1 - 0.01) * width),
    ]
    return float(inner.mean())


def test_a_blob_that_stays_is_shown_after_new_blob_frames():
    matter = Matter(RedSegmenter(), MaskConfig(roi_full_frame_every=100))
    for index in range(3):
        matter.alpha_for(_person(), index * 33)
    newcomer = _person()
    _draw(newcomer, FLASH)  # something the crop model calls person, away from the walker
    shown = [_flash_mean(matter.alpha_for(newcomer, (3 + index) * 33)) for index in range(NEW_BLOB_FRAMES + 2)]
    assert max(shown[: NEW_BLOB_FRAMES - 1]) < 0.1 and shown[-1] > 0.9, shown


@pytest.mark.parametrize("frames_on", [1, NEW_BLOB_FRAMES - 1])
def test_a_flash_of_background_called_person_never_shows(frames_on):
    """A blob in a crop for fewer than NEW_BLOB_FRAMES frames (a pillow marked for a frame) never shows."""
    matter = Matter(RedSegmenter(), MaskConfig(roi_full_frame_every=100))
    for index in range(3):
        matter.alpha_for(_person(), index * 33)
    flash = _person()
    _draw(flash, FLASH)
    for index in range(frames_on):
        assert _flash_mean(matter.alpha_for(flash, (3 + index) * 33)) < 0.05
    assert _flash_mean(matter.alpha_for(_person(), 10 * 33)) < 0.05


def test_a_matte_of_the_whole_frame_is_its_own_view():
    """Without crops every blob comes from the whole-frame model: a newcomer shows at once."""
    matter = Matter(RedSegmenter(), MaskConfig(region_of_interest=False))
    for index in range(3):
        matter.alpha_for(_person(), index * 33)
    newcomer = _person()
    _draw(newcomer, (0.05, 0.3, 0.12, 0.9))
    alpha = matter.alpha_for(newcomer, 3 * 33)
    assert alpha[round(0.5 * alpha.shape[0]), round(0.085 * alpha.shape[1])] > 0.9


def test_an_arm_rising_from_the_person_appears_at_once():
    matter = Matter(RedSegmenter(), MaskConfig(roi_full_frame_every=100))
    for index in range(3):
        matter.alpha_for(_person(), index * 33)
    frame = _person()
    _draw(frame, (0.50, 0.05, 0.52, 0.2))  # an arm raised above the head, joined to the body
    alpha = matter.alpha_for(frame, 3 * 33)
    height, width = alpha.shape
    assert alpha[round(0.08 * height) : round(0.18 * height), round(0.505 * width) : round(0.515 * width)].min() > 0.5


# -- the built-in synthetic scene, with the real model -------------------------------------


def test_the_synthetic_scene_shows_no_block_and_no_crop_edge():
    """What a new user without ../shared sees first: its figure's exact mask is the ground truth."""
    from privacycam.config import SegmenterConfig
    from privacycam.segmenters import create_segmenter
    from privacycam.sources.synthetic import SyntheticSource, person_mask

    width, height = 640, 360
    source = SyntheticSource(width, height)
    matter = Matter(create_segmenter(SegmenterConfig()), MaskConfig())
    score = metrics.SequenceScore()
    try:
        for index in range(60):
            frame = source.read()
            alpha = upsample_alpha(matter.alpha_for(frame.image, index * 33), width, height)
            score.add(alpha, metrics.Truth.from_mask(person_mask(width, height, index)), matter.last_crops)
    finally:
        matter.close()
    summary = score.summary()
    assert summary["straight_edge_frames"] == 0 and summary["sharp_block_frames"] == 0, summary
    assert summary["J"] > 0.8, summary  # and the figure itself is found
