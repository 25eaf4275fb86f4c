"""bench/webcam.py: the webcam-framed benchmark's composites and its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from conftest import sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import quality, webcam  # noqa: E402


def test_composites_are_webcam_framed_moving_and_their_truth_is_exact():
    for name in ("lucia", "tennis"):
        sequence(f"davis2016_{name}")
    sequences = quality.find_sequences(quality.DEFAULT_DATA, ["lucia", "tennis"])
    named = webcam.composited_sequences(sequences, 30)
    assert [name for name, _, _ in named] == ["lucia-over-tennis", "tennis-over-lucia"]
    for _, frames, truths in named:
        assert frames[0].shape == (720, 1280, 3)
        shares = [float((truth > 0).mean()) for truth in truths]
        assert min(shares) > 0.1 and max(shares) < 0.6, shares
        for truth in truths:
            rows = np.flatnonzero(truth.any(axis=1))
            assert rows[-1] == 719  # cut by the bottom edge, like a webcam user
        assert set(np.unique(truths[0])) == {0, 255}
        centres = [np.flatnonzero(truth.any(axis=0)).mean() for truth in truths]
        assert max(centres) - min(centres) > 0.05 * 1280  # they sway


def test_benchmark_prints_both_sets_with_the_crop_edge_and_block_counts(capsys):
    for name in ("lucia", "tennis"):
        sequence(f"davis2016_{name}")
    assert webcam.main(["--sequences", "lucia,tennis", "--max-frames", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"composited", "framed"}
    assert set(result["framed"]["sequences"]) == {"lucia", "tennis"}
    for part in ("composited", "framed"):
        for row in ("pipeline", "raw"):
            figures = result[part]["mean"][row]
            assert {"J", "F", "flicker", "leak", "cut", "straight_edge_frames", "sharp_block_frames"} <= set(figures)
            assert 0.0 <= figures["J"] <= 1.0
            assert isinstance(figures["straight_edge_frames"], int)
