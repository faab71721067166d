"""Rendering: what a viewer shows for a frame and its labels. One renderer for the app,
`segment` and the probe's overlays.

Frames are BGR uint8; palettes are RGB, as stored in checkpoints.
"""

from __future__ import annotations

from collections.abc import Collection

import cv2
import numpy as np

from engine.runtime.confidence import DEFAULT_MEASURE, draw_heat_map


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
    """Blend the colour mask over the BGR frame: (1 - alpha) * frame + alpha * mask.
    Labels of another size (the model's) are scaled to the frame with nearest neighbour."""
    return cv2.addWeighted(frame, 1.0 - alpha, mask_at(frame.shape[:2], labels, palette), alpha, 0.0)


def mask_at(size: tuple[int, int], labels: np.ndarray, palette) -> np.ndarray:
    """The colour mask of `labels` at `size` (H, W). Colouring first and scaling the mask
    gives the same pixels as scaling the labels first (nearest neighbour commutes with a
    per-pixel lookup) for less work: 3.0 instead of 9.5 ms from 256x480 to 1920x1080."""
    mask = colorize(labels, palette)
    return mask if labels.shape == tuple(size) else scaled_nearest(mask, size)


def scaled_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


VIEWS = ("overlay", "mask", "side-by-side", "confidence")


def render(
    view: str,
    frame: np.ndarray,
    labels: np.ndarray,
    palette,
    alpha: float = 0.5,
    hidden: Collection[int] = (),
    size: tuple[int, int] | None = None,
    confidence: np.ndarray | None = None,
) -> np.ndarray:
    """What a viewer shows: the overlay, the colour mask alone, frame and overlay side
    by side, or the model's `confidence` (engine.runtime.confidence) as a heat map with
    its scale. `labels` may be at the model's size (scaled with nearest neighbour); classes
    in `hidden` show the frame (black in the mask). With `size` (H, W), the area the
    picture will be shown in, a larger frame is first scaled down to fit it (aspect
    ratio kept): a 1080p frame drawn for a 720p view costs less than half, and the GUI
    has less to scale."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    if size is not None:
        panels = 2 if view == "side-by-side" else 1
        frame = fitted(frame, (size[0], size[1] // panels))
    if view == "confidence":
        if confidence is None:
            raise ValueError("the confidence view needs the model's confidence for the frame")
        return draw_heat_map(frame, confidence, alpha, DEFAULT_MEASURE)
    if view == "mask":
        mask = mask_at(frame.shape[:2], labels, palette)
        if hidden:
            mask[hidden_pixels(labels, hidden, frame.shape[:2])] = 0
        return mask
    blended = overlay(frame, labels, palette, alpha)
    if hidden:
        keep = hidden_pixels(labels, hidden, frame.shape[:2])
        blended[keep] = frame[keep]
    return np.hstack([frame, blended]) if view == "side-by-side" else blended


def hidden_pixels(labels: np.ndarray, hidden: Collection[int], size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool at `size`: the pixels whose class is in `hidden`."""
    is_hidden = np.zeros(256, np.uint8)
    is_hidden[list(hidden)] = 1
    pixels = is_hidden[labels]
    return (pixels if pixels.shape == tuple(size) else scaled_nearest(pixels, size)).astype(bool)


def fitted(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`frame` scaled down to fit `size` (H, W) with its aspect ratio kept; never enlarged."""
    height, width = frame.shape[:2]
    scale = min(size[0] / height, size[1] / width)
    if scale >= 1 or min(size) < 1:
        return frame
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, target, interpolation=cv2.INTER_LINEAR)
