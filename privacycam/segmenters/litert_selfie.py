"""MediaPipe's selfie-segmentation models run by LiteRT (TensorFlow Lite) directly.

The same .tflite files as `mediapipe_selfie`, and the same answer to the last
bit (input scaled to [0, 1], the model's sigmoid output taken as is; checked in
tests/test_litert_selfie.py), but without MediaPipe's calculator graph around
the interpreter: the Tasks API copies the image into its graph, converts it to a
tensor, resizes the mask back and hands packets between threads on every call.
On this 2-core CPU that costs ~2 ms per frame on top of the model's ~3.3 ms,
a third of the whole pipeline's budget at 720p (see README, "Speed").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privacycam.errors import ModelError
from privacycam.models import model_path
from privacycam.segmenters.mediapipe_selfie import quiet_native_stderr


class LiteRtSelfieSegmenter:
    def __init__(self, model: str = "general", path: Path | None = None, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        file = path or model_path(model)
        self.name = f"mediapipe-{model}" if path is None else f"mediapipe:{path.name}"
        try:
            with quiet_native_stderr():
                interpreter = Interpreter(model_path=str(file), num_threads=threads)
                interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelError(
                f"LiteRT cannot load {file}: {str(exc).splitlines()[0]}",
                "point segmenter.model_path at a selfie-segmentation .tflite or run `privacycam models install`",
            ) from None
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        shape_in = tuple(inputs[0]["shape"]) if len(inputs) == 1 else ()
        shape_out = tuple(outputs[0]["shape"]) if outputs else ()
        if len(shape_in) != 4 or shape_in[0] != 1 or shape_in[3] != 3 or shape_out != (*shape_in[:3], 1):
            raise ModelError(
                f"{file} is not a selfie-segmentation model (input {shape_in}, output {shape_out})",
                "point segmenter.model_path at a model with one 1xHxWx3 input and a 1xHxWx1 mask output",
            )
        height, width = int(shape_in[1]), int(shape_in[2])
        self.input_size = (width, height)
        self._interpreter = interpreter
        self._input_index = inputs[0]["index"]
        self._output_index = outputs[0]["index"]
        self._input = np.empty((1, height, width, 3), np.float32)
        self._mask = np.empty((height, width), np.float32)
        with quiet_native_stderr():  # the XNNPACK delegate announces itself on the first call
            self.segment(np.zeros((height, width, 3), np.uint8), 0)

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        """timestamp_ms is unused: the model looks at one frame at a time."""
        np.multiply(rgb, np.float32(1.0 / 255.0), out=self._input[0], casting="unsafe")
        self._interpreter.set_tensor(self._input_index, self._input)
        self._interpreter.invoke()
        # tensor() is a view of the interpreter's buffer: copy out and drop it
        # before the next invoke (which refuses to run while views are alive).
        np.copyto(self._mask, self._interpreter.tensor(self._output_index)()[0, :, :, 0])
        return self._mask

    def close(self) -> None:
        self._interpreter = None
