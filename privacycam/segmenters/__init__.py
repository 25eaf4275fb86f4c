"""Segmenters behind one interface, chosen by name from the config."""

from __future__ import annotations

from privacycam.config import TORCH_BACKENDS, SegmenterConfig
from privacycam.errors import ModelError
from privacycam.models import TWO_MODEL_MODES
from privacycam.segmenters.base import Segmenter, SegmenterOutputError, checked_mask

__all__ = ["Segmenter", "SegmenterOutputError", "checked_mask", "create_segmenter"]


def create_segmenter(config: SegmenterConfig) -> Segmenter:
    """Build the configured segmenter; slow (loads a model), so call it off the frame path."""
    if config.backend == "mediapipe" and config.model == "pose":
        from privacycam.segmenters.litert_pose import PoseCropSegmenter

        return PoseCropSegmenter(config.threads)
    if config.backend == "mediapipe":
        if config.model == "auto" and config.model_path is None:
            from privacycam.segmenters.frame_and_crop import FrameAndCropSegmenter

            whole_frames_model, crops_model = TWO_MODEL_MODES["auto"]
            whole_frames = _selfie_segmenter(config, whole_frames_model)
            try:
                return FrameAndCropSegmenter(whole_frames, _selfie_segmenter(config, crops_model))
            except BaseException:
                whole_frames.close()
                raise
        return _selfie_segmenter(config, "general" if config.model == "auto" else config.model)
    if config.backend in TORCH_BACKENDS:
        from privacycam.segmenters.torchvision_models import create_torchvision_segmenter

        return create_torchvision_segmenter(config)
    raise ModelError(f"unknown segmenter backend {config.backend!r}", "see config/privacycam.yaml")


def _selfie_segmenter(config: SegmenterConfig, model: str) -> Segmenter:
    """One selfie-segmentation model (model_path, when set, replaces the built-in one)."""
    if config.runtime == "litert":
        from privacycam.segmenters.litert_selfie import LiteRtSelfieSegmenter

        return LiteRtSelfieSegmenter(model, config.model_path, config.threads)
    from privacycam.segmenters.mediapipe_selfie import MediaPipeSelfieSegmenter

    return MediaPipeSelfieSegmenter(model, config.model_path, config.threads)
