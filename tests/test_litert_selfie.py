"""The MediaPipe model run by LiteRT: the same masks as MediaPipe's Tasks API, and clear errors."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from conftest import cli_env, run_cli, sequence

from privacycam.config import SegmenterConfig
from privacycam.errors import ModelError
from privacycam.pipeline import SegmenterLoader
from privacycam.segmenters import create_segmenter
from privacycam.segmenters.litert_selfie import LiteRtSelfieSegmenter
from privacycam.segmenters.mediapipe_selfie import MediaPipeSelfieSegmenter


def _model_inputs(name: str, size: tuple[int, int], count: int) -> list[np.ndarray]:
    frames = sorted((sequence(name) / "frames").iterdir())[::10][:count]
    return [
        cv2.cvtColor(cv2.resize(cv2.imread(str(f)), size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        for f in frames
    ]


@pytest.mark.parametrize("model", ["general", "landscape"])
def test_litert_gives_the_masks_mediapipe_gives(model):
    litert = create_segmenter(SegmenterConfig(model=model))
    tasks = create_segmenter(SegmenterConfig(model=model, runtime="mediapipe"))
    try:
        assert isinstance(litert, LiteRtSelfieSegmenter) and isinstance(tasks, MediaPipeSelfieSegmenter)
        assert litert.input_size == tasks.input_size
        for index, rgb in enumerate(_model_inputs("davis2016_lucia", litert.input_size, 5)):
            ours = litert.segment(rgb, index * 33).copy()
            theirs = tasks.segment(rgb, index * 33)
            assert ours.dtype == np.float32 and ours.shape == theirs.shape
            assert (ours >= 0.5).sum() > 100  # lucia is there: the comparison is not of two empty masks
            np.testing.assert_allclose(ours, theirs, atol=1e-4)
    finally:
        litert.close()
        tasks.close()


def test_output_buffer_is_reused_and_the_next_call_still_runs():
    """The interpreter refuses to run while a view of its tensors is alive; we copy out instead."""
    segmenter = LiteRtSelfieSegmenter("general")
    first, second = _model_inputs("davis2016_tennis", segmenter.input_size, 2)
    mask_a = segmenter.segment(first, 0)
    kept = mask_a.copy()
    mask_b = segmenter.segment(second, 33)
    assert mask_b is mask_a  # one buffer, no allocation per frame
    assert not np.array_equal(kept, mask_b)


def test_a_file_that_is_not_a_model_is_one_clear_error(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"definitely not a flatbuffer" * 100)
    with pytest.raises(ModelError, match="LiteRT cannot load") as caught:
        LiteRtSelfieSegmenter("general", broken)
    assert "segmenter.model_path" in caught.value.fix


def _image_doubling_model(height: int, width: int) -> bytes:
    """A valid .tflite, y = x + x on a 1xHxWx3 image: it loads and runs, but its output is no mask."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def image(name: str) -> schema.TensorT:
        tensor = schema.TensorT()
        tensor.shape, tensor.type, tensor.buffer, tensor.name = (
            [1, height, width, 3],
            schema.TensorType.FLOAT32,
            0,
            name,
        )
        return tensor

    add = schema.OperatorT()
    add.opcodeIndex, add.inputs, add.outputs = 0, [0, 0], [1]
    add.builtinOptionsType, add.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [image("x"), image("y")], [0], [1], [add]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 1
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [graph], [schema.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_a_model_that_is_not_a_mask_model_is_refused(tmp_path):
    wrong = tmp_path / "doubler.tflite"
    wrong.write_bytes(_image_doubling_model(16, 16))
    with pytest.raises(ModelError, match="is not a selfie-segmentation model"):
        LiteRtSelfieSegmenter("general", wrong)


def test_cli_names_the_bad_model_file(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\0" * 1000)
    config = tmp_path / "c.yaml"
    config.write_text(f"segmenter: {{model_path: {broken}}}\n")
    frames = sequence("davis2016_lucia") / "frames"
    result = run_cli("matte", "--config", str(config), str(frames), str(tmp_path / "masks"), env=cli_env())
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "LiteRT cannot load" in result.stderr and "broken.tflite" in result.stderr and "Fix:" in result.stderr


@pytest.mark.parametrize(
    ("runtime", "module", "fix"),
    [
        ("litert", "ai_edge_litert.interpreter", "pip install ai-edge-litert"),
        ("mediapipe", "mediapipe", "pip install mediapipe"),
    ],
)
def test_a_runtime_that_cannot_be_imported_is_one_clear_error(monkeypatch, runtime, module, fix):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ModelError, match="cannot be imported") as caught:
        create_segmenter(SegmenterConfig(runtime=runtime))
    assert fix in caught.value.fix


def test_a_model_that_fails_in_an_unexpected_way_is_reported_not_left_loading():
    def broken_factory(config: SegmenterConfig):
        raise RuntimeError("XNNPACK: out of memory\ndetails the user does not need")

    loader = SegmenterLoader(SegmenterConfig(), broken_factory)
    assert loader.wait(5)
    assert loader.segmenter is None
    assert isinstance(loader.error, ModelError)
    assert loader.error.problem == "segmenter mediapipe failed to load (RuntimeError: XNNPACK: out of memory)"


def test_a_closed_segmenter_holds_no_memory_even_if_referenced():
    """The soak test keeps every model it made (to count faults): closed ones must not pin ~1 MB each."""
    import ctypes
    import gc

    import psutil

    process, kept = psutil.Process(), []
    rgb = np.zeros((256, 256, 3), np.uint8)

    def rss_after_trim() -> int:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return process.memory_info().rss

    for _ in range(3):  # warm-up: the runtime's one-time allocations
        LiteRtSelfieSegmenter("general").close()
    before = rss_after_trim()
    for _ in range(30):
        segmenter = LiteRtSelfieSegmenter("general")
        segmenter.segment(rgb, 0)
        segmenter.close()
        kept.append(segmenter)
    assert rss_after_trim() - before < 10 * 2**20  # ~31 MB when the buffers stayed with the object
