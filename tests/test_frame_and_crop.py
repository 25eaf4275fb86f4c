"""segmenter.model: auto (the default) - landscape model for whole frames, general model for crops."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import sequence
from fault_kit import CropRecorder

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import quality  # noqa: E402
from privacycam import segmenters  # noqa: E402
from privacycam.config import Config, MaskConfig, SegmenterConfig  # noqa: E402
from privacycam.doctor import models_in_use  # noqa: E402
from privacycam.errors import ModelError  # noqa: E402
from privacycam.mask import Matter  # noqa: E402
from privacycam.models import model_path  # noqa: E402
from privacycam.segmenters import create_segmenter  # noqa: E402
from privacycam.segmenters.frame_and_crop import FrameAndCropSegmenter  # noqa: E402
from privacycam.segmenters.litert_selfie import LiteRtSelfieSegmenter  # noqa: E402
from privacycam.segmenters.mediapipe_selfie import MediaPipeSelfieSegmenter  # noqa: E402

RUNTIMES = [("litert", LiteRtSelfieSegmenter), ("mediapipe", MediaPipeSelfieSegmenter)]


@pytest.mark.parametrize(("runtime", "kind"), RUNTIMES)
def test_default_segmenter_is_landscape_for_whole_frames_and_general_for_crops(runtime, kind):
    assert SegmenterConfig().model == "auto"
    segmenter = create_segmenter(SegmenterConfig(runtime=runtime))
    landscape = kind("landscape")
    general = kind("general")
    try:
        assert isinstance(segmenter, FrameAndCropSegmenter)
        assert segmenter.input_size == (256, 144) and segmenter.crop_input_size == (256, 256)
        rng = np.random.default_rng(1)
        wide = rng.integers(0, 255, (144, 256, 3), np.uint8)
        square = rng.integers(0, 255, (256, 256, 3), np.uint8)
        np.testing.assert_array_equal(segmenter.segment(wide, 0), landscape.segment(wide, 0))
        np.testing.assert_array_equal(segmenter.segment_crop(square, 0), general.segment(square, 0))
    finally:
        for model in (segmenter, landscape, general):
            model.close()


def test_model_path_replaces_both_models():
    segmenter = create_segmenter(SegmenterConfig(model_path=model_path("general")))
    try:
        assert isinstance(segmenter, LiteRtSelfieSegmenter) and segmenter.input_size == (256, 256)
    finally:
        segmenter.close()


def test_a_crop_model_that_fails_to_load_closes_the_other(monkeypatch):
    closed = []

    class Loaded:
        name, input_size = "landscape", (256, 144)

        def close(self) -> None:
            closed.append(self.name)

    def fake(config, model):
        if model == "general":
            raise ModelError("general cannot load", "reinstall")
        return Loaded()

    monkeypatch.setattr(segmenters, "_selfie_segmenter", fake)
    with pytest.raises(ModelError, match="general cannot load"):
        create_segmenter(SegmenterConfig())
    assert closed == ["landscape"]


def test_matte_gives_each_model_images_of_its_own_size():
    fake = CropRecorder(input_size=(64, 36), crop_input_size=(48, 48))
    matter = Matter(fake, MaskConfig(roi_full_frame_every=4))
    frame = np.zeros((480, 854, 3), np.uint8)
    for index in range(8):
        alpha = matter.alpha_for(frame, index * 33)
    assert {shape for kind, shape in fake.calls if kind == "whole"} == {(36, 64, 3)}
    assert {shape for kind, shape in fake.calls if kind == "crop"} == {(48, 48, 3)}
    assert fake.kinds[:2] == ["whole", "crop"]
    assert fake.kinds.count("whole") >= 2  # the periodic look for newcomers
    # the square crop's person lands where the whole frame saw them: centre columns, lower 3/4
    height, width = alpha.shape
    assert alpha[height // 2, width // 2] > 0.9
    assert alpha[height // 2, width // 10] < 0.1 and alpha[height // 2, width * 9 // 10] < 0.1


def test_doctor_wants_both_files_for_the_default_model():
    assert models_in_use(None) == {"general", "landscape"}
    assert models_in_use(Config()) == {"general", "landscape"}
    assert models_in_use(Config.model_validate({"segmenter": {"model": "general"}})) == {"general"}


def test_webcam_framing_fills_the_view_with_head_and_torso():
    name = "lucia"
    sequence(f"davis2016_{name}")
    images, truths = quality.load_sequence(quality.find_sequences(quality.DEFAULT_DATA, [name])[0], 10, None, "webcam")
    assert images[0].shape == (720, 1280, 3)
    for truth in truths:
        rows = np.flatnonzero(truth.fg.any(axis=1))
        assert truth.fg.mean() > 0.1  # DAVIS framing: 3-6 % of the frame
        assert rows[0] < 0.2 * 720 and rows[-1] == 719  # head near the top, body cut by the bottom edge


def _webcam_framing_means(*configs: Config) -> list[dict[str, float]]:
    for name in ("lucia", "tennis", "rollerblade", "kite-walk"):
        sequence(f"davis2016_{name}")
    kwargs = {"max_frames": 40, "timing_runs": 1, "unlabeled": False, "framing": "webcam"}
    return [quality.run(config, **kwargs)["mean"]["pipeline"] for config in configs]


def test_webcam_user_gets_sharper_masks_than_with_general_alone_or_no_crop():
    """Webcam framing, mean of the four clips' first 40 frames (J / F / leak):
    default .818 / .699 / .0074; general model alone .807 / .693 / .0165;
    whole frame from a quarter of the frame up (the old threshold) .797 / .649 / .0100."""
    general = Config.model_validate({"segmenter": {"model": "general"}})
    no_crop = Config.model_validate({"mask": {"roi_whole_frame_above": 0.25}})
    ours, theirs, uncropped = _webcam_framing_means(Config(), general, no_crop)
    # the landscape model on whole frames: no worse, and less background shown
    assert ours["J"] >= theirs["J"] - 0.01, (ours, theirs)
    assert ours["F"] >= theirs["F"] - 0.03, (ours, theirs)
    assert ours["leak"] <= theirs["leak"] - 0.004, (ours, theirs)
    # a person under half the frame gets a square crop: more of the model's lines, sharper edges
    assert ours["J"] >= uncropped["J"] + 0.01, (ours, uncropped)
    assert ours["F"] >= uncropped["F"] + 0.02, (ours, uncropped)
