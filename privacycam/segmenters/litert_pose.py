"""MediaPipe Pose's person mask on crops around a person (segmenter.model: pose).

pose_landmark_full.tflite (from the same mediapipe 0.10.21 wheel) predicts 33
body landmarks and, as a by-product, a 256x256 mask of the person in the crop it
is given. It was trained on crops around one person, which is what the region
of interest (`privacycam.mask`) hands it: `segment_crop` serves those crops.
Whole-frame passes (finding people who enter, a webcam user close to the
camera) stay with the selfie model, which sees everyone in the frame.

On the four DAVIS clips in shared/data (bench/quality.py) this raises mean J
from 0.778 to 0.814, boundary F from 0.777 to 0.811 and lowers flicker from
0.0145 to 0.0118, for ~12 ms more CPU per frame (the landmark network is ~6x
the selfie model). It is a choice for machines with CPU to spare, not the default.
One person per image: a crop around several separate people goes to the selfie
model (`crops_hold_one_person`), but two people who touch form one blob and may
get only one of them sharp. A crop in which the network finds no pose goes to
the selfie model instead.
"""

from __future__ import annotations

import numpy as np

from privacycam.errors import ModelError
from privacycam.models import INSTALL_COMMAND, TWO_MODEL_MODES, model_path
from privacycam.segmenters.litert_selfie import LiteRtSelfieSegmenter, image_input, mask_output, open_interpreter
from privacycam.segmenters.native_stderr import quiet_native_stderr

LOGIT_LIMIT = 60.0
# The network's own "a pose is present" probability; MediaPipe Pose drops the
# pose (and its mask) below 0.5. Empty crops score < 1e-3, crops with a person > 0.9.
PRESENCE_THRESHOLD = 0.5
# The pose model file is not replaceable (no model_path with model pose): only a reinstall fixes it.
GENUINE_FILES_FIX = f"run `{INSTALL_COMMAND}` to restore the genuine model files"


def presence_output(interpreter, file) -> int:
    """Index of the pose landmark model's 1x1 presence score, else a ModelError."""
    for output in interpreter.get_output_details():
        if tuple(output["shape"]) == (1, 1):
            return output["index"]
    raise ModelError(
        f"{file} is not MediaPipe's pose landmark model (no presence score)",
        GENUINE_FILES_FIX,
    )


class PoseCropSegmenter(LiteRtSelfieSegmenter):
    """Selfie model for whole frames (`segment`), the pose model's mask for crops (`segment_crop`)."""

    # The pose network outlines one person per image: a crop around several
    # people goes to the selfie model instead (see mask.Matter._segment_box).
    crops_hold_one_person = True

    def __init__(self, threads: int = 1) -> None:
        whole_frames_model, crops_model = TWO_MODEL_MODES["pose"]
        super().__init__(whole_frames_model, threads=threads)
        self.name = "mediapipe-pose"
        file = model_path(crops_model)
        self._pose = open_interpreter(file, threads)
        self._pose_input, height, width = image_input(self._pose, file)
        if (width, height) != self.input_size:
            raise ModelError(
                f"{file} takes {width}x{height} images, the selfie model {self.input_size[0]}x{self.input_size[1]}",
                GENUINE_FILES_FIX,
            )
        self._pose_mask = mask_output(self._pose, file, height, width)
        self._pose_presence = presence_output(self._pose, file)
        with quiet_native_stderr():
            self.segment_crop(np.zeros((height, width, 3), np.uint8), 0)

    def segment_crop(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        """Person confidence for a crop around one person; same contract as `segment`."""
        self._invoke(self._pose, self._pose_input, rgb)
        if self._pose.get_tensor(self._pose_presence).item() < PRESENCE_THRESHOLD:
            # Without a person the pose network still paints a person-shaped blob
            # (10-25 % of an empty crop): that would be background shown sharp.
            # The selfie model answers for such crops.
            return self.segment(rgb, timestamp_ms)
        # The mask comes as logits: sigmoid, in place in our own buffer (the
        # clamp keeps exp finite; beyond it the sigmoid is 0 or 1 in float32).
        mask = self._mask
        np.negative(self._pose.tensor(self._pose_mask)()[0, :, :, 0], out=mask)
        np.clip(mask, -LOGIT_LIMIT, LOGIT_LIMIT, out=mask)
        np.exp(mask, out=mask)
        mask += 1.0
        np.reciprocal(mask, out=mask)
        return mask

    def close(self) -> None:
        super().close()
        self._pose = None
