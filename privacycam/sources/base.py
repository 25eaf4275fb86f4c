"""What every frame source hands the pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8 (h, w, 3), or I420 uint8 (h * 3 / 2, w): see privacycam.i420
    index: int  # 0-based position in the source
    name: str  # file stem for image folders, else the zero-padded index
    captured_at: float = field(default_factory=time.perf_counter)  # perf_counter seconds
    read_ms: float = 0.0  # time the source took to produce it (decode, camera read)

    @property
    def timestamp_ms(self) -> int:
        return int(self.captured_at * 1000)


class FrameSource(Protocol):
    description: str
    live: bool  # a camera: frames arrive in real time whether we take them or not
    fps: float  # nominal rate, used for pacing files and sizing sinks
    size: tuple[int, int]  # (width, height) of the frames it gives

    def read(self) -> Frame | None:
        """The next frame; None at the end of a finite source. Raises SourceError."""
        ...

    def close(self) -> None: ...
