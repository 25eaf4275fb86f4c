"""A real daemon whose model hangs for good, for test_device_fail_closed (run as a script).

argv: control socket path, a text file that gets one line per frame the virtual
camera receives ("sent: PrivacyCam: stopped" for the stop placeholder, else
"sent: frame") and "hanging" once the model hangs.
"""

from __future__ import annotations

import sys
import threading

import cv2
import numpy as np
import pyvirtualcam

from privacycam.config import Config
from privacycam.daemon import Daemon
from privacycam.pipeline import placeholder_image
from privacycam.publish_gate import STOPPED_TEXT

SIZE = (320, 180)
socket_path, out_path = sys.argv[1:3]
lines = open(out_path, "a", buffering=1)  # noqa: SIM115 - open for the life of the process
config = Config().with_overrides(
    output={"backend": "lines", "width": SIZE[0], "height": SIZE[1]}, control={"socket": socket_path}
)
stopped = cv2.cvtColor(
    placeholder_image(*SIZE, config.privacy.placeholder_color, STOPPED_TEXT), cv2.COLOR_BGR2YUV_I420
).reshape(-1)


class LinesBackend:
    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.fourcc = fourcc

    def send(self, frame: np.ndarray) -> None:
        lines.write("sent: PrivacyCam: stopped\n" if np.array_equal(frame.reshape(-1), stopped) else "sent: frame\n")

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "lines"

    def native_fourcc(self):
        return self.fourcc


class StuckModel:
    name = "stuck"
    input_size = (64, 64)

    def segment(self, rgb: np.ndarray, timestamp_ms: int) -> np.ndarray:
        lines.write("hanging\n")
        threading.Event().wait()  # forever
        raise AssertionError("unreachable")

    def close(self) -> None:
        pass


pyvirtualcam.register_backend("lines", LinesBackend)
daemon = Daemon(config, None, "synthetic", "vcam", segmenter_factory=lambda _config: StuckModel())
sys.exit(daemon.serve())
