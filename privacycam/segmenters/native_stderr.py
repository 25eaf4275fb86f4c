"""Keep the C++ runtimes' start-up chatter out of the user's terminal and journal.

TensorFlow Lite, XNNPACK and absl print to file descriptor 2 directly ("INFO:
Created TensorFlow Lite XNNPACK delegate for CPU.", glog lines), past Python's
logging. While a model loads, fd 2 goes to a temporary file instead. That
redirect is process-wide: a line another thread logs meanwhile (a privacy
toggle from a signal, the pipeline saying frames go out hidden) lands there
too. So afterwards our own lines are written out again, in order; the rest is
the runtimes' and is dropped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

# Every line of ours starts with this (the log format set up in privacycam.cli).
OUR_PREFIX = b"privacycam"


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        try:
            os.dup2(caught.fileno(), 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            ours = [line for line in caught.read().splitlines(keepends=True) if line.startswith(OUR_PREFIX)]
            if ours:
                os.write(2, b"".join(ours))
