from __future__ import annotations

import cv2
import numpy as np
import pytest

from privacycam.compositing import Compositor, _person_box, cover, load_background_image
from privacycam.config import BackgroundConfig
from privacycam.mask import upsample_alpha, upscale_into


def _scene(width=640, height=360):
    """Grey textured room, a saturated red 'person' disc, and its soft alpha at 1/4 size."""
    rng = np.random.default_rng(1)
    frame = rng.integers(90, 130, (height, width, 3), dtype=np.uint8)
    person = np.zeros((height, width), np.uint8)
    cv2.circle(person, (width // 2, height // 2), height // 4, 255, -1)
    frame[person > 0] = (0, 0, 255)
    small = cv2.resize(person, (width // 4, height // 4), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return frame, person > 0, cv2.GaussianBlur(small, (0, 0), 1.0)


def test_colour_mode_blends_exactly_by_alpha():
    frame, _, alpha = _scene()
    compositor = Compositor(BackgroundConfig(mode="color", color=(0, 255, 0)))
    out = compositor.compose(frame, alpha).astype(np.float32)
    a = upsample_alpha(alpha, 640, 360).astype(np.float32)[..., None] / 255
    expected = frame * a + np.array([0, 255, 0], np.float32) * (1 - a)
    assert np.abs(out - expected).max() <= 2.0  # the box-only upsample may differ by one grey level


def test_blur_keeps_person_and_hides_background_detail():
    frame, person, alpha = _scene()
    out = Compositor(BackgroundConfig()).compose(frame, alpha)
    inner = cv2.erode(person.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0  # past the soft edge
    assert np.abs(out[inner].astype(int) - frame[inner]).max() <= 2
    far = cv2.dilate(person.astype(np.uint8), np.ones((61, 61), np.uint8)) == 0
    assert out[far].std() < 0.3 * frame[far].std()


def test_blur_is_halo_free():
    """The red person must not bleed into the blurred background around it."""
    frame, person, alpha = _scene()
    out = Compositor(BackgroundConfig(blur_strength=30)).compose(frame, alpha)
    near = (cv2.dilate(person.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0) & ~(
        cv2.dilate(person.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
    )
    redness = out[near][:, 2].astype(int) - out[near][:, 1]
    naive = cv2.GaussianBlur(frame, (0, 0), 30 * 360 / 720)[near]
    naive_redness = naive[:, 2].astype(int) - naive[:, 1]
    assert redness.mean() < 10 < naive_redness.mean()


def test_no_person_means_background_only():
    frame, _, alpha = _scene()
    compositor = Compositor(BackgroundConfig())
    nothing = compositor.compose(frame, np.zeros_like(alpha)).copy()
    hidden = compositor.compose_hidden(frame)
    assert np.abs(nothing.astype(int) - hidden).max() <= 1


@pytest.mark.parametrize("size", [(641, 479), (1, 1), (17, 3), (3840, 2160)])
def test_odd_and_extreme_frame_sizes(size):
    width, height = size
    frame = np.full((height, width, 3), 100, np.uint8)
    alpha = np.ones((max(1, height // 4), max(1, width // 4)), np.float32)
    for mode in ("blur", "color"):
        compositor = Compositor(BackgroundConfig(mode=mode))
        assert compositor.compose(frame, alpha).shape == frame.shape
        assert compositor.compose_hidden(frame).shape == frame.shape


@pytest.mark.parametrize(
    "image",
    [
        np.full((50, 80), 128, np.uint8),  # grey
        np.full((50, 80, 3), 40000, np.uint16),  # 16-bit
        np.full((50, 80, 4), 200, np.uint8),  # with alpha channel
        np.full((1, 1, 3), 7, np.uint8),  # tiny
    ],
)
def test_background_images_of_any_kind_become_bgr(tmp_path, image):
    path = tmp_path / "bg.png"
    cv2.imwrite(str(path), image)
    loaded = load_background_image(path)
    assert loaded.dtype == np.uint8 and loaded.ndim == 3 and loaded.shape[2] == 3
    covered = cover(loaded, 640, 360)
    assert covered.shape == (360, 640, 3)


def test_cover_crops_instead_of_stretching():
    tall = np.zeros((400, 100, 3), np.uint8)
    tall[:100] = 255  # top quarter white
    out = cover(tall, 100, 100)
    assert out.shape == (100, 100, 3) and out.max() == 0  # the centre crop misses the white top


def test_blur_starts_from_the_mask_stages_small_copy_when_given():
    frame, person, alpha = _scene()
    work = cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA)
    own = Compositor(BackgroundConfig()).compose(frame, alpha).copy()
    shared = Compositor(BackgroundConfig()).compose(frame, alpha, work).copy()
    far = cv2.dilate(person.astype(np.uint8), np.ones((61, 61), np.uint8)) == 0
    # the same background either way ...
    assert np.abs(shared[far].astype(int) - own[far]).mean() < 2.0
    # ... and the small copy really is what gets blurred (a black one gives a black room)
    black = Compositor(BackgroundConfig()).compose(frame, alpha, np.zeros_like(work))
    assert black[far].max() <= 2
    # a copy smaller than the blur works at is not used
    tiny = Compositor(BackgroundConfig()).compose(frame, alpha, np.zeros((4, 7, 3), np.uint8))
    assert np.abs(tiny[far].astype(int) - own[far]).mean() < 0.5


@pytest.mark.parametrize("centre", [(213, 120), (20, 200), (410, 10)])
def test_blend_box_follows_the_full_frame_upsample(centre):
    """Only the person's box is upsampled; it must match upsampling the whole matte (odd 427 -> 1280 scale),
    also for a person at the frame's edge."""
    small = np.zeros((240, 427), np.float32)
    cv2.ellipse(small, centre, (60, 90), 0, 0, 360, 1.0, -1)
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    frame = np.full((720, 1280, 3), 200, np.uint8)
    out = Compositor(BackgroundConfig(mode="color", color=(0, 0, 0))).compose(frame, small)
    expected = upsample_alpha(small, 1280, 720).astype(np.float32) * (200 / 255)
    assert np.abs(out[..., 1] - expected).max() <= 2.0
    assert (out[..., 1] > 0).sum() > 0.5 * (expected > 0).sum()


@pytest.mark.parametrize(
    ("small_size", "full_size"), [((160, 90), (1280, 720)), ((107, 61), (1920, 1080)), ((427, 240), (854, 480))]
)
def test_upscale_into_matches_resize_also_for_a_region(small_size, full_size):
    rng = np.random.default_rng(3)
    small = cv2.GaussianBlur(rng.integers(0, 255, (*small_size[::-1], 3), np.uint8), (0, 0), 1.5)
    expected = cv2.resize(small, full_size, interpolation=cv2.INTER_LINEAR).astype(int)
    whole = np.zeros((*full_size[::-1], 3), np.uint8)
    upscale_into(small, whole, full_size)
    assert np.abs(whole - expected).max() <= 1
    region = np.zeros((full_size[1] // 3, full_size[0] // 4, 3), np.uint8)
    x0, y0 = full_size[0] - region.shape[1], full_size[1] // 2  # reaches the right edge
    upscale_into(small, region, full_size, (x0, y0))
    assert np.abs(region - expected[y0 : y0 + region.shape[0], x0:]).max() <= 1


def test_faint_confidence_around_the_person_is_left_out_of_the_blend():
    """Alpha up to 4/255 (at most 1.6 % of the sharp frame, invisible) is background: the box stays tight."""
    frame, person, alpha = _scene()
    haze = np.maximum(alpha, 3.0 / 255)  # a model's faint confidence all over the frame
    rows, cols = _person_box(haze, (640, 360))
    ys, xs = np.nonzero(person)
    assert rows.start <= ys.min() and rows.stop > ys.max() and cols.start <= xs.min() and cols.stop > xs.max()
    assert (rows.stop - rows.start) * (cols.stop - cols.start) < 0.4 * 640 * 360  # not the whole frame
    clean = Compositor(BackgroundConfig()).compose(frame, alpha).astype(int)
    hazy = Compositor(BackgroundConfig()).compose(frame, haze).astype(int)
    assert np.abs(hazy - clean).max() <= 2  # and leaving it out changes nothing one can see
