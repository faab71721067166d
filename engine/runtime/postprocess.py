"""Postprocessing: a backend's logits or labels -> labels at the frame's size.

Fast path (the app, `segment`): argmax at the model's resolution, labels resized with
nearest neighbour. Exact path (evaluation): logits resized bilinearly to the frame,
then the argmax.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def argmax_channels(logits: np.ndarray) -> np.ndarray:
    """(C, H, W) float -> (H, W) uint8 argmax (first maximum wins, as np.argmax).

    One pass per class over contiguous planes: on the CPU this is 3-5x faster than
    np.argmax or torch.argmax over the channel axis, which stride across planes.
    """
    best = logits[0].copy()
    labels = np.zeros(best.shape, np.uint8)
    for index in range(1, logits.shape[0]):
        better = np.greater(logits[index], best)
        np.maximum(best, logits[index], out=best)
        np.putmask(labels, better, index)
    return labels


def labels_from_logits(logits: torch.Tensor, frame_size: tuple[int, int], exact: bool = False) -> np.ndarray:
    """logits (1, C, h, w) -> labels (H, W) uint8 at the frame's size.

    Fast path: argmax at the model's resolution, labels resized with nearest
    neighbour. Exact path: logits resized bilinearly to the frame, then argmax.
    """
    if exact:
        logits = F.interpolate(logits.float(), size=frame_size, mode="bilinear", align_corners=False)
    if logits.device.type == "cpu":
        labels = argmax_channels(logits[0].float().numpy())
    else:  # on the GPU torch's argmax is fast; copy back only the labels
        labels = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
    return labels_at(labels, frame_size)


def labels_at(labels: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """labels (h, w) uint8 at the model's size -> (H, W) at the frame's, nearest neighbour."""
    if labels.shape == tuple(frame_size):
        return labels
    return cv2.resize(labels, frame_size[::-1], interpolation=cv2.INTER_NEAREST)
