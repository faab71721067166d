"""The Compare view's picture: two models' results on the very same frame, side by
side, each panel drawn as the chosen view draws one model, under a strip that names
each model with its own inference time (the two run at once, on threads of their own);
optionally the pixels where they disagree marked in both panels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.runtime import render

HEADER_PIXELS = 28
DISAGREE_BGR = np.array([255, 0, 255], np.uint8)  # magenta: no class in CamVid's or Cityscapes' palettes
DISAGREE_ALPHA = 0.6


@dataclass
class Panel:
    """One model's part of a compared frame."""

    name: str  # "RTFormer-Slim"
    labels: np.ndarray  # (h, w) at the model's size
    lut: np.ndarray
    confidence: np.ndarray | None
    milliseconds: float  # its own inference time, beside the other model (median of the last second)


def panel_view(view: str) -> str:
    """Each panel shows one picture: side by side becomes the overlay."""
    return "overlay" if view == "side-by-side" else view


def disagreement(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(h, w) bool at the left model's size: where the two label maps differ."""
    if right.shape != left.shape:
        right = cv2.resize(right, left.shape[::-1], interpolation=cv2.INTER_NEAREST)
    return left != right


def compose_pair(
    view: str,
    frame: np.ndarray,
    panels: tuple[Panel, Panel],
    alpha: float,
    hidden=(),
    size: tuple[int, int] | None = None,
    marks: bool = False,
) -> np.ndarray:
    """[header strip] over [left panel | right panel], each panel the frame drawn with
    its model's labels; at most `size` (H, W) in all."""
    panel_size = None
    if size is not None:
        panel_size = (max(1, size[0] - HEADER_PIXELS), max(1, size[1] // 2))
    pictures = [
        render(panel_view(view), frame, panel.labels, panel.lut, alpha, hidden, panel_size, panel.confidence)
        for panel in panels
    ]
    if marks:
        different = disagreement(panels[0].labels, panels[1].labels)
        for picture in pictures:
            _mark(picture, different)
    body = np.hstack(pictures)
    return np.vstack([header(panels, body.shape[1], pictures[0].shape[1]), body])


def _mark(picture: np.ndarray, different: np.ndarray) -> None:
    height, width = picture.shape[:2]
    where = cv2.resize(different.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(
        bool
    )
    picture[where] = (picture[where] * (1 - DISAGREE_ALPHA) + DISAGREE_BGR * DISAGREE_ALPHA).astype(np.uint8)


def header(panels: tuple[Panel, Panel], width: int, split: int) -> np.ndarray:
    """The strip above the panels: each model's name and its own time and rate."""
    strip = np.full((HEADER_PIXELS, width, 3), 32, np.uint8)
    for panel, left in zip(panels, (0, split), strict=True):
        rate = f", {1000 / panel.milliseconds:.0f} FPS" if panel.milliseconds else ""
        text = f"{panel.name}  {panel.milliseconds:.1f} ms{rate} side by side"
        cv2.putText(
            strip, text, (left + 8, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
        )
    return strip
