"""Flicker: how many pixels of a video change class from one frame to the next once the
motion is followed, and how far the labels agree with a reference model meanwhile.

The metric, between each pair of consecutive frames, both shrunk to
MEASURE_WIDTH pixels wide (aspect kept): OpenCV DIS optical flow (medium preset) both
ways; the previous frame's labels carried along the backward flow (nearest neighbour);
the share of pixels whose label differs, counted only inside the frame and where the
forward and backward flow agree within CONSISTENT_PX (occlusions and flow failures left
out). Per class: 1 - the IoU of the carried and the new labels for that class, the
changed share of the pixels either calls it.

`measure_video` runs a `Segmenter` once per frame and scores its labels two ways side by
side, each frame's own and the steady ones (engine.runtime.stabilize), optionally
against the Cityscapes teacher at its own 1024x512 on every n-th frame (no ghosting:
steady labels must agree with it no less than per-frame ones).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from engine.media import read_frames
from engine.runtime.segmenter import Segmenter
from engine.runtime.stabilize import MaskStabilizer

MEASURE_WIDTH = 480
CONSISTENT_PX = 1.0
NO_ANSWER = 255  # the reference's "no answer" label


@dataclass
class FlickerReport:
    flicker: float  # percent of the counted pixels whose class changed, motion followed
    class_flicker: dict[str, float | None]  # percent, per class; None where it never occurs
    counted: float  # percent of the pixels counted (flow consistent, inside the frame)
    pairs: int  # frame pairs measured
    agreement: float | None = None  # percent of the reference's labelled pixels agreeing
    judged_frames: int = 0  # frames compared with the reference

    def table(self, name: str) -> str:
        agreement = (
            "-" if self.agreement is None else f"{self.agreement:.2f} % on {self.judged_frames} frames"
        )
        return f"{name:<10} flicker {self.flicker:5.2f} %   agreement with the reference {agreement}"


class FlickerMeter:
    """Feed frames (BGR, any size) and their labels (any size, uint8) in order; `report`
    gives the figures. One meter per sequence of labels."""

    def __init__(self, num_classes: int, width: int = MEASURE_WIDTH) -> None:
        self.num_classes, self.width = num_classes, width
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self.changed = self.counted = self.pixels = self.pairs = 0
        self.class_changed = np.zeros(num_classes, np.int64)
        self.class_either = np.zeros(num_classes, np.int64)
        self.agreeing = self.judged = self.judged_frames = 0

    def add(self, frame: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> None:
        """One frame and its labels; `reference` (labels at any size, NO_ANSWER where it
        has none) scores agreement on this frame."""
        height = max(1, round(frame.shape[0] * self.width / frame.shape[1]))
        size = (self.width, height)
        grey = cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        if reference is not None:
            self._judge(labels, cv2.resize(reference, size, interpolation=cv2.INTER_NEAREST))
        if self._previous is not None and self._previous[0].shape == grey.shape:
            self._compare(*self._previous, grey, labels)
        self._previous = (grey, labels)

    def _judge(self, labels: np.ndarray, reference: np.ndarray) -> None:
        answered = reference != NO_ANSWER
        self.agreeing += int(np.count_nonzero((labels == reference) & answered))
        self.judged += int(np.count_nonzero(answered))
        self.judged_frames += 1

    def _compare(self, previous_grey, previous_labels, grey, labels) -> None:
        backward = self._flow.calc(grey, previous_grey, None)
        forward = self._flow.calc(previous_grey, grey, None)
        height, width = grey.shape
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        map_x, map_y = grid_x + backward[..., 0], grid_y + backward[..., 1]
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        forward_there = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR)
        round_trip = np.hypot(
            backward[..., 0] + forward_there[..., 0], backward[..., 1] + forward_there[..., 1]
        )
        counted = inside & (round_trip < CONSISTENT_PX)
        carried = cv2.remap(previous_labels, map_x, map_y, cv2.INTER_NEAREST)[counted].astype(np.int64)
        now = labels[counted].astype(np.int64)
        changed = carried != now
        classes = self.num_classes
        self.changed += int(changed.sum())
        self.counted += int(counted.sum())
        self.pixels += counted.size
        self.pairs += 1
        # per class: pixels either label calls it, and those of them that changed
        self.class_either += np.bincount(carried[carried < classes], minlength=classes)[:classes]
        self.class_either += np.bincount(now[changed & (now < classes)], minlength=classes)[:classes]
        self.class_changed += np.bincount(carried[changed & (carried < classes)], minlength=classes)[:classes]
        self.class_changed += np.bincount(now[changed & (now < classes)], minlength=classes)[:classes]

    def report(self, class_names: Sequence[str]) -> FlickerReport:
        def percent(part: float, whole: float) -> float:
            return float(part / whole * 100) if whole else 0.0

        class_flicker = {
            name: (
                percent(self.class_changed[index], self.class_either[index])
                if self.class_either[index]
                else None
            )
            for index, name in enumerate(class_names)
        }
        return FlickerReport(
            flicker=percent(self.changed, self.counted),
            class_flicker=class_flicker,
            counted=percent(self.counted, self.pixels),
            pairs=self.pairs,
            agreement=percent(self.agreeing, self.judged) if self.judged else None,
            judged_frames=self.judged_frames,
        )


@dataclass
class VideoFlicker:
    """Per-frame and steady labels of one video, side by side (`rtformer flicker`)."""

    video: str
    model: str
    per_frame: FlickerReport
    steady: FlickerReport | None
    reduction: float | None  # percent less flicker with steady labels
    stabilizer_ms: dict[str, float] = field(default_factory=dict)  # median and p95 per frame
    reference: str = ""

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def table(self) -> str:
        lines = [f"{self.video}: {self.per_frame.pairs} frame pairs, {self.model}"]
        lines.append(self.per_frame.table("per-frame"))
        if self.steady is not None:
            lines.append(self.steady.table("steady"))
            cost = self.stabilizer_ms
            lines.append(
                f"steady masks: {self.reduction:.0f}% less flicker, "
                f"{cost['median']:.2f} ms a frame (p95 {cost['p95']:.2f})"
            )
        if self.reference:
            lines.append(f"reference: {self.reference}")
        return "\n".join(lines)


def measure_video(
    segmenter: Segmenter,
    video: str | Path,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
    reference_every: int = 4,
    stabilize: bool = True,
    limit: int | None = None,
    progress: bool = True,
) -> VideoFlicker:
    """Flicker of `segmenter`'s labels on `video` (the first `limit` frames), per frame
    and, `stabilize`, steady, from one inference per frame; `reference(frame)` (labels at
    the frame's size) judges agreement on every `reference_every`-th frame."""
    classes = len(segmenter.class_names)
    own, steady = FlickerMeter(classes), FlickerMeter(classes)
    stabilizer = MaskStabilizer() if stabilize else None
    costs: list[float] = []
    frames = itertools.islice(read_frames(video), limit)
    for index, (frame, _) in enumerate(tqdm(frames, desc="flicker", unit="frame", disable=not progress)):
        judged = reference(frame) if reference is not None and index % reference_every == 0 else None
        if stabilizer is None:
            own.add(frame, segmenter.predict_model_labels(frame), judged)
            continue
        logits, labels = segmenter.infer_both(frame)
        own.add(frame, labels, judged)
        steady.add(frame, stabilizer(segmenter.preprocessor.resized, logits, labels), judged)
        costs.append(stabilizer.last_ms)
    if own.pairs == 0:
        raise ValueError(f"{video} has fewer than two frames: flicker needs consecutive frames")
    names = segmenter.class_names
    mine, theirs = own.report(names), steady.report(names) if stabilizer else None
    return VideoFlicker(
        video=str(video),
        model=f"RTFormer-{segmenter.info.variant} on {segmenter.description}",
        per_frame=mine,
        steady=theirs,
        reduction=(1 - theirs.flicker / mine.flicker) * 100 if theirs and mine.flicker else None,
        stabilizer_ms=_cost(costs[1:]),  # the first frame has no past: nothing to do
        reference=getattr(reference, "name", "") if reference is not None else "",
    )


def measure_label_folder(video: str | Path, folder: str | Path, class_names: Sequence[str]) -> FlickerReport:
    """Flicker of label maps written by `rtformer segment VIDEO -o FOLDER --labels`
    (frame_000000.png, ...), against the video's frames."""
    meter = FlickerMeter(len(class_names))
    folder = Path(folder)
    for index, (frame, _) in enumerate(read_frames(video)):
        path = folder / f"frame_{index:06d}.png"
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            if index == 0:
                raise FileNotFoundError(f"no label maps in {folder} (expected {path.name}, ...)")
            break
        meter.add(frame, labels)
    return meter.report(class_names)


def _cost(milliseconds: list[float]) -> dict[str, float]:
    if not milliseconds:
        return {}
    return {"median": float(np.median(milliseconds)), "p95": float(np.percentile(milliseconds, 95))}
