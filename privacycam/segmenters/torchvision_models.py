"""torchvision segmenters: DeepLabV3 (semantic) and Mask R-CNN (person instances).

Input sizes, all 16:9 like a webcam, chosen so the model runs at a usable rate
on a laptop CPU while a person at webcam distance stays well resolved:
- deeplabv3_mobilenet_v3_large 512x288: multiples of its output stride 16; about
  60 ms/frame on 2 CPU cores.
- deeplabv3_resnet101 384x216: output stride 8 makes it ~10x the MobileNet's
  cost per pixel, so a smaller input keeps it near 0.5 s on CPU.
- maskrcnn_resnet50_fpn(_v2) 512x288: multiples of the FPN's 32. The model's own
  resize (to 800 px) is switched off, so the detector sees exactly this size.

Person confidence: DeepLab's softmax probability of VOC class 15; Mask R-CNN's
mask probability of COCO label 1 instances scoring >= SCORE_THRESHOLD (the
pixelwise maximum over them). With `people: user` Mask R-CNN keeps only the
user's instance itself (`selects_people` is True); DeepLab's mask is left to the
mask pipeline's `people.keep_main_person`, like any other backend's.

Weights: `segmenter.weights_path` (a state_dict file), else torchvision's
DEFAULT weights from the torch hub cache (`torch.hub.get_dir()/checkpoints`),
downloaded there the usual way if missing, unless PRIVACYCAM_OFFLINE=1.

Backends slower than one frame (measured at load time) come back wrapped in a
`BackgroundSegmenter`, so frames never wait for the model; on a CPU they then
get at most all cores but one (`background_threads`).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import numpy as np

from privacycam.config import SegmenterConfig
from privacycam.errors import ModelError
from privacycam.segmenters.background_worker import BackgroundSegmenter
from privacycam.segmenters.base import Segmenter
from privacycam.segmenters.people import MainPersonState, select_main_instance

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INSTALL_FIX = "pip install 'privacycam[torch]'"
OFFLINE_ENV = "PRIVACYCAM_OFFLINE"
VOC_PERSON = 15
COCO_PERSON = 1
VOC_CLASSES = 21
COCO_CLASSES = 91
SCORE_THRESHOLD = 0.5
MAX_DETECTIONS = 100  # of any class, before keeping the people
MAX_PEOPLE = 10
# A backend slower than this per frame runs on a background thread.
FRAME_BUDGET_MS = 25.0
# ImageNet statistics, which all of these models were trained with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

Kind = Literal["deeplab", "maskrcnn"]


@dataclass(frozen=True)
class BackendSpec:
    kind: Kind
    weights_enum: str  # class name in torchvision.models.segmentation / .detection
    input_size: tuple[int, int]  # (width, height)


BACKENDS: dict[str, BackendSpec] = {
    "deeplabv3_mobilenet_v3_large": BackendSpec("deeplab", "DeepLabV3_MobileNet_V3_Large_Weights", (512, 288)),
    "deeplabv3_resnet101": BackendSpec("deeplab", "DeepLabV3_ResNet101_Weights", (384, 216)),
    "maskrcnn_resnet50_fpn": BackendSpec("maskrcnn", "MaskRCNN_ResNet50_FPN_Weights", (512, 288)),
    "maskrcnn_resnet50_fpn_v2": BackendSpec("maskrcnn", "MaskRCNN_ResNet50_FPN_V2_Weights", (512, 288)),
}


@dataclass
class Detections:
    """One image's Mask R-CNN output as numpy arrays."""

    boxes: np.ndarray  # (N, 4) x0, y0, x1, y1 in pixels
    labels: np.ndarray  # (N,) COCO category ids
    scores: np.ndarray  # (N,) in [0, 1]
    masks: np.ndarray  # (N, H, W) probabilities in [0, 1]


def import_torch() -> Any:
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError:
        raise ModelError(
            "the torchvision backends need torch and torchvision, which are not installed", INSTALL_FIX
        ) from None
    return torch


def backend_spec(backend: str) -> BackendSpec:
    if backend not in BACKENDS:
        raise ModelError(f"unknown torchvision backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    return BACKENDS[backend]


def _models_module(kind: Kind) -> Any:
    name = "segmentation" if kind == "deeplab" else "detection"
    return importlib.import_module(f"torchvision.models.{name}")


def default_weights(backend: str) -> Any:
    """torchvision's DEFAULT Weights enum member for the backend."""
    spec = backend_spec(backend)
    return getattr(_models_module(spec.kind), spec.weights_enum).DEFAULT


def cached_weights_file(backend: str) -> Path:
    """Where torchvision keeps (and looks for) the backend's default weights."""
    torch = import_torch()
    filename = os.path.basename(urlparse(default_weights(backend).url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def default_weights_file(backend: str) -> Path:
    """The cached default weights, downloaded first if missing and allowed."""
    path = cached_weights_file(backend)
    if path.is_file():
        return path
    url = default_weights(backend).url
    fix = f"download {url} and put {path.name} in {path.parent}, or set segmenter.weights_path to the file"
    if os.environ.get(OFFLINE_ENV) == "1":
        raise ModelError(f"{backend} weights {path.name} are not in {path.parent} ({OFFLINE_ENV}=1: no download)", fix)
    torch = import_torch()
    log.info("downloading %s weights to %s", backend, path)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a hash mismatch a RuntimeError
        raise ModelError(
            f"{backend} weights {path.name} are not in {path.parent} and cannot be downloaded ({exc})", fix
        ) from None
    return path


def build_model(
    backend: str,
    *,
    pretrained: bool = False,
    weights_path: Path | None = None,
    input_size: tuple[int, int] | None = None,
) -> torch.nn.Module:
    """The backend's network in eval mode, on the CPU.

    Random weights unless `weights_path` is given or `pretrained` (the default
    weights, see `default_weights_file`). weights_backbone=None too: weights=None
    alone would still fetch the ImageNet backbone.
    """
    import_torch()
    spec = backend_spec(backend)
    # Find the weights first: a missing file should fail before seconds of model building.
    if weights_path is None and pretrained:
        weights_path = default_weights_file(backend)
    builder = getattr(_models_module(spec.kind), backend)
    if spec.kind == "deeplab":
        # The aux head only helps training; its weights are dropped on load.
        model = builder(weights=None, weights_backbone=None, num_classes=VOC_CLASSES, aux_loss=False)
    else:
        width, height = input_size or spec.input_size
        model = builder(
            weights=None,
            weights_backbone=None,
            num_classes=COCO_CLASSES,
            min_size=min(width, height),
            max_size=max(width, height),
            box_detections_per_img=MAX_DETECTIONS,
            box_score_thresh=SCORE_THRESHOLD,
        )
        _masks_for_people_only(model.roi_heads)
    if weights_path is not None:
        load_weights(model, weights_path, backend)
    return model.eval()


def _masks_for_people_only(roi_heads: torch.nn.Module) -> None:
    """Drop non-person detections before the mask head, whose cost grows with each detection.

    A room is full of chairs, screens and cups; on a CPU their masks would cost
    more than the person's. Overrides the instance's method, not the class's.
    """
    general = roi_heads.postprocess_detections

    def people_only(
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        boxes, scores, labels = general(class_logits, box_regression, proposals, image_shapes)
        # detections come sorted by score, so this keeps the most confident people
        keep = [(label == COCO_PERSON).nonzero()[:MAX_PEOPLE, 0] for label in labels]
        return (
            [b[k] for b, k in zip(boxes, keep, strict=True)],
            [s[k] for s, k in zip(scores, keep, strict=True)],
            [lab[k] for lab, k in zip(labels, keep, strict=True)],
        )

    roi_heads.postprocess_detections = people_only


def load_weights(model: torch.nn.Module, path: Path, backend: str) -> None:
    torch = import_torch()
    fix = f"replace {path} with a torchvision {backend} state_dict (.pth), or point segmenter.weights_path at one"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds for a bad file
        raise ModelError(f"cannot read weights {path}: {_first_line(exc)}", fix) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint (torchvision's reference scripts)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights {path} hold no state_dict", fix)
    state = {key: value for key, value in state.items() if not key.startswith("aux_classifier.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise ModelError(f"weights {path} do not fit {backend}: {_first_line(exc)}", fix) from None
    # Pretrained Mask R-CNN v1 uses FrozenBatchNorm2d, which has no batch counter;
    # in eval mode the BatchNorm2d built here computes the same thing.
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        keys = (missing or unexpected)[:3]
        raise ModelError(f"weights {path} do not fit {backend}: {'missing' if missing else 'unexpected'} {keys}", fix)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def pick_device(choice: str) -> torch.device:
    torch = import_torch()
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if choice == "cuda":
        raise ModelError(
            "segmenter.device is cuda but torch finds no usable CUDA GPU", "set segmenter.device: auto or cpu"
        )
    return torch.device("cpu")


def person_probability(logits: torch.Tensor) -> np.ndarray:
    """DeepLab logits (1, 21, H, W) -> float32 HxW softmax probability of VOC 'person'."""
    return logits[0].float().softmax(dim=0)[VOC_PERSON].cpu().numpy()


def alpha_from_detections(
    detections: Detections, height: int, width: int, state: MainPersonState | None = None
) -> np.ndarray:
    """Person confidence from Mask R-CNN output; with a `state`, only the user's instance."""
    people = (detections.labels == COCO_PERSON) & (detections.scores >= SCORE_THRESHOLD)
    masks = detections.masks[people]
    if state is not None:
        main = select_main_instance(detections.boxes[people], masks, detections.scores[people], state)
        masks = masks[main : main + 1] if main is not None else masks[:0]
    if len(masks) == 0:
        return np.zeros((height, width), dtype=np.float32)
    # Sigmoid probabilities: not clipped, so a broken model's values outside [0, 1] are refused (base.checked_mask).
    return masks.max(axis=0).astype(np.float32)


class DeepLabSegmenter:
    selects_people = False

    def __init__(
        self,
        model: torch.nn.Module,
        name: str,
        input_size: tuple[int, int],
        device: torch.device,
        people: str = "all",  # the mask pipeline picks the user from this backend's mask
    ) -> None:
        torch = import_torch()
        self._torch = torch
        self.name = name
        self.input_size = input_size
        self._device = device
        self._dtype = torch.float16 if device.type == "cuda" else torch.float32
        # channels_last: ~30% faster on CPU (measured) and what GPU tensor cores want.
        self._model = model.eval().to(device=device, dtype=self._dtype, memory_format=torch.channels_last)
        # (x / 255 - mean) / std as one multiply-add
        std = torch.tensor(STD, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device, self._dtype)
        self._shift = (-torch.tensor(MEAN) / std).view(1, 3, 1, 1).to(device, self._dtype)

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            # HWC uint8 permuted to NCHW is already channels_last in memory: no copy.
            image = torch.from_numpy(np.ascontiguousarray(rgb)).to(self._device).permute(2, 0, 1).unsqueeze(0)
            batch = image.to(self._dtype) * self._scale + self._shift
            return person_probability(self._model(batch)["out"])

    def close(self) -> None:
        self._model = None


class MaskRCNNSegmenter:
    def __init__(
        self,
        model: torch.nn.Module,
        name: str,
        input_size: tuple[int, int],
        device: torch.device,
        people: str = "all",
    ) -> None:
        torch = import_torch()
        self._torch = torch
        self.name = name
        self.input_size = input_size
        self._device = device
        # Detection post-processing (box decoding, mask pasting) is fragile in pure
        # float16, so on a GPU autocast runs the convolutions in half precision instead.
        self._autocast = device.type == "cuda"
        self._model = model.eval().to(device)
        self._people = MainPersonState() if people == "user" else None
        self.selects_people = self._people is not None

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        torch = self._torch
        height, width = rgb.shape[:2]
        with torch.inference_mode(), torch.autocast("cuda", enabled=self._autocast):
            # The model normalises itself; it wants float RGB in [0, 1].
            image = torch.from_numpy(np.ascontiguousarray(rgb)).to(self._device).permute(2, 0, 1).float() / 255.0
            output = self._model([image])[0]
            detections = Detections(
                boxes=output["boxes"].float().cpu().numpy(),
                labels=output["labels"].cpu().numpy(),
                scores=output["scores"].float().cpu().numpy(),
                masks=output["masks"][:, 0].float().cpu().numpy(),
            )
        return alpha_from_detections(detections, height, width, self._people)

    def close(self) -> None:
        self._model = None


def make_segmenter(
    backend: str,
    model: torch.nn.Module,
    device: torch.device,
    *,
    people: str = "all",
    input_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> DeepLabSegmenter | MaskRCNNSegmenter:
    """Wrap a built model (see `build_model`) as a synchronous Segmenter.

    A Mask R-CNN model must have been built for the same input_size.
    """
    spec = backend_spec(backend)
    cls = DeepLabSegmenter if spec.kind == "deeplab" else MaskRCNNSegmenter
    return cls(model, name or backend, input_size or spec.input_size, device, people)


def warm_up(segmenter: Segmenter, budget_ms: float = FRAME_BUDGET_MS) -> float:
    """Run the model on a blank frame (first runs pay one-off setup); returns the steady ms/frame."""
    width, height = segmenter.input_size
    frame = np.full((height, width, 3), 128, dtype=np.uint8)
    elapsed = 0.0
    for _ in range(2):
        started = time.perf_counter()
        segmenter.segment(frame, 0)
        elapsed = (time.perf_counter() - started) * 1000
        if elapsed > 4 * budget_ms:
            break  # clearly slow: no need to pay for a second run
    return elapsed


def create_torchvision_segmenter(config: SegmenterConfig) -> Segmenter:
    """The configured torchvision backend, ready to call; slow ones already run in the background."""
    torch = import_torch()
    backend_spec(config.backend)
    device = pick_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)
    model = build_model(config.backend, pretrained=config.weights_path is None, weights_path=config.weights_path)
    name = config.backend if config.weights_path is None else f"{config.backend}:{config.weights_path.name}"
    segmenter = make_segmenter(config.backend, model, device, people=config.people, name=name)
    try:
        ms = warm_up(segmenter)
    except RuntimeError as exc:  # e.g. a GPU too old for this torch build, or out of memory
        segmenter.close()
        raise ModelError(
            f"{config.backend} cannot run on {device}: {_first_line(exc)}", "set segmenter.device: cpu"
        ) from None
    log.info("%s on %s: %.0f ms per frame at %dx%d", name, device, ms, *segmenter.input_size)
    if ms <= FRAME_BUDGET_MS:
        return segmenter
    if device.type == "cpu":
        threads = background_threads(config.threads)
        if threads < config.threads:
            log.info(
                "%s uses %d of segmenter.threads=%d: one core stays free for the frames", name, threads, config.threads
            )
            torch.set_num_threads(threads)
    return BackgroundSegmenter(segmenter)


def background_threads(requested: int) -> int:
    """Torch threads for a model running beside the frame loop: never every core.

    Measured on 2 cores: with torch on both, the frame loop's per-frame work
    (optical flow, compositing) stalls now and then (p99 40-80 ms per call); with
    one core left to it, p99 stays under 10 ms.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(requested, cores - 1))
