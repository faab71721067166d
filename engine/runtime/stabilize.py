"""Steady masks on video: a pixel changes class on clear evidence, or on weak evidence
that persists, judged where the pixel was a frame ago.

Segmenting each frame on its own makes class borders shimmer and small blobs flash:
5.7% of the pixels of the demo drive change class from one frame to the next (Slim,
after following the motion; `rtformer flicker`). `MaskStabilizer` carries the previous
frame's labels along the motion to the new frame and keeps them unless the evidence
against them is strong enough. The evidence a frame gives against a held class is how
far its logit falls short of the best one (the log of how many times likelier the new
frame finds its favourite); it adds up over consecutive frames that disagree, each
earlier frame counting `memory` times as much as the next, and the pixel takes the new
frame's class once the sum reaches `margin`. So a clear change (a car driving into
view, the road reappearing behind it) passes at once, nothing trails and no frame of
delay is added; a weak but steady change passes after a few frames; only evidence that
comes and goes, the flicker, is held back.

Per frame, at the model's input size (h, w):
1. motion: DIS optical flow (OpenCV, ultrafast preset) from the new frame back to the
   previous one, on the grey model input at half size;
2. carry: the previous steady labels and their doubt (the evidence summed so far)
   moved along it (nearest neighbour; pixels that come from outside the frame have no
   past and take the new labels);
3. cut: when the previous grey frame, moved the same way, still differs from the new one
   by more than `cut_difference` grey levels on average, the scene has changed (a cut, a
   jump): the stabilizer starts afresh and the frame's own labels stand;
4. hysteresis: where the carried label is not the new argmax, doubt = memory * doubt +
   (best logit - its logit); keep it while doubt < `margin`. Where the new frame agrees
   with the held label the doubt goes back to 0: evidence counts only while it lasts.

A new source, a seek, a loop or a model switch is the caller's to signal (`reset`); a
change of frame size resets by itself. Chosen by measurement (BENCHMARKS.md, "Steady
masks"): against an EMA of warped logits (similar flicker, twice the cost: 11 channels
to warp), against no motion compensation (half the gain) and against a plain margin
without memory (3 points more flicker removed, but 0.13 points less agreement with the
Cityscapes teacher on the demo drive: weak steady changes were held too long).
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
    """margin: summed evidence (logits; a likelihood ratio of e^margin) that replaces a
    held class. memory: the weight of each earlier frame's evidence relative to the next
    (0: the latest frame alone decides). Measured on three clips, both variants
    (BENCHMARKS.md): margin 0.75 with memory 0.5 removes 44-68% of the flicker and keeps
    the agreement with the teacher within 0.05 points of per-frame labels; memory 0
    removes 1-3 points more and loses up to 0.13; margin 0.5 keeps agreement too but
    removes only 39% on CamVid footage with Base.
    flow_scale, flow_finest_scale, flow_patch_stride: the flow runs on the model input
    shrunk by flow_scale, down to pyramid level flow_finest_scale, with DIS patches every
    flow_patch_stride pixels. At 352x480 on 2 cores: 2, 1 and 6 cost 0.55 ms; stride 5
    (the preset) 0.64 ms for 0-1 point more flicker removed, 7 0.45 ms for 1-2 points less;
    full size at level 2 1.11 ms for the same flicker; level 2 at half size 0.25 ms and
    5-9 points less.
    cut_difference: mean grey-level difference after motion compensation that marks a
    cut. Consecutive frames of three clips: at most 13.4 (median 3-7); frames half a
    second or more apart, or of different clips: 17 and above."""

    margin: float = 0.75
    memory: float = 0.5
    flow_scale: int = 2
    flow_finest_scale: int = 1
    flow_patch_stride: int = 6
    cut_difference: float = 16.0


@dataclass
class _Past:
    grey: np.ndarray  # (h', w') uint8, the previous model input in grey at the flow's scale
    labels: np.ndarray  # (h, w) uint8, the previous steady labels
    doubt: np.ndarray  # (h, w) float32, the evidence against them summed so far


class MaskStabilizer:
    """Steady labels for consecutive frames of one video; one per stream of frames, fed
    in order. Not thread-safe. It keeps no reference to the arrays it is given (a backend
    may lend its own buffers). `last_ms` is the cost of the latest call and `cuts` counts
    the scene changes it found."""

    def __init__(self, config: StabilizerConfig | None = None) -> None:
        self.config = config or StabilizerConfig()
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._flow.setFinestScale(self.config.flow_finest_scale)
        self._flow.setPatchStride(self.config.flow_patch_stride)
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
            steady, doubt = labels.copy(), np.zeros(labels.shape, np.float32)
        else:
            steady, doubt = self._steady(past, grey, logits, labels)
        self._past = _Past(grey, steady, doubt)
        self.last_ms = (time.perf_counter() - started) * 1e3
        return steady

    def _grey(self, image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        scale = self.config.flow_scale
        if scale == 1:
            return grey
        size = (grey.shape[1] // scale, grey.shape[0] // scale)
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    def _steady(
        self, past: _Past, grey: np.ndarray, logits: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        flow = self._flow.calc(grey, past.grey, None)  # new frame -> where it was, at the flow's scale
        if self._is_cut(past.grey, grey, flow):
            self.cuts += 1
            return labels.copy(), np.zeros(labels.shape, np.float32)
        where_from = self._where_from(flow, labels.shape)
        carried = cv2.remap(
            past.labels,
            where_from,
            None,
            cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=NO_PAST,
        )
        doubt = cv2.remap(past.doubt, where_from, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        return hold_unless_clear(logits, labels, carried, doubt, self.config)

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
    logits: np.ndarray, labels: np.ndarray, carried: np.ndarray, doubt: np.ndarray, config: StabilizerConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The hysteresis. logits (C, h, w); labels (h, w) uint8, their argmax; carried (h, w)
    uint8, the labels held (NO_PAST where none); doubt (h, w) float32, the evidence
    against them summed over the frames before. Where the two labels differ, doubt =
    memory * doubt + this frame's evidence (best logit - the held class's); the held label
    stays while that is below `margin`, else the new label takes over. Returns new arrays
    (steady labels, doubt); doubt is 0 wherever this frame agrees with the held label.

    Only pixels whose two labels differ (about 5% on the demo drive) are looked at: 0.3 ms
    instead of 1.0 for all of them. `labels` must be the argmax of `logits`."""
    steady, summed = labels.copy(), np.zeros(labels.shape, np.float32)
    differ = np.flatnonzero((carried != labels) & (carried != NO_PAST))
    if differ.size == 0:
        return steady, summed
    # Two logits a pixel, the best (its label's) and the held class's, read straight from
    # the flat array: 0.25 ms less than all C of them, cold from the backend.
    flat, plane = logits.reshape(-1), labels.size
    was = carried.ravel()[differ]
    best = flat[labels.ravel()[differ].astype(np.intp) * plane + differ]
    evidence = best - flat[was.astype(np.intp) * plane + differ]
    against = doubt.ravel()[differ] * np.float32(config.memory) + evidence
    keep = against < np.float32(config.margin)
    steady.ravel()[differ[keep]] = was[keep]
    summed.ravel()[differ[keep]] = against[keep]
    return steady, summed
