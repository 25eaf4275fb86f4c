"""Choosing the user among several people: pure logic on boxes, masks and blobs."""

from __future__ import annotations

import numpy as np
import pytest

from privacycam.segmenters.people import (
    FORGET_AFTER_MISSES,
    MainPersonState,
    box_iou,
    choose_main,
    keep_main_person,
    prominence,
    select_main_instance,
)

H, W = 144, 256


def blob(x0: int, y0: int, x1: int, y1: int, value: float = 1.0) -> np.ndarray:
    alpha = np.zeros((H, W), dtype=np.float32)
    alpha[y0:y1, x0:x1] = value
    return alpha


def test_bigger_wins_and_at_equal_size_the_central_one() -> None:
    boxes = np.array([[0.0, 0.2, 0.3, 1.0], [0.35, 0.2, 0.65, 1.0]])
    scores = prominence(boxes, np.array([0.2, 0.2]))
    assert scores[1] > scores[0]
    assert prominence(boxes, np.array([0.5, 0.2]))[0] > prominence(boxes, np.array([0.5, 0.2]))[1]


def test_box_iou() -> None:
    boxes = np.array([[0, 0, 1, 1], [0.5, 0, 1.5, 1], [2, 2, 3, 3]], dtype=float)
    np.testing.assert_allclose(box_iou(boxes, np.array([0, 0, 1, 1.0])), [1.0, 1 / 3, 0.0])


def test_choice_sticks_until_someone_is_twice_as_prominent() -> None:
    state = MainPersonState()
    user, other = np.array([0.3, 0.2, 0.6, 1.0]), np.array([0.62, 0.2, 0.95, 1.0])
    boxes = np.stack([user, other])
    assert choose_main(boxes, np.array([0.20, 0.15]), state) == 0
    # The other person grows (walks closer) to 1.5x the user's prominence: the user stays.
    assert choose_main(boxes, np.array([0.20, 0.35]), state) == 0
    # ... and the choice does not flip back and forth on small changes.
    assert choose_main(boxes, np.array([0.20, 0.30]), state) == 0
    # Far more prominent than the user: takes over.
    assert choose_main(boxes, np.array([0.10, 0.60]), state) == 1


def test_user_reclaimed_after_a_missed_frame_and_forgotten_after_many() -> None:
    state = MainPersonState()
    boxes = np.array([[0.3, 0.2, 0.6, 1.0]])
    assert choose_main(boxes, np.array([0.2]), state) == 0
    assert choose_main(np.zeros((0, 4)), np.zeros(0), state) is None
    assert state.box is not None
    for _ in range(FORGET_AFTER_MISSES):
        choose_main(np.zeros((0, 4)), np.zeros(0), state)
    assert state.box is None


def test_select_main_instance_prefers_big_central_person_and_uses_confidence() -> None:
    masks = np.stack([blob(10, 60, 50, 144), blob(90, 20, 170, 144)])
    boxes = np.array([[10, 60, 50, 144], [90, 20, 170, 144]], dtype=float)
    assert select_main_instance(boxes, masks, np.array([0.99, 0.9]), MainPersonState()) == 1
    # A barely detected "person" does not win on size alone.
    assert select_main_instance(boxes, masks, np.array([0.99, 0.05]), MainPersonState()) == 0
    assert select_main_instance(np.zeros((0, 4)), np.zeros((0, H, W)), np.zeros(0), MainPersonState()) is None


def test_keep_main_person_hides_the_bystander() -> None:
    user = blob(90, 20, 170, 144)
    bystander = blob(200, 70, 240, 144, 0.9)
    out = keep_main_person(user + bystander, MainPersonState())
    assert out.dtype == np.float32 and out.shape == (H, W)
    np.testing.assert_array_equal(out[user > 0], 1.0)
    assert out[bystander > 0].max() == 0.0


def test_keep_main_person_keeps_soft_edge_and_thin_gaps_and_never_adds() -> None:
    # At 144 px high, blobs up to 4 px apart are one, and 2 px of soft edge are kept.
    alpha = blob(90, 40, 170, 144)
    alpha[38:40, 90:170] = 0.3  # soft edge above the shoulders
    alpha[30:37, 120:140] = 0.8  # head, split off by a 3 px low-confidence neck
    alpha[0:10, 0:20] = 0.2  # far-away noise below the threshold
    alpha[60:100, 0:10] = 0.9  # a bystander's arm at the edge
    out = keep_main_person(alpha, MainPersonState())
    np.testing.assert_array_equal(out[30:144, 90:170], alpha[30:144, 90:170])
    assert out[0:10, 0:20].max() == 0.0 and out[60:100, 0:10].max() == 0.0
    assert (out <= alpha).all()


def test_keep_main_person_is_persistent_between_frames() -> None:
    state = MainPersonState()
    left, right = blob(40, 30, 110, 144), blob(150, 30, 220, 144)
    first = keep_main_person(left + right * 0.9 + blob(40, 20, 110, 30), state)  # left slightly bigger
    assert first[60, 70] > 0 and first[60, 180] == 0
    second = keep_main_person(left + right + blob(150, 20, 220, 30), state)  # now right slightly bigger
    assert second[60, 70] > 0 and second[60, 180] == 0


@pytest.mark.parametrize("value", [0.0, 0.4])
def test_keep_main_person_with_nobody(value: float) -> None:
    out = keep_main_person(np.full((H, W), value, dtype=np.float32), MainPersonState())
    assert out.dtype == np.float32 and not out.any()
