"""PrivacyCam: a privacy webcam filter for Linux."""

import os

# OpenCV's worker threads spin for a while after each parallel call, waiting
# for the next one. Between two frames of a 30 fps camera that spinning is pure
# waste: ~1-2 ms of CPU per 720p frame here, with no gain in speed. These are
# read once, when cv2 loads, so they are set before any module imports it.
os.environ.setdefault("OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER", "0")
os.environ.setdefault("OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN", "0")

__version__ = "0.1.0"
