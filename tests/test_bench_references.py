"""The yardsticks in bench/ filter real frames: person kept, background blurred, I420 out."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO, cli_env, laplacian_variance, read_gray, sequence

sys.path.insert(0, str(REPO))

from bench.lfbw_reference import SEGMENTER as LFBW_SEGMENTER  # noqa: E402
from bench.lfbw_reference import lfbw_frame  # noqa: E402
from bench.naive_reference import SEGMENTER as NAIVE_SEGMENTER  # noqa: E402
from bench.naive_reference import naive_frame  # noqa: E402
from privacycam.segmenters import create_segmenter  # noqa: E402


@pytest.mark.parametrize("filter_frame, config", [(naive_frame, NAIVE_SEGMENTER), (lfbw_frame, LFBW_SEGMENTER)])
def test_reference_keeps_the_person_and_blurs_the_rest(filter_frame, config):
    folder = sequence("davis2016_lucia")
    image = cv2.imread(str(folder / "frames" / "00030.jpg"))[:, :852]
    truth = read_gray(folder / "masks" / "00030.png")[:, :852] > 0
    segmenter = create_segmenter(config)
    try:
        i420 = filter_frame(segmenter, image, 0)
    finally:
        segmenter.close()
    height, width = image.shape[:2]
    assert i420.shape == (height * 3 // 2, width)
    out = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    person = cv2.erode(truth.view(np.uint8), np.ones((9, 9), np.uint8)) > 0
    background = cv2.dilate(truth.view(np.uint8), np.ones((61, 61), np.uint8)) == 0
    assert laplacian_variance(out, background) < 0.3 * laplacian_variance(image, background)
    assert np.abs(out[person].astype(int) - image[person].astype(int)).mean() < 12


@pytest.mark.parametrize("module", ["bench.naive_reference", "bench.lfbw_reference"])
def test_reference_runs_on_the_benchmarks_real_footage(module, tmp_path):
    env = cli_env(XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=str(REPO))
    args = ["--width", "320", "--height", "180", "--frames", "3"]
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["input"].startswith("MJPEG ") and (figures["width"], figures["height"]) == (320, 180)
    assert figures["frames"] == 3 and figures["cpu_ms_per_frame"] > 0
