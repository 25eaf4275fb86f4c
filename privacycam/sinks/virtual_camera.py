"""The PrivacyCam virtual camera: a v4l2loopback device fed through pyvirtualcam.

The output size and fps are fixed for the life of the process because
conferencing apps lock the format when they open the device. Frames are
converted to I420 here (the loopback's native format) so pyvirtualcam only copies.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import struct
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pyvirtualcam

from privacycam import i420
from privacycam.errors import SinkError
from privacycam.sinks import loopback_timeout
from privacycam.sinks.reader_watch import ReaderWatch
from privacycam.sources.base import Frame

log = logging.getLogger(__name__)

SYSFS_VIDEO = "/sys/class/video4linux"
# The driver shows the timeout image after this long without a frame from us: a
# crash or SIGKILL (while PrivacyCam runs, its own stall watch publishes the
# placeholder first, placeholders go out 5 times a second while idle). Longer
# than the gap between frames of a slow machine: in the emulated e2e guest under
# load frames came 3-5 s apart, and a 3 s timeout put placeholders between them.
DEVICE_TIMEOUT_MS = 10_000
RELOAD_HELP = (
    "v4l2loopback 0.12.x cannot reopen a device for output once a writer closed it "
    "(pyvirtualcam #61, v4l2loopback #442). Reload the module: "
    "`sudo modprobe -r v4l2loopback && sudo modprobe v4l2loopback` "
    "(with the options from /etc/modprobe.d/privacycam.conf), or install v4l2loopback >= 0.13"
)


# VIDIOC_S_PARM = _IOWR('V', 22, struct v4l2_streamparm): a 4-byte buffer type,
# then a 200-byte union whose output parameters hold timeperframe at offset 8.
VIDIOC_S_PARM = (3 << 30) | (204 << 16) | (ord("V") << 8) | 22
V4L2_BUF_TYPE_VIDEO_OUTPUT = 2
STREAMPARM = struct.Struct("=I8xII184x")  # type, (capability, outputmode), timeperframe num/den, rest


def streamparm_for(rate: Fraction) -> bytes:
    """struct v4l2_streamparm for an output at `rate` frames per second (time per frame = 1 / rate)."""
    return STREAMPARM.pack(V4L2_BUF_TYPE_VIDEO_OUTPUT, rate.denominator, rate.numerator)


def advertise_frame_rate(device: str, fps: float) -> bool:
    """Tell readers the frame rate we send (v4l2loopback says 30 fps otherwise).

    pyvirtualcam does not set it, and apps size their expectations by it. One
    ioctl, so written here rather than adding a V4L2 binding; a failure only
    costs the hint, so it is logged and ignored.
    """
    rate = Fraction(fps).limit_denominator(1001)  # 15 -> 15/1, 29.97 -> 2997/100, NTSC 30000/1001 kept
    request = bytearray(streamparm_for(rate))
    try:
        descriptor = os.open(device, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        log.debug("cannot open %s to set its frame rate: %s", device, exc)
        return False
    try:
        fcntl.ioctl(descriptor, VIDIOC_S_PARM, request)
    except OSError as exc:
        log.debug("%s did not take the frame rate %.3g fps: %s", device, fps, exc)
        return False
    finally:
        os.close(descriptor)
    return True


def loopback_devices(sysfs: str = SYSFS_VIDEO) -> dict[str, str]:
    """/dev/videoN -> card label, for every video4linux device."""
    devices = {}
    for name_file in sorted(glob.glob(os.path.join(sysfs, "video*", "name"))):
        node = Path(name_file).parent.name
        try:
            devices[f"/dev/{node}"] = Path(name_file).read_text().strip()
        except OSError:
            continue
    return devices


def find_device_by_label(label: str, sysfs: str = SYSFS_VIDEO) -> str | None:
    # pyvirtualcam matches device paths only, so the card label is looked up here.
    for device, name in loopback_devices(sysfs).items():
        if name == label:
            return device
    return None


class VirtualCameraSink:
    # v4l2loopback hands a reader that opens the device the last frame written
    keeps_last_frame = True
    takes_i420 = True  # I420 frames go out as they are; BGR ones (placeholders) are converted

    def __init__(
        self, width: int, height: int, fps: float, device: str | None, label: str, backend: str | None
    ) -> None:
        if device is None and backend is None:
            device = find_device_by_label(label)
            if device is None:
                raise SinkError(
                    f"no v4l2loopback device labelled {label!r}",
                    "load the module: `sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                    f"video_nr=10 card_label={label}` (see the README), or give --output vcam:/dev/videoN",
                )
        try:
            self._camera = pyvirtualcam.Camera(
                width, height, fps, fmt=pyvirtualcam.PixelFormat.I420, device=device, backend=backend
            )
        except (RuntimeError, OSError, KeyError) as exc:
            raise _explain(exc, device) from None
        self.device = self._camera.device
        self.description = f"virtual camera {self.device} ({label})"
        self._i420 = np.empty((height * 3 // 2, width), np.uint8)
        # A test backend may name no real device node; then assume someone watches.
        self._readers = None
        self.timeout_image_active = False
        if os.path.exists(str(self.device)):
            advertise_frame_rate(str(self.device), fps)
            self._readers = ReaderWatch(self.device)

    @property
    def consumer_watching(self) -> bool:
        return self._readers.watching if self._readers is not None else True

    def install_timeout_image(self, image: np.ndarray) -> bool:
        """Have the driver show `image` (BGR) when frames stop coming for DEVICE_TIMEOUT_MS."""
        if self._readers is None:  # no real device node
            return False
        i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        self.timeout_image_active = loopback_timeout.install_timeout_image(str(self.device), i420, DEVICE_TIMEOUT_MS)
        if self.timeout_image_active:
            log.info("%s shows a placeholder by itself after %d ms without frames", self.device, DEVICE_TIMEOUT_MS)
        else:
            log.warning(
                "%s takes no timeout image: after a crash its last frame stays for new readers "
                "(v4l2loopback >= 0.12 has one)",
                self.device,
            )
        return self.timeout_image_active

    def send(self, image: np.ndarray, frame: Frame | None) -> None:
        if not i420.is_i420(image):
            image = i420.from_bgr(image, self._i420)
        try:
            self._camera.send(image)
        except (RuntimeError, OSError) as exc:
            raise SinkError(
                f"writing to {self.device} failed ({exc})",
                "the virtual camera device went away; reload v4l2loopback and restart PrivacyCam",
            ) from None

    def close(self) -> None:
        readers, self._readers = getattr(self, "_readers", None), None
        if readers is not None:
            readers.close()
        camera, self._camera = getattr(self, "_camera", None), None
        if camera is not None:
            camera.close()


def _explain(exc: BaseException, device: str | None) -> SinkError:
    text = " ".join(str(exc).split())
    if "not a video output device" in text:
        return SinkError(f"{device} refuses output: {text}", RELOAD_HELP)
    if "ermission" in text:
        return SinkError(f"no permission to write {device}", "add yourself to the `video` group and log in again")
    return SinkError(f"cannot open virtual camera {device or ''}: {text}", "run `privacycam doctor`")
