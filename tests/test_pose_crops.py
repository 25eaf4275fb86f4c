"""segmenter.model: pose - MediaPipe Pose's person mask on the region-of-interest crops.

The quality guard runs the real models on short DAVIS clips from ../shared/data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import sequence
from fault_kit import CropRecorder

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import quality  # noqa: E402
from privacycam.config import Config, MaskConfig, SegmenterConfig, parse_config_text  # noqa: E402
from privacycam.errors import ConfigError  # noqa: E402
from privacycam.mask import Matter  # noqa: E402
from privacycam.segmenters import create_segmenter  # noqa: E402
from privacycam.segmenters.litert_pose import PoseCropSegmenter  # noqa: E402

# First 30 frames, default mask settings: default J / flicker -> pose J / flicker
# tennis .855/.0137 -> .911/.0098; rollerblade .785/.0185 -> .862/.0119.
# The margins are about half the gains.
POSE_GAINS = [("tennis", 30, 0.025, 0.0015), ("rollerblade", 30, 0.05, 0.004)]


@pytest.mark.parametrize(("name", "frames", "j_gain", "flicker_drop"), POSE_GAINS)
def test_pose_crops_beat_the_selfie_model(name, frames, j_gain, flicker_drop):
    sequence(f"davis2016_{name}")
    pose_config = Config.model_validate({"segmenter": {"model": "pose"}})
    default = quality.run(Config(), names=[name], max_frames=frames, timing_runs=1, unlabeled=False)
    pose = quality.run(pose_config, names=[name], max_frames=frames, timing_runs=1, unlabeled=False)
    ours, theirs = pose["sequences"][name]["pipeline"], default["sequences"][name]["pipeline"]
    assert ours["J"] >= theirs["J"] + j_gain, (ours["J"], theirs["J"])
    assert ours["flicker"] <= theirs["flicker"] - flicker_drop, (ours["flicker"], theirs["flicker"])
    assert ours["leak"] <= theirs["leak"] + 0.001, (ours["leak"], theirs["leak"])


def test_crop_mask_is_a_confidence_of_the_person():
    segmenter = create_segmenter(SegmenterConfig(model="pose"))
    assert isinstance(segmenter, PoseCropSegmenter)
    frame = cv2.imread(str(sorted((sequence("davis2016_lucia") / "frames").iterdir())[0]))
    truth = cv2.imread(str(sorted((sequence("davis2016_lucia") / "masks").iterdir())[0]), cv2.IMREAD_GRAYSCALE)
    x, y, w, h = cv2.boundingRect(truth)
    side = int(max(w, h) * 1.2)
    cx, cy = x + w // 2, y + h // 2
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    crop = frame[y0 : y0 + side, x0 : x0 + side]
    rgb = cv2.cvtColor(cv2.resize(crop, segmenter.input_size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    mask = segmenter.segment_crop(rgb, 0)
    assert mask.dtype == np.float32 and mask.shape == (256, 256)
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    person = cv2.resize(truth[y0 : y0 + side, x0 : x0 + side], (256, 256), interpolation=cv2.INTER_NEAREST) > 127
    found = mask >= 0.5
    assert (found & person).sum() / (found | person).sum() > 0.75  # IoU with the truth on this crop
    segmenter.close()


def test_a_crop_without_a_person_gets_the_selfie_models_answer():
    """The pose network paints a person-shaped blob into empty crops; those must not come through."""
    segmenter = create_segmenter(SegmenterConfig(model="pose"))
    frame = cv2.imread(str(sorted((sequence("davis2016_lucia") / "frames").iterdir())[0]))
    for crop in (frame[0:200, 0:200], frame[250:480, 600:854], np.full((256, 256, 3), 128, np.uint8)):
        rgb = cv2.cvtColor(cv2.resize(crop, segmenter.input_size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        mask = segmenter.segment_crop(rgb, 0).copy()
        assert (mask >= 0.5).mean() < 0.01
        np.testing.assert_array_equal(mask, segmenter.segment(rgb, 0))
    segmenter.close()


def test_matte_sends_crops_to_the_crop_model_and_whole_frames_to_the_other():
    recorder = CropRecorder()  # one input size for both, as with pose
    matter = Matter(recorder, MaskConfig(roi_full_frame_every=5))
    frame = np.zeros((480, 854, 3), np.uint8)
    for index in range(10):
        matter.alpha_for(frame, index * 33)
    # frame 0: the whole frame finds the person, then the crop around them; later
    # frames: the crop, plus a whole-frame look for newcomers every 5th frame.
    assert recorder.kinds[:2] == ["whole", "crop"]
    assert recorder.kinds.count("crop") == 10
    assert 1 < recorder.kinds.count("whole") < 5


class TwoPeoplePoseLike(CropRecorder):
    """Two red people side by side; like the pose network, the crop model outlines only the left one.

    Both answer from the image (red = person), so a person stays where they are
    whichever crop they are seen in.
    """

    crops_hold_one_person = True

    @staticmethod
    def frame() -> np.ndarray:
        frame = np.zeros((480, 854, 3), np.uint8)
        for left in (0.25, 0.55):
            frame[120:, int(854 * left) : int(854 * (left + 0.06)), 2] = 255
        return frame

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.calls.append(("whole", rgb.shape))
        return (rgb[..., 0] > 127).astype(np.float32)

    def segment_crop(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.calls.append(("crop", rgb.shape))
        mask = (rgb[..., 0] > 127).astype(np.float32)
        count, labels = cv2.connectedComponents(mask.astype(np.uint8))
        if count > 2:
            leftmost = labels[:, np.flatnonzero(mask.any(axis=0))[0]].max()
            mask[labels != leftmost] = 0.0
        return mask


class TwoPeopleCropsSeeAll(TwoPeoplePoseLike):
    crops_hold_one_person = False  # a crop model that would answer for everyone (here: still only one)


@pytest.mark.parametrize(("segmenter", "people_kept"), [(TwoPeoplePoseLike, 2), (TwoPeopleCropsSeeAll, 1)])
def test_a_crop_around_several_people_skips_the_one_person_model(segmenter, people_kept):
    recorder = segmenter()
    matter = Matter(recorder, MaskConfig(roi_full_frame_every=5))
    frame = recorder.frame()
    for index in range(10):
        alpha = matter.alpha_for(frame, index * 33)
    count, _ = cv2.connectedComponents((alpha >= 0.5).astype(np.uint8))
    assert count - 1 == people_kept
    assert ("crop" in recorder.kinds) == (people_kept == 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("segmenter: {model: pose, runtime: mediapipe}", "runtime litert"),
        ("segmenter: {model: pose, model_path: /etc/hostname}", "leave it unset"),
    ],
)
def test_pose_settings_that_cannot_work_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config_text(text)


class RedPoseLike(CropRecorder):
    """A pose-like crop model (one whole body per crop); both models answer red = person."""

    crops_hold_one_person = True

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.calls.append(("whole", rgb.shape))
        return (rgb[..., 0] > 127).astype(np.float32)

    def segment_crop(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self.calls.append(("crop", rgb.shape))
        return (rgb[..., 0] > 127).astype(np.float32)


@pytest.mark.parametrize(("bottom", "crops_to_pose"), [(0.9, True), (1.0, False)])
def test_people_cut_by_the_bottom_edge_get_the_selfie_model_not_the_pose_network(bottom, crops_to_pose):
    """The pose network drops arms and hands on head-and-torso views (a webcam user, cut by the bottom edge)."""
    recorder = RedPoseLike(input_size=(64, 64))
    matter = Matter(recorder, MaskConfig(roi_full_frame_every=100))
    frame = np.zeros((480, 854, 3), np.uint8)
    frame[int(480 * 0.3) : int(480 * bottom), 380:480, 2] = 255  # 10-15 % of the frame: cropped
    for index in range(6):
        matter.alpha_for(frame, index * 33)
        assert matter.last_crops, "the person is segmented through a crop"
    assert ("crop" in recorder.kinds) == crops_to_pose
