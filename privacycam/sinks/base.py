"""What every sink implements: take composited BGR frames of one fixed size."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from privacycam.sources.base import Frame


class Sink(Protocol):
    description: str

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        """image: BGR uint8 at the sink's size. frame: where it came from (None: placeholder)."""
        ...

    @property
    def consumer_watching(self) -> bool:
        """Whether someone reads the output right now (always True but for the virtual camera)."""
        ...

    def close(self) -> None: ...
