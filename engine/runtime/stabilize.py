"""Steady masks on video: a label may change class only on clear evidence, judged where
the pixel was a frame ago.

Segmenting each frame on its own makes class borders shimmer and small blobs flash:
6% of the pixels of the demo drive change class from one frame to the next (Slim,
after following the motion; `rtformer flicker`). `MaskStabilizer` carries the previous
frame's labels along the motion to the new frame and keeps them where the new frame's
own evidence for them is close to its best: a pixel changes class only when the new
class beats the one it held by `margin` in the logits, that is, when the new frame
finds it e^margin times as likely. Clear changes (a car driving into view, the road
reappearing behind it) pass at once, so nothing trails and no frame of delay is added;
only undecided pixels, the ones that flicker, keep what they were.

Per frame, at the model's input size (h, w):
1. motion: DIS optical flow (OpenCV, ultrafast preset) from the new frame back to the
   previous one, on the grey model input;
2. carry: the previous steady labels moved along it (nearest neighbour; pixels that
   come from outside the frame have no past and take the new labels);
3. cut: when the previous grey frame, moved the same way, still differs from the new one
   by more than `cut_difference` grey levels on average, the scene has changed (a cut, a
   jump): the stabilizer starts afresh and the frame's own labels stand;
4. hysteresis: keep the carried label where best logit - its logit < `margin`.

A new source, a seek, a loop or a model switch is the caller's to signal (`reset`); a
change of frame size resets by itself. Chosen by measurement on the demo drive
(BENCHMARKS.md, "Steady masks"): against an EMA of warped logits (similar flicker, twice
the cost: 11 channels to warp) and against no motion compensation (half the gain).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

NO_PAST = 255  # carried label of a pixel that came from outside the frame
CUT_STEP = 4  # the cut test looks at every 4th pixel of the flow's grid, each way


@dataclass(frozen=True)
class StabilizerConfig:
    """margin: logits (a likelihood ratio of e^margin) a new class must win by to replace
    the carried one. Demo drive, Slim, first 200 frames: 0.5 cuts flicker by 61%, 0.75
    by 71%, 1.0 by 76%; agreement with the Cityscapes teacher holds up to 0.75 and falls
    beyond it (BENCHMARKS.md).
    flow_scale: the flow is computed on the model input shrunk by this factor (1: full
    size, 1.1 ms at 352x480 on 2 cores; 2: 0.25 ms, 5 points less flicker removed).
    cut_difference: mean grey-level difference after motion compensation that marks a
    cut. Consecutive frames of three clips: at most 13.4 (median 3-7); frames half a
    second or more apart, or of different clips: 17 and above."""

    margin: float = 0.75
    flow_scale: int = 2
    flow_finest_scale: int = 1
    cut_difference: float = 16.0


@dataclass
class _Past:
    grey: np.ndarray  # (h', w') uint8, the previous model input in grey at the flow's scale
    labels: np.ndarray  # (h, w) uint8, the previous steady labels


class MaskStabilizer:
    """Steady labels for consecutive frames of one video; one per stream of frames, fed
    in order. Not thread-safe. `last_ms` is the cost of the latest call and `cuts` counts
    the scene changes it found."""

    def __init__(self, config: StabilizerConfig | None = None) -> None:
        self.config = config or StabilizerConfig()
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._flow.setFinestScale(self.config.flow_finest_scale)
        self._past: _Past | None = None
        self._grids: dict[tuple[int, int, float], np.ndarray] = {}
        self.last_ms = 0.0
        self.cuts = 0

    def reset(self) -> None:
        """Forget the past: the next frame's own labels stand (a new source, a seek, a
        new model)."""
        self._past = None

    def __call__(self, image: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """image: the model's input, BGR uint8 (h, w, 3); logits: (C, h, w) float, the
        model's output for it; labels: (h, w) uint8, their argmax -> steady labels
        (h, w) uint8 (a new array; `labels` is not changed)."""
        started = time.perf_counter()
        grey = self._grey(image)
        past = self._past
        if past is None or past.labels.shape != labels.shape or past.grey.shape != grey.shape:
            steady = labels.copy()
        else:
            steady = self._steady(past, grey, logits, labels)
        self._past = _Past(grey, steady)
        self.last_ms = (time.perf_counter() - started) * 1e3
        return steady

    def _grey(self, image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        scale = self.config.flow_scale
        if scale == 1:
            return grey
        size = (grey.shape[1] // scale, grey.shape[0] // scale)
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    def _steady(self, past: _Past, grey: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        flow = self._flow.calc(grey, past.grey, None)  # new frame -> where it was, at the flow's scale
        if self._is_cut(past.grey, grey, flow):
            self.cuts += 1
            return labels.copy()
        carried = cv2.remap(
            past.labels,
            self._where_from(flow, labels.shape),
            None,
            cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=NO_PAST,
        )
        return hold_unless_clear(logits, labels, carried, self.config.margin)

    def _where_from(self, flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """remap's map, (h, w, 2) float32 (x, y) at `size` (h, w): where each pixel of the
        new frame was in the previous one. Built at the flow's scale, in full-size
        coordinates, and then resized: a map is linear where the flow is, and this costs a
        third of resizing the flow first (0.15 against 0.5 ms at 352x480)."""
        height, width = size
        scale = width / flow.shape[1]
        where_from = cv2.scaleAdd(flow, scale, self._grid(flow.shape[:2], scale))
        if where_from.shape[:2] == size:
            return where_from
        where_from = cv2.resize(where_from, (width, height), interpolation=cv2.INTER_LINEAR)
        # The outermost pixels lie beyond the first and last centres of the small map, where
        # resize holds the edge value: put them back where they are.
        offset = (scale - 1) / 2
        for band in range(int(np.ceil(offset))):
            for axis, rows in ((0, np.s_[:, band]), (1, np.s_[band, :])):
                where_from[rows][..., axis] -= offset - band
            for axis, rows in ((0, np.s_[:, -1 - band]), (1, np.s_[-1 - band, :])):
                where_from[rows][..., axis] += offset - band
        return where_from

    def _grid(self, size: tuple[int, int], scale: float = 1.0) -> np.ndarray:
        """(h, w, 2) float32: each pixel's own (x, y), in the coordinates of an image `scale`
        times larger (the centre of pixel u there is at scale * (u + 0.5) - 0.5)."""
        key = (*size, scale)
        if key not in self._grids:
            height, width = size
            offset = (scale - 1) / 2
            grid_x, grid_y = np.meshgrid(
                np.arange(width, dtype=np.float32) * scale + offset,
                np.arange(height, dtype=np.float32) * scale + offset,
            )
            self._grids[key] = np.dstack([grid_x, grid_y])
        return self._grids[key]

    def _is_cut(self, previous: np.ndarray, grey: np.ndarray, flow: np.ndarray) -> bool:
        """Whether the previous frame, moved along `flow`, still differs from the new one by
        more than `cut_difference` grey levels on average; judged on every CUT_STEP-th pixel
        (0.05 ms instead of 0.65 at full size: a mean needs no more)."""
        flow = np.ascontiguousarray(flow[::CUT_STEP, ::CUT_STEP])
        where_from = cv2.scaleAdd(self._grid(flow.shape[:2]), CUT_STEP, flow)
        moved = cv2.remap(previous, where_from, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return float(cv2.absdiff(moved, grey[::CUT_STEP, ::CUT_STEP]).mean()) > self.config.cut_difference


def hold_unless_clear(
    logits: np.ndarray, labels: np.ndarray, carried: np.ndarray, margin: float
) -> np.ndarray:
    """The hysteresis: `carried` (h, w) uint8 labels (NO_PAST where none) where the best of
    `logits` (C, h, w) beats the carried class's logit by less than `margin`, else
    `labels` (h, w) uint8, the logits' argmax. Only pixels whose two labels differ
    (about 5% on the demo drive) are looked at: 0.3 ms instead of 1.0 over all of them."""
    steady = labels.copy()
    differ = np.flatnonzero((carried != labels) & (carried != NO_PAST))
    if differ.size == 0:
        return steady
    # np.take keeps (C, n) C-ordered; fancy indexing gives it F-ordered, and the max over
    # the classes then took 0.85 ms instead of 0.02.
    scores = np.take(logits.reshape(logits.shape[0], -1), differ, axis=1)
    was = carried.ravel()[differ]
    held = scores[was, np.arange(differ.size)]
    keep = held > scores.max(axis=0) - np.float32(margin)
    steady.ravel()[differ[keep]] = was[keep]
    return steady
