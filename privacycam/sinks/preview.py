"""An OpenCV window showing the output: `--output preview`, or beside another sink (`output.preview`)."""

from __future__ import annotations

import cv2
import numpy as np

from privacycam.errors import SinkError
from privacycam.sinks.base import Sink
from privacycam.sources.base import Frame
from privacycam.x_display import x_display_problem

WINDOW = "PrivacyCam preview"
NO_WINDOW_FIX = "run it in a desktop session (X11, or XWayland on Wayland), or use --output vcam, a file or null"


class PreviewSink:
    description = "preview window"
    consumer_watching = True

    def __init__(self) -> None:
        problem = x_display_problem()
        if problem is not None:
            raise SinkError(f"the preview window cannot open: {problem}", NO_WINDOW_FIX)

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        cv2.imshow(WINDOW, image)
        cv2.waitKey(1)

    def close(self) -> None:
        cv2.destroyWindow(WINDOW)


class WithPreview:
    """Another sink, with every frame it gets also shown in the preview window (`output.preview`)."""

    def __init__(self, sink: Sink, preview: PreviewSink) -> None:
        self._sink = sink
        self._preview = preview
        self.description = f"{sink.description} + {preview.description}"
        self.keeps_last_frame = getattr(sink, "keeps_last_frame", False)

    def install_timeout_image(self, image: np.ndarray) -> bool:
        install = getattr(self._sink, "install_timeout_image", None)
        return install(image) if install is not None else False

    @property
    def timeout_image_active(self) -> bool:
        return getattr(self._sink, "timeout_image_active", False)

    @property
    def consumer_watching(self) -> bool:
        """Whether an app reads the real output; the preview alone does not keep the camera on."""
        return self._sink.consumer_watching

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        self._sink.send(image, frame)
        self._preview.send(image, frame)

    def close(self) -> None:
        try:
            self._preview.close()
        finally:
            self._sink.close()
