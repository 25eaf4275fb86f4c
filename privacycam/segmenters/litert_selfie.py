"""MediaPipe's selfie-segmentation models run by LiteRT (TensorFlow Lite) directly.

The same .tflite files as `mediapipe_selfie` and the same masks (input scaled
to [0, 1], the model's sigmoid output taken as is; tests/test_litert_selfie.py
compares the two), but without MediaPipe's calculator graph around the
interpreter: the Tasks API copies the image into its graph, converts it to a
tensor, resizes the mask back and hands packets between threads on every call.
On this 2-core CPU that cost ~1.3-2 ms per frame on top of the model's ~3.3 ms
(see README, "Speed").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privacycam.errors import ModelError
from privacycam.models import MODEL_FILE_FIX, model_path
from privacycam.segmenters.native_stderr import quiet_native_stderr


def open_interpreter(file: Path, threads: int):
    """A LiteRT interpreter with its tensors allocated, or a ModelError that says what to do."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ModelError(
            f"LiteRT cannot be imported ({exc})",
            "pip install ai-edge-litert (a dependency of privacycam), or set segmenter.runtime: mediapipe",
        ) from None
    try:
        with quiet_native_stderr():
            interpreter = Interpreter(model_path=str(file), num_threads=threads)
            interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"LiteRT cannot load {file}: {str(exc).splitlines()[0]}",
            MODEL_FILE_FIX,
        ) from None
    return interpreter


def image_input(interpreter, file: Path) -> tuple[int, int, int]:
    """(tensor index, height, width) of the model's one 1xHxWx3 float input, else a ModelError."""
    inputs = interpreter.get_input_details()
    shape = tuple(inputs[0]["shape"]) if len(inputs) == 1 else ()
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or inputs[0]["dtype"] != np.float32:
        raise ModelError(
            f"{file} does not take one 1xHxWx3 float image (inputs: {[tuple(i['shape']) for i in inputs]})",
            MODEL_FILE_FIX,
        )
    return inputs[0]["index"], int(shape[1]), int(shape[2])


def mask_output(interpreter, file: Path, height: int, width: int) -> int:
    """Index of the model's 1xHxWx1 output (the person mask), else a ModelError."""
    for output in interpreter.get_output_details():
        if tuple(output["shape"]) == (1, height, width, 1):
            return output["index"]
    raise ModelError(
        f"{file} is not a selfie-segmentation model (no 1x{height}x{width}x1 mask output)",
        "point segmenter.model_path at a model with one 1xHxWx3 input and a 1xHxWx1 mask output",
    )


class LiteRtSelfieSegmenter:
    def __init__(self, model: str = "general", path: Path | None = None, threads: int = 1) -> None:
        file = path or model_path(model)
        self.name = f"mediapipe-{model}" if path is None else f"mediapipe:{path.name}"
        self._interpreter = open_interpreter(file, threads)
        self._input_index, height, width = image_input(self._interpreter, file)
        self._output_index = mask_output(self._interpreter, file, height, width)
        self.input_size = (width, height)
        self._input = np.empty((1, height, width, 3), np.float32)
        self._mask = np.empty((height, width), np.float32)
        with quiet_native_stderr():  # the XNNPACK delegate announces itself on the first call
            self.segment(np.zeros((height, width, 3), np.uint8), 0)

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        """timestamp_ms is unused: the model looks at one frame at a time."""
        self._invoke(self._interpreter, self._input_index, rgb)
        # tensor() is a view of the interpreter's buffer: copy out and drop it
        # before the next invoke (which refuses to run while views are alive).
        np.copyto(self._mask, self._interpreter.tensor(self._output_index)()[0, :, :, 0])
        return self._mask

    def _invoke(self, interpreter, input_index: int, rgb: np.ndarray) -> None:
        """Run a model on an RGB uint8 image, scaled to [0, 1] as MediaPipe feeds it."""
        np.multiply(rgb, np.float32(1.0 / 255.0), out=self._input[0], casting="unsafe")
        interpreter.set_tensor(input_index, self._input)
        interpreter.invoke()

    def close(self) -> None:
        """Release the model and the buffers (~1 MB), also if someone still holds this object."""
        self._interpreter = None
        self._input = self._mask = None
