"""While a model loads, the C++ runtimes' chatter is dropped but our own log lines are not."""

from __future__ import annotations

import logging
import os
import threading

from privacycam.segmenters.native_stderr import quiet_native_stderr


def test_native_chatter_is_dropped_and_our_lines_are_kept(capfd):
    with quiet_native_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"privacycam: INFO: privacy off (signal SIGUSR1)\n")
        os.write(2, b"W0000 00:00:1700000000.000000 1234 inference_feedback_manager.cc:114] Feedback manager\n")
    err = capfd.readouterr().err
    assert "privacy off (signal SIGUSR1)" in err
    assert "XNNPACK" not in err and "Feedback manager" not in err


def test_a_line_logged_by_another_thread_meanwhile_comes_through(capfd):
    logger = logging.getLogger("privacycam.test_native_stderr")
    # fd 2 itself, as the daemon's sys.stderr is (pytest's capfd swaps sys.stderr for another file)
    stream = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - fd 2 stays open, nothing to close
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("privacycam: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    loading, logged = threading.Event(), threading.Event()

    def load_model() -> None:
        with quiet_native_stderr():
            loading.set()
            logged.wait(5)

    loader = threading.Thread(target=load_model)
    loader.start()
    try:
        assert loading.wait(5)
        logger.info("privacy off (hotkey)")  # the main thread, in the middle of the model load
    finally:
        logged.set()
        loader.join(5)
        logger.removeHandler(handler)
    assert "privacycam: INFO: privacy off (hotkey)" in capfd.readouterr().err
