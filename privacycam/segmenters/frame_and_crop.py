"""Two selfie models, each where it fits (segmenter.model: auto, the default).

MediaPipe's landscape model sees 256x144, the shape of a 16:9 webcam frame; the
general model sees 256x256, the shape of the square crops that the region of
interest (`privacycam.mask`) cuts around small, far people. So whole frames (a
webcam user close to the camera, and the periodic passes that look for people
entering) go to the landscape model, and crops go to the general model.

Measured (README, "How the mask is made"): on the four DAVIS clips this scores
the same as the general model alone, because their far people are segmented on
crops either way. With webcam framing (head and torso cut from the same clips)
it matches the general model alone (J .806 vs .796, F .684 vs .679) and shows
half the background (leak .008 vs .017); a person on the whole frame costs
~1.5 ms less CPU per frame than with the general model.
"""

from __future__ import annotations

import numpy as np

from privacycam.segmenters.base import Segmenter


class FrameAndCropSegmenter:
    """`segment` (whole frames, `input_size`) and `segment_crop` (crops, `crop_input_size`)."""

    def __init__(self, whole_frames: Segmenter, crops: Segmenter) -> None:
        self._whole_frames = whole_frames
        self._crops = crops
        self.name = f"{whole_frames.name}+{crops.name}"
        self.input_size = whole_frames.input_size
        self.crop_input_size = crops.input_size

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        return self._whole_frames.segment(rgb, timestamp_ms)

    def segment_crop(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        """Person confidence for a crop around people; `crop_input_size` in, same size out."""
        return self._crops.segment(rgb, timestamp_ms)

    def close(self) -> None:
        self._whole_frames.close()
        self._crops.close()
