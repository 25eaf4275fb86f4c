"""v4l2loopback's timeout image: what the driver itself shows when PrivacyCam stops writing.

With the `timeout` control set, a reader that gets no new frame for that many
milliseconds (the writer crashed, was SIGKILLed, or stalls) is handed the
timeout image instead, and the driver copies it over the last frame, so a reader
that opens later does not get that frame either. Neither 0.12 nor 0.15 has a
module parameter for it: the writer sets it through two driver controls. The
image itself can only be written through a memory-mapped buffer of an opener
that had `timeout_image_io` set when it opened (v4l2loopback.c:
`v4l2_loopback_open`, `vidioc_querybuf`, `v4l2_loopback_mmap`).

Five ioctls, so written here with fcntl/mmap rather than adding a V4L2 binding
(pyvirtualcam, which writes the frames, has none for controls).
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct

import numpy as np

log = logging.getLogger(__name__)

# v4l2loopback's private controls: V4L2_CID_USER_BASE | 0xf000, + 2 and + 3.
CID_TIMEOUT = 0x0098F902
CID_TIMEOUT_IMAGE_IO = 0x0098F903


def _iowr(number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("V") << 8) | number


CONTROL = struct.Struct("=Ii")  # struct v4l2_control: id, value
REQUEST_BUFFERS = struct.Struct("=IIII4x")  # struct v4l2_requestbuffers: count, type, memory, capabilities
# struct v4l2_buffer on 64-bit Linux (88 bytes): index, type, bytesused, flags, field, (pad, timeval,
# timecode, sequence), memory, m.offset (+4 of the union), length, ...
BUFFER = struct.Struct("=IIIII4x16x16xII I4x I 12x")
VIDIOC_S_CTRL = _iowr(28, CONTROL.size)
VIDIOC_REQBUFS = _iowr(8, REQUEST_BUFFERS.size)
VIDIOC_QUERYBUF = _iowr(9, BUFFER.size)
V4L2_BUF_TYPE_VIDEO_OUTPUT = 2
V4L2_MEMORY_MMAP = 1


def set_control(descriptor: int, control: int, value: int) -> None:
    fcntl.ioctl(descriptor, VIDIOC_S_CTRL, bytearray(CONTROL.pack(control, value)))


def install_timeout_image(device: str, i420: np.ndarray, timeout_ms: int) -> bool:
    """Make `i420` (one frame in the device's format, already set by the writer) the timeout image.

    Returns False (and logs why at debug level) where the driver has no such
    controls (another loopback driver, a test device).
    """
    try:
        control_fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        log.debug("cannot open %s for its timeout image: %s", device, exc)
        return False
    try:
        set_control(control_fd, CID_TIMEOUT_IMAGE_IO, 1)  # applies to the next opener
        image_fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
        try:
            _write_timeout_image(image_fd, i420)
        finally:
            os.close(image_fd)
        set_control(control_fd, CID_TIMEOUT, timeout_ms)
        return True
    except (OSError, ValueError) as exc:
        log.debug("%s takes no timeout image: %s", device, exc)
        return False
    finally:
        os.close(control_fd)


def _write_timeout_image(descriptor: int, i420: np.ndarray) -> None:
    request = REQUEST_BUFFERS.pack(1, V4L2_BUF_TYPE_VIDEO_OUTPUT, V4L2_MEMORY_MMAP, 0)
    fcntl.ioctl(descriptor, VIDIOC_REQBUFS, bytearray(request))
    # index 0, output, (bytesused, flags, field, sequence) 0, memory-mapped, (offset, length) filled in
    query = bytearray(BUFFER.pack(0, V4L2_BUF_TYPE_VIDEO_OUTPUT, 0, 0, 0, 0, V4L2_MEMORY_MMAP, 0, 0))
    fcntl.ioctl(descriptor, VIDIOC_QUERYBUF, query)
    *_, offset, length = BUFFER.unpack(query)
    data = i420.reshape(-1)
    if length < data.size:
        raise ValueError(f"timeout buffer holds {length} bytes, the frame has {data.size}")
    with mmap.mmap(descriptor, length, mmap.MAP_SHARED, mmap.PROT_WRITE, offset=offset) as buffer:
        buffer[: data.size] = data.tobytes()
