"""Discards frames; for benchmarks and for running the pipeline with no output."""

from __future__ import annotations

import numpy as np

from privacycam.sources.base import Frame


class NullSink:
    description = "null"
    consumer_watching = True
    takes_i420 = True  # it looks at nothing: no conversion to BGR for it

    def __init__(self) -> None:
        self.frames_sent = 0

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        self.frames_sent += 1

    def close(self) -> None:
        pass
