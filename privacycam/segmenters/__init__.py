"""Segmenters behind one interface, chosen by name from the config."""

from __future__ import annotations

from privacycam.config import TORCH_BACKENDS, SegmenterConfig
from privacycam.errors import ModelError
from privacycam.segmenters.base import Segmenter, SegmenterOutputError, checked_mask

__all__ = ["Segmenter", "SegmenterOutputError", "checked_mask", "create_segmenter"]


def create_segmenter(config: SegmenterConfig) -> Segmenter:
    """Build the configured segmenter; slow (loads a model), so call it off the frame path."""
    if config.backend == "mediapipe" and config.model == "pose":
        from privacycam.segmenters.litert_pose import PoseCropSegmenter

        return PoseCropSegmenter(config.threads)
    if config.backend == "mediapipe" and config.runtime == "litert":
        from privacycam.segmenters.litert_selfie import LiteRtSelfieSegmenter

        return LiteRtSelfieSegmenter(config.model, config.model_path, config.threads)
    if config.backend == "mediapipe":
        from privacycam.segmenters.mediapipe_selfie import MediaPipeSelfieSegmenter

        return MediaPipeSelfieSegmenter(config.model, config.model_path, config.threads)
    if config.backend in TORCH_BACKENDS:
        from privacycam.segmenters.torchvision_models import create_torchvision_segmenter

        return create_torchvision_segmenter(config)
    raise ModelError(f"unknown segmenter backend {config.backend!r}", "see config/privacycam.yaml")
