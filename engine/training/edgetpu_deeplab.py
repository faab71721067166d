"""EdgeTPU-DeepLab-slim (Google's DeepLab with a MobileNet-EdgeTPU backbone, trained on
Cityscapes), an INT8 TensorFlow Lite graph: a Cityscapes teacher that votes.

Used for training and evaluation only: it needs the `ai-edge-litert` wheel (the
project's `training` extra), which the app and the runtime never import. Its graph ends
in an ArgMax, so it gives hard labels, no probabilities; a frame's answer here is the
fraction of overlapping windows voting for each CamVid class.

The graph takes one fixed (1, 513, 513, 3) uint8 RGB window (it normalises inside) and
returns (1, 513, 513) Cityscapes train ids. A frame is upscaled by `scale` (x1.5 scored
best on CamVid test: 61.4 mIoU, against 60.3 at x2 and 53.6 for one 513x513 squash,
`teachers/edgetpu-deeplab-cityscapes/README.md`) and covered by windows
`stride` apart, the last flush with the edge.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from engine.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from engine.training.data import resize_channels
from engine.training.espnetv2 import CITYSCAPES_TO_CAMVID

WINDOW = 513  # the graph's fixed input side
CAMVID_CLASSES = max(CITYSCAPES_TO_CAMVID) + 1


class MissingRuntime(RuntimeError):
    """The TFLite runtime (`ai-edge-litert`) is not installed."""


def window_starts(length: int, window: int = WINDOW, stride: int = 384) -> list[int]:
    """Window offsets covering `length`: every `stride`, the last flush with the end
    (one window at 0 when the side is shorter than the window: the frame is padded)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


class EdgeTPUDeepLab:
    """The TFLite interpreter on one 513x513 window at a time."""

    def __init__(self, path: str | Path, threads: int = 2):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise MissingRuntime(
                "the EdgeTPU-DeepLab teacher needs the TFLite runtime: pip install 'rtformer-studio[training]'"
                " (or pip install ai-edge-litert)"
            ) from error
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def window_labels(self, window: np.ndarray) -> np.ndarray:
        """(513, 513, 3) uint8 RGB -> (513, 513) Cityscapes train ids."""
        self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(window)[None])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)[0]


def camvid_votes(
    network: EdgeTPUDeepLab, image: np.ndarray, scale: float = 1.5, stride: int = 384
) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 11) float32 vote fractions per CamVid class (each
    pixel's share of the windows covering it; Cityscapes classes merged as for ESPNetv2)."""
    height, width = image.shape[:2]
    big = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_LINEAR)
    pad_h, pad_w = max(0, WINDOW - big.shape[0]), max(0, WINDOW - big.shape[1])
    big = cv2.copyMakeBorder(big, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
    table = np.asarray(CITYSCAPES_TO_CAMVID, np.int64)
    votes = np.zeros((*big.shape[:2], CAMVID_CLASSES), np.float32)
    one_hot = np.eye(CAMVID_CLASSES, dtype=np.float32)
    for top in window_starts(big.shape[0], stride=stride):
        for left in window_starts(big.shape[1], stride=stride):
            ids = network.window_labels(big[top : top + WINDOW, left : left + WINDOW])
            classes = table[np.clip(ids, 0, len(table) - 1)]
            votes[top : top + WINDOW, left : left + WINDOW] += one_hot[classes]
    votes = votes[: big.shape[0] - pad_h, : big.shape[1] - pad_w]
    votes /= votes.sum(axis=2, keepdims=True)
    return resize_channels(votes, (width, height))


class EdgeTPUDeepLabTeacher(nn.Module):
    """The voter on the project's normalised input: (N, 3, H, W) ImageNet-normalised RGB ->
    (N, 11, H, W) log vote fractions (log 1e-6 where no window voted for a class)."""

    def __init__(self, path: str | Path, scale: float = 1.5, stride: int = 384, threads: int = 2):
        super().__init__()
        self.network = EdgeTPUDeepLab(path, threads)
        self.scale, self.stride = scale, stride
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        pixels = ((image * self.std + self.mean) * 255).round().clamp(0, 255).to(torch.uint8)
        frames = pixels.permute(0, 2, 3, 1).cpu().numpy()
        votes = [camvid_votes(self.network, frame, self.scale, self.stride) for frame in frames]
        return torch.from_numpy(np.stack(votes)).permute(0, 3, 1, 2).to(image.device)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.probabilities(image).clamp_min(1e-6).log()
