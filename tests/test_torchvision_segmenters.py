"""torchvision backends: real networks with random weights (no download, ever), on the CPU."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from urllib.error import URLError

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from privacycam.config import TORCH_BACKENDS, SegmenterConfig  # noqa: E402
from privacycam.errors import ModelError  # noqa: E402
from privacycam.segmenters import Segmenter, create_segmenter  # noqa: E402
from privacycam.segmenters.background_worker import BackgroundSegmenter, NoMaskYet  # noqa: E402
from privacycam.segmenters.people import MainPersonState  # noqa: E402
from privacycam.segmenters.torchvision_models import (  # noqa: E402
    BACKENDS,
    COCO_PERSON,
    INSTALL_FIX,
    MAX_PEOPLE,
    VOC_PERSON,
    Detections,
    alpha_from_detections,
    background_threads,
    build_model,
    cached_weights_file,
    create_torchvision_segmenter,
    load_weights,
    make_segmenter,
    person_probability,
    pick_device,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FRAME = DATA / "davis2016_lucia" / "frames" / "00000.jpg"
CPU = torch.device("cpu")
# Mask R-CNN is slow on a CPU; a small input keeps the test quick.
SMALL = (320, 240)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRIVACYCAM_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def real_frame(size: tuple[int, int]) -> np.ndarray:
    if not FRAME.is_file():
        pytest.skip(f"{FRAME} is missing (shared/ must sit beside the repo)")
    bgr = cv2.resize(cv2.imread(str(FRAME)), size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_every_configured_backend_is_implemented() -> None:
    assert set(BACKENDS) == set(TORCH_BACKENDS)


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_backend_segments_a_real_frame(backend: str) -> None:
    size = SMALL if BACKENDS[backend].kind == "maskrcnn" else BACKENDS[backend].input_size
    segmenter = make_segmenter(backend, build_model(backend, input_size=size), CPU, input_size=size)
    assert isinstance(segmenter, Segmenter)
    assert segmenter.name == backend and segmenter.input_size == size
    mask = segmenter.segment(real_frame(size), 0)
    segmenter.close()
    assert mask.dtype == np.float32
    assert mask.shape == (size[1], size[0])
    assert np.isfinite(mask).all() and mask.min() >= 0.0 and mask.max() <= 1.0


def test_only_mask_rcnn_picks_the_user_itself() -> None:
    deeplab = make_segmenter(
        "deeplabv3_mobilenet_v3_large", build_model("deeplabv3_mobilenet_v3_large"), CPU, people="user"
    )
    detector_model = build_model("maskrcnn_resnet50_fpn", input_size=SMALL)
    everyone = make_segmenter("maskrcnn_resnet50_fpn", detector_model, CPU, input_size=SMALL)
    user = make_segmenter("maskrcnn_resnet50_fpn", detector_model, CPU, people="user", input_size=SMALL)
    assert not deeplab.selects_people and not everyone.selects_people and user.selects_people


def forced_detector(label: int) -> torch.nn.Module:
    """Random Mask R-CNN whose every proposal looks like a confident `label`."""
    model = build_model("maskrcnn_resnet50_fpn", input_size=SMALL)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[label] += 20.0
    return model


def test_mask_rcnn_masks_people_only_and_picks_one_user() -> None:
    rgb = real_frame(SMALL)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    detector = forced_detector(COCO_PERSON)
    with torch.inference_mode():
        assert len(forced_detector(18)([image])[0]["labels"]) == 0  # no mask work for things that are not people
        output = detector([image])[0]
    assert 2 <= len(output["labels"]) <= MAX_PEOPLE and (output["labels"] == COCO_PERSON).all()
    masks = output["masks"][:, 0].numpy()
    user = make_segmenter("maskrcnn_resnet50_fpn", detector, CPU, people="user", input_size=SMALL).segment(rgb, 0)
    assert user.shape == (SMALL[1], SMALL[0]) and user.dtype == np.float32
    assert user.max() > 0
    assert any(np.allclose(user, mask, atol=1e-5) for mask in masks)  # one instance ...
    assert not np.allclose(user, masks.max(axis=0), atol=1e-5)  # ... not everyone


def test_person_probability_is_the_softmax_of_voc_person() -> None:
    logits = torch.zeros(1, 21, 4, 6)
    logits[0, VOC_PERSON, :, :3] = 10.0  # person on the left half
    logits[0, 0, :, 3:] = 10.0  # background on the right half
    probability = person_probability(logits)
    assert probability.dtype == np.float32 and probability.shape == (4, 6)
    assert (probability[:, :3] > 0.99).all() and (probability[:, 3:] < 0.01).all()
    np.testing.assert_allclose(person_probability(torch.zeros(1, 21, 2, 2)), 1 / 21, rtol=1e-6)


def synthetic_detections() -> Detections:
    """User (big, central), bystander (small, right), a confident dog, and a doubtful person."""
    height, width = 120, 200
    boxes = np.array([[70, 10, 130, 120], [160, 60, 190, 120], [10, 80, 50, 120], [0, 0, 30, 40]], dtype=np.float32)
    masks = np.zeros((4, height, width), dtype=np.float32)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.astype(int), strict=True):
        mask[y0:y1, x0:x1] = 0.9
    masks[0, 10:12, 70:130] = 0.6  # a soft edge
    return Detections(
        boxes=boxes,
        labels=np.array([COCO_PERSON, COCO_PERSON, 18, COCO_PERSON]),
        scores=np.array([0.98, 0.95, 0.99, 0.3], dtype=np.float32),
        masks=masks,
    )


def test_all_people_are_kept_and_nothing_else() -> None:
    alpha = alpha_from_detections(synthetic_detections(), 120, 200)
    assert alpha.dtype == np.float32 and alpha.shape == (120, 200)
    assert alpha[50, 100] == pytest.approx(0.9) and alpha[10, 100] == pytest.approx(0.6)  # user, soft edge kept
    assert alpha[90, 175] == pytest.approx(0.9)  # bystander
    assert alpha[100, 30] == 0.0  # the dog
    assert alpha[20, 15] == 0.0  # below the score threshold


def test_user_mode_keeps_only_the_user_and_sticks_to_them() -> None:
    state = MainPersonState()
    alpha = alpha_from_detections(synthetic_detections(), 120, 200, state)
    assert alpha[50, 100] == pytest.approx(0.9)
    assert alpha[90, 175] == 0.0 and alpha[100, 30] == 0.0
    # Next frame the bystander steps closer and is now bigger than the user, but not twice as prominent.
    detections = synthetic_detections()
    detections.boxes[1] = [125, 0, 200, 120]
    detections.masks[1] = 0.0
    detections.masks[1, :, 130:200] = 0.9
    alpha = alpha_from_detections(detections, 120, 200, state)
    assert alpha[50, 100] == pytest.approx(0.9) and alpha[60, 170] == 0.0


def test_no_person_gives_an_empty_mask() -> None:
    detections = synthetic_detections()
    detections.labels[:] = 18
    for state in (None, MainPersonState()):
        alpha = alpha_from_detections(detections, 120, 200, state)
        assert alpha.shape == (120, 200) and not alpha.any()


def save_state(model: torch.nn.Module, path: Path, drop: str = "") -> Path:
    state = {k: v for k, v in model.state_dict().items() if not (drop and k.endswith(drop))}
    torch.save(state, path)
    return path


def test_weights_file_in_torchvision_layout_loads(tmp_path: Path) -> None:
    # torchvision's DeepLab files carry an aux head that inference does not use.
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    trained = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = save_state(trained, tmp_path / "deeplab.pth")
    model = build_model("deeplabv3_mobilenet_v3_large", weights_path=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key
    # Mask R-CNN v1 files come from FrozenBatchNorm2d layers: no batch counters.
    detector = build_model("maskrcnn_resnet50_fpn", input_size=SMALL)
    path = save_state(detector, tmp_path / "maskrcnn.pth", drop="num_batches_tracked")
    load_weights(build_model("maskrcnn_resnet50_fpn", input_size=SMALL), path, "maskrcnn_resnet50_fpn")


def test_bad_weights_files_are_model_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights"):
        build_model("deeplabv3_mobilenet_v3_large", weights_path=garbage)
    not_a_state = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_state)
    with pytest.raises(ModelError, match="no state_dict"):
        build_model("deeplabv3_mobilenet_v3_large", weights_path=not_a_state)
    other = save_state(build_model("deeplabv3_mobilenet_v3_large"), tmp_path / "other.pth")
    with pytest.raises(ModelError, match="do not fit deeplabv3_resnet101") as error:
        build_model("deeplabv3_resnet101", weights_path=other)
    assert error.value.exit_code == 2 and "segmenter.weights_path" in error.value.message


def test_create_with_weights_path_gives_a_ready_segmenter(tmp_path: Path) -> None:
    path = save_state(build_model("deeplabv3_mobilenet_v3_large"), tmp_path / "mine.pth")
    config = SegmenterConfig(backend="deeplabv3_mobilenet_v3_large", device="cpu", threads=2, weights_path=path)
    segmenter = create_segmenter(config)
    try:
        assert isinstance(segmenter, Segmenter)
        assert segmenter.name.startswith("deeplabv3_mobilenet_v3_large:mine.pth")
        assert segmenter.input_size == (512, 288)
        rgb = real_frame(segmenter.input_size)
        # Slower than a frame on this CPU: it comes back already asynchronous.
        if isinstance(segmenter, BackgroundSegmenter):
            for ts in range(400):
                try:
                    mask = segmenter.segment(rgb, ts)
                    break
                except NoMaskYet:
                    time.sleep(0.01)
            else:
                pytest.fail("no mask from the background segmenter")
        else:
            mask = segmenter.segment(rgb, 0)
        assert mask.shape == (288, 512) and mask.dtype == np.float32
    finally:
        segmenter.close()


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_missing_default_weights_offline_names_file_and_cache(tmp_path: Path, backend: str) -> None:
    expected = cached_weights_file(backend)
    assert expected.parent == tmp_path / "torch-home" / "hub" / "checkpoints"
    with pytest.raises(ModelError) as error:
        create_torchvision_segmenter(SegmenterConfig(backend=backend, device="cpu"))
    message = error.value.message
    assert expected.name in message and str(expected.parent) in message
    assert "segmenter.weights_path" in message
    assert error.value.exit_code == 2


def test_default_weights_are_taken_from_the_torch_hub_cache(tmp_path: Path) -> None:
    backend = "deeplabv3_mobilenet_v3_large"
    cached = cached_weights_file(backend)
    cached.parent.mkdir(parents=True)
    trained = build_model(backend)
    save_state(trained, cached)
    segmenter = create_torchvision_segmenter(SegmenterConfig(backend=backend, device="cpu", threads=2))
    try:
        assert segmenter.name.startswith(backend)
        inner = segmenter.inner if isinstance(segmenter, BackgroundSegmenter) else segmenter
        loaded = next(inner._model.parameters())
        assert torch.equal(loaded, next(trained.parameters()))
    finally:
        segmenter.close()


def test_failed_download_names_file_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVACYCAM_OFFLINE")
    asked: list[str] = []

    def no_network(url: str, dst: str, *args: object, **kwargs: object) -> None:
        asked.append(url)
        raise URLError("Name or service not known")

    # Only the network is faked: this machine has none, and a test must not wait on it.
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    backend = "maskrcnn_resnet50_fpn_v2"
    with pytest.raises(ModelError, match="cannot be downloaded") as error:
        create_torchvision_segmenter(SegmenterConfig(backend=backend, device="cpu"))
    expected = cached_weights_file(backend)
    assert asked and asked[0].endswith(expected.name)
    assert expected.name in error.value.message and str(expected.parent) in error.value.message


def test_default_weights_file_names_are_torchvisions() -> None:
    assert cached_weights_file("deeplabv3_mobilenet_v3_large").name == "deeplabv3_mobilenet_v3_large-fc3c493d.pth"


def test_without_torch_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail like a missing package
    with pytest.raises(ModelError) as error:
        create_segmenter(SegmenterConfig(backend="deeplabv3_mobilenet_v3_large"))
    assert INSTALL_FIX in error.value.message


def test_a_background_model_leaves_a_core_to_the_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert background_threads(8) == 3
    assert background_threads(2) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert background_threads(4) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_requested_without_gpu() -> None:
    assert pick_device("auto") == CPU
    with pytest.raises(ModelError, match="device"):
        pick_device("cuda")


def test_matte_gives_every_frame_a_mask_from_a_slow_backend(tmp_path: Path) -> None:
    """`privacycam matte` waits for each mask: a model slower than a frame must not raise NoMaskYet."""
    from privacycam.config import Config
    from privacycam.matte import matte_frames
    from privacycam.sources import open_source

    frames = DATA / "davis2016_lucia" / "frames"
    if not frames.is_dir():
        pytest.skip(f"{frames} is missing (shared/ must sit beside the repo)")
    clip = tmp_path / "clip"
    clip.mkdir()
    for path in sorted(frames.glob("*.jpg"))[:3]:
        (clip / path.name).symlink_to(path)
    weights = save_state(build_model("deeplabv3_mobilenet_v3_large"), tmp_path / "mine.pth")
    segmenter = {"backend": "deeplabv3_mobilenet_v3_large", "device": "cpu", "threads": 2, "weights_path": weights}
    config = Config.model_validate({"segmenter": segmenter})
    source = open_source(str(clip), config.camera)
    try:
        mattes = list(matte_frames(source, config))
    finally:
        source.close()
    assert [name for name, _ in mattes] == [p.stem for p in sorted(clip.glob("*.jpg"))]
    height, width = cv2.imread(str(next(clip.glob("*.jpg")))).shape[:2]
    assert all(alpha.shape == (height, width) and alpha.dtype == np.uint8 for _, alpha in mattes)
