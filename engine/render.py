"""Rendering: what a viewer shows for a frame and its labels. One renderer for the app,
`segment` and the probe's overlays.

Frames are BGR uint8; palettes are RGB, as stored in checkpoints.
"""

from __future__ import annotations

from collections.abc import Collection

import cv2
import numpy as np


def palette_lut(palette) -> np.ndarray:
    """RGB palette (N, 3) -> BGR lookup table (256, 3); labels past N are black."""
    lut = np.zeros((256, 3), np.uint8)
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)
    lut[: len(colours)] = colours[:, ::-1]
    return lut


def colorize(labels: np.ndarray, palette) -> np.ndarray:
    """labels (H, W) uint8 -> BGR colour mask (H, W, 3), one table lookup."""
    lut = palette if isinstance(palette, np.ndarray) and palette.shape == (256, 3) else palette_lut(palette)
    return np.take(lut, labels, axis=0)  # 4-5x faster than lut[labels] (0.4 vs 1.7 ms at 360x480)


def overlay(frame: np.ndarray, labels: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the BGR frame: (1 - alpha) * frame + alpha * mask."""
    if frame.shape[:2] != labels.shape:
        raise ValueError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size")
    return cv2.addWeighted(frame, 1.0 - alpha, colorize(labels, palette), alpha, 0.0)


VIEWS = ("overlay", "mask", "side-by-side")


def render(
    view: str,
    frame: np.ndarray,
    labels: np.ndarray,
    palette,
    alpha: float = 0.5,
    hidden: Collection[int] = (),
) -> np.ndarray:
    """What a viewer shows: the overlay, the colour mask alone, or frame and overlay side
    by side. Classes in `hidden` show the frame (black in the mask)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    if view == "mask":
        mask = colorize(labels, palette)
        if hidden:
            mask[hidden_pixels(labels, hidden)] = 0
        return mask
    blended = overlay(frame, labels, palette, alpha)
    if hidden:
        keep = hidden_pixels(labels, hidden)
        blended[keep] = frame[keep]
    return np.hstack([frame, blended]) if view == "side-by-side" else blended


def hidden_pixels(labels: np.ndarray, hidden: Collection[int]) -> np.ndarray:
    """(H, W) bool: the pixels whose class is in `hidden`."""
    is_hidden = np.zeros(256, bool)
    is_hidden[list(hidden)] = True
    return is_hidden[labels]
