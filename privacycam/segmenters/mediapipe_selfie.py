"""MediaPipe selfie segmentation (general 256x256 or landscape 144x256) via the Tasks API."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from privacycam.errors import ModelError
from privacycam.models import MODEL_FILE_FIX, MODELS, model_path
from privacycam.segmenters.native_stderr import quiet_native_stderr

log = logging.getLogger(__name__)


class MediaPipeSelfieSegmenter:
    def __init__(self, model: str = "general", path: Path | None = None, threads: int = 1) -> None:
        # Keep TensorFlow Lite's C++ INFO chatter out of the user's terminal and journal.
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as exc:
            raise ModelError(
                f"MediaPipe cannot be imported ({exc})",
                "pip install mediapipe (a dependency of privacycam), or set segmenter.runtime: litert",
            ) from None

        self._mp = mp
        spec = MODELS[model]
        self.input_size = spec.input_size
        self.name = f"mediapipe-{model}" if path is None else f"mediapipe:{path.name}"
        file = path or model_path(model)
        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(file)),
            running_mode=vision.RunningMode.VIDEO,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        try:
            with quiet_native_stderr():
                self._segmenter = vision.ImageSegmenter.create_from_options(options)
                self._last_timestamp = -1
                # Warm-up: XNNPACK sets itself up on the first call; do it here, off the frame path.
                self.segment(np.zeros((spec.input_size[1], spec.input_size[0], 3), np.uint8), 0)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(
                f"MediaPipe cannot load {file}: {str(exc).splitlines()[0]}",
                MODEL_FILE_FIX,
            ) from None

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        # The VIDEO running mode rejects timestamps that do not strictly increase
        # (e.g. a looping file, or two frames in the same millisecond).
        timestamp_ms = max(int(timestamp_ms), self._last_timestamp + 1)
        self._last_timestamp = timestamp_ms
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        result = self._segmenter.segment_for_video(image, timestamp_ms)
        mask = result.confidence_masks[-1].numpy_view()
        return mask[..., 0] if mask.ndim == 3 else mask

    def close(self) -> None:
        segmenter, self._segmenter = getattr(self, "_segmenter", None), None
        if segmenter is not None:
            segmenter.close()
