"""Mask post-processing: from a segmenter's raw confidence to a stable, soft matte.

PROTOTYPE (being measured).
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from privacycam.config import MaskConfig
from privacycam.roi import Box, RoiPlan, RoiSettings, RoiTracker
from privacycam.segmenters.base import Segmenter, checked_mask


class AgreementSmoother:
    """EMA whose speed depends on how much the new matte disagrees with the state."""

    def __init__(self, keep: float, motion_threshold: float) -> None:
        self.keep = keep
        self.motion_threshold = motion_threshold
        self._state: np.ndarray | None = None
        self._diff: np.ndarray | None = None
        self._weight: np.ndarray | None = None

    def update(self, alpha: np.ndarray) -> np.ndarray:
        if self._state is None or self._state.shape != alpha.shape or self.keep <= 0:
            self._state = alpha.astype(np.float32, copy=True)
            self._diff = np.empty_like(self._state)
            self._weight = np.empty_like(self._state)
            return self._state
        diff, weight = self._diff, self._weight
        np.subtract(alpha, self._state, out=diff)
        np.abs(diff, out=weight)
        # weight: (1 - keep) where |d| small, 1 where |d| >= motion_threshold
        np.multiply(weight, 1.0 / self.motion_threshold, out=weight)
        np.minimum(weight, 1.0, out=weight)
        np.multiply(weight, self.keep, out=weight)
        np.add(weight, 1.0 - self.keep, out=weight)
        np.multiply(diff, weight, out=diff)
        np.add(self._state, diff, out=self._state)
        return self._state

    def reset(self) -> None:
        self._state = None


class Matter:
    """frame (BGR uint8, any size) -> person alpha (float32 [0,1], work size)."""

    def __init__(self, segmenter: Segmenter, config: MaskConfig) -> None:
        self.segmenter = segmenter
        self.config = config
        self._smoother = AgreementSmoother(config.smoothing, config.motion_threshold)
        self.last_segment_ms = 0.0
        self._frame_size: tuple[int, int] | None = None
        width, height = segmenter.input_size
        self._model_bgr = np.empty((height, width, 3), np.uint8)
        self._model_rgb = np.empty((height, width, 3), np.uint8)
        self._timestamp = 0

    def _prepare(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if self._frame_size == (width, height):
            return
        self._frame_size = (width, height)
        work_h = min(height, self.config.resolution)
        work_w = max(1, round(width * work_h / height))
        self._work_size = (work_w, work_h)
        self._to_frame = (width / work_w, height / work_h)
        self._raw = np.zeros((work_h, work_w), np.float32)
        self._full = np.zeros((work_h, work_w), np.float32)
        self._refined = np.zeros((work_h, work_w), np.float32)
        self._work_bgr = np.empty((work_h, work_w, 3), np.uint8)
        self._guide_u8 = np.empty((work_h, work_w), np.uint8)
        self._guide = np.empty((work_h, work_w), np.float32)
        self._person_u8 = np.empty((work_h, work_w), np.uint8)
        self._out = np.empty((work_h, work_w), np.float32)
        model_w, model_h = self.segmenter.input_size
        settings = RoiSettings(
            margin=self.config.roi_margin,
            full_frame_every=self.config.roi_full_frame_every,
            whole_frame_above=self.config.roi_whole_frame_above,
            min_height=self.config.roi_min_height,
            min_area=self.config.roi_min_area,
        )
        self._tracker = RoiTracker(self._work_size, model_w / model_h if self.config.roi_keep_aspect else 0.0, settings)
        self._smoother.reset()

    def alpha_for(self, frame: np.ndarray, timestamp_ms: int) -> np.ndarray:
        self._prepare(frame)
        self.last_segment_ms = 0.0
        cv2.resize(frame, self._work_size, dst=self._work_bgr, interpolation=cv2.INTER_AREA)
        self._timestamp = timestamp_ms
        whole = Box(0, 0, *self._work_size)
        plan = self._tracker.plan() if self.config.region_of_interest else RoiPlan(whole, True, True)
        raw = self._raw
        found = None
        if plan.whole_frame:
            self._segment_into(frame, whole, raw)
        elif plan.full_pass and self.config.roi_detect_only:
            self._segment_into(frame, whole, self._full)
            b = plan.box
            self._full[b.y0 : b.y1, b.x0 : b.x1] = 0.0
            found = self._tracker.people_box(cv2.compare(self._full, self.config.roi_detect_threshold, cv2.CMP_GE))
            raw.fill(0.0)
        elif plan.full_pass:
            self._segment_into(frame, whole, raw)
        else:
            raw.fill(0.0)
        if not plan.whole_frame:
            tiles = self._tiles(plan)
            if tiles:
                for t in tiles:
                    self._segment_into(frame, t, self._full)
                    v = (slice(t.y0, t.y1), slice(t.x0, t.x1))
                    np.maximum(raw[v], self._full[v], out=raw[v])
            else:
                self._segment_into(frame, plan.box, raw)
            if not plan.full_pass:
                view = raw[plan.box.y0 : plan.box.y1, plan.box.x0 : plan.box.x1]
                person = cv2.compare(view, 0.5, cv2.CMP_GE)
                if self._tracker.lost(person):
                    self._segment_into(frame, whole, raw)
                    plan = RoiPlan(whole, True, True)
        if self.config.conf_center != 0.5 or self.config.conf_gain != 1.0:
            np.subtract(raw, self.config.conf_center, out=raw)
            np.multiply(raw, self.config.conf_gain, out=raw)
            np.add(raw, 0.5, out=raw)
        np.clip(raw, 0.0, 1.0, out=raw)
        alpha = raw
        if self.config.refine_edges:
            alpha = self._refine(frame, plan.box, raw)
        state = self._smoother.update(alpha)
        cv2.compare(state, 0.5, cv2.CMP_GE, dst=self._person_u8)
        if self.config.region_of_interest:
            self._tracker.observe(self._person_u8, plan, found)
        sigma = self.config.feather * self._work_size[1]
        if sigma < 0.3:
            np.copyto(self._out, state)
        else:
            cv2.GaussianBlur(state, (0, 0), sigma, dst=self._out)
        return self._out

    def _tiles(self, plan):
        from privacycam.roi import _placed
        p = self._tracker._people
        if self.config.tiles < 2 or p is None or p.height < 1.3 * p.width:
            return None
        m = self.config.roi_margin * p.height
        y0, y1 = p.y0 - m, p.y1 + m
        side = round(self.config.tile_overlap * (y1 - y0))
        cx = (p.x0 + p.x1) / 2
        W, H = self._work_size
        side = min(side, H, W)
        return [_placed(cx, y0 + side / 2, side, side, W, H), _placed(cx, y1 - side / 2, side, side, W, H)]

    def _segment_into(self, frame: np.ndarray, box: Box, canvas: np.ndarray) -> None:
        fx, fy = self._to_frame
        frame_box = box.scaled(fx, fy)
        crop = frame[frame_box.y0 : frame_box.y1, frame_box.x0 : frame_box.x1]
        model_w, model_h = self.segmenter.input_size
        mode = self.config.resize_mode
        if mode == "area":
            shrink = crop.shape[1] > model_w or crop.shape[0] > model_h
            cv2.resize(
                crop,
                (model_w, model_h),
                dst=self._model_bgr,
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
            )
        elif mode == "linear":
            cv2.resize(crop, (model_w, model_h), dst=self._model_bgr, interpolation=cv2.INTER_LINEAR)
        else:
            if crop.shape[0] > 2 * model_h:
                crop = self._work_bgr[box.y0 : box.y1, box.x0 : box.x1]
            cv2.resize(crop, (model_w, model_h), dst=self._model_bgr, interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(self._model_bgr, cv2.COLOR_BGR2RGB, dst=self._model_rgb)
        started = time.perf_counter()
        self._timestamp += 1
        conf = self.segmenter.segment(self._model_rgb, self._timestamp)
        self.last_segment_ms += (time.perf_counter() - started) * 1000
        conf = checked_mask(conf, model_h, model_w)
        if self.config.tta_flip:
            conf = conf.copy()
            flipped = np.ascontiguousarray(self._model_rgb[:, ::-1])
            conf2 = self.segmenter.segment(flipped, self._timestamp + 1)
            self._timestamp += 1
            conf = 0.5 * (conf + conf2[:, ::-1])
        view = canvas[box.y0 : box.y1, box.x0 : box.x1]
        grow = box.width > model_w or box.height > model_h
        cv2.resize(conf, (box.width, box.height), dst=view, interpolation=cv2.INTER_LINEAR if grow else cv2.INTER_AREA)

    def _refine(self, frame: np.ndarray, box: Box, raw: np.ndarray) -> np.ndarray:
        np.copyto(self._refined, raw)
        ys, xs = slice(box.y0, box.y1), slice(box.x0, box.x1)
        radius = max(1, round(self.config.refine_radius * self._work_size[1]))
        mode = self.config.refine_mode
        src = raw[ys, xs]
        if mode == "gray":
            cv2.cvtColor(self._work_bgr, cv2.COLOR_BGR2GRAY, dst=self._guide_u8)
            np.multiply(self._guide_u8, 1.0 / 255.0, out=self._guide, casting="unsafe")
            refined = cv2.ximgproc.guidedFilter(self._guide[ys, xs], src, radius, self.config.refine_eps)
        elif mode == "color":
            guide = self._work_bgr[ys, xs].astype(np.float32) * (1 / 255)
            refined = cv2.ximgproc.guidedFilter(guide, src, radius, self.config.refine_eps)
        elif mode == "colormodel":
            refined = color_posterior(self._work_bgr[ys, xs], src)
        np.clip(refined, 0.0, 1.0, out=refined)
        if self.config.refine_uncertain_only:
            certainty = np.abs(src * 2.0 - 1.0)
            if self.config.refine_certainty_power != 1.0:
                certainty = certainty**self.config.refine_certainty_power
            refined = refined + certainty * (src - refined)
        self._refined[ys, xs] = refined
        return self._refined

    def reset(self) -> None:
        """Forget temporal state (e.g. after a camera reconnect or a scene cut)."""
        self._smoother.reset()
        if self._frame_size is not None:
            self._tracker.reset()

    def close(self) -> None:
        self.segmenter.close()


def upsample_alpha(alpha: np.ndarray, width: int, height: int, dst: np.ndarray | None = None) -> np.ndarray:
    """float [0,1] matte at work size -> uint8 (255 = person) at frame size.

    Quantised at the small size first so the full-size step is a cheap uint8 resize.
    """
    small = cv2.convertScaleAbs(alpha, alpha=255.0)
    return cv2.resize(small, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)


def color_posterior(bgr: np.ndarray, alpha: np.ndarray, bins: int = 16) -> np.ndarray:
    fg = cv2.compare(alpha, 0.9, cv2.CMP_GT)
    bg = cv2.compare(alpha, 0.1, cv2.CMP_LT)
    ranges = [0, 256, 0, 256, 0, 256]
    hf = cv2.calcHist([bgr], [0, 1, 2], fg, [bins] * 3, ranges)
    hb = cv2.calcHist([bgr], [0, 1, 2], bg, [bins] * 3, ranges)
    hf /= max(1.0, float(hf.sum()))
    hb /= max(1.0, float(hb.sum()))
    post = (hf + 1e-4) / (hf + hb + 2e-4)
    out = cv2.calcBackProject([bgr.astype(np.float32)], [0, 1, 2], post, ranges, 1.0)
    return out
