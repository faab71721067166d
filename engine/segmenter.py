"""The inference engine: one `Segmenter` that turns a BGR frame into a label map.

Stages, each timed per call: preprocess (resize keeping the aspect ratio to the
model's input size, ImageNet normalisation into reused buffers), inference (a
backend: PyTorch CPU/CUDA or ONNX Runtime), postprocess (argmax, labels resized
to the frame with nearest neighbour; or, on the exact path used by evaluation,
logits resized bilinearly first).

Frames are BGR uint8 (OpenCV and PyAV's "bgr24"); palettes are RGB, as stored
in checkpoints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.checkpoint import CheckpointInfo, read_checkpoint_info
from engine.rtformer import MIN_INPUT_SIZE

log = logging.getLogger("rtformer.engine")

BACKENDS = ("auto", "torch", "onnxruntime")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "int8")
SIZE_MULTIPLE = 32


class BackendError(Exception):
    """A backend, device or precision that cannot run here, or a model file it cannot use."""


# ---------------------------------------------------------------- colouring helpers


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


def render(view: str, frame: np.ndarray, labels: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """What a viewer shows: the overlay, the colour mask alone, or frame and overlay side by side."""
    if view == "overlay":
        return overlay(frame, labels, palette, alpha)
    if view == "mask":
        return colorize(labels, palette)
    if view == "side-by-side":
        return np.hstack([frame, overlay(frame, labels, palette, alpha)])
    raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")


# ---------------------------------------------------------------- stages


@dataclass
class StageTimes:
    """Milliseconds spent in each stage of one call."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess


def model_input_size(frame_size: tuple[int, int], input_size: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) to feed the model: the frame scaled to fit `input_size` with its aspect
    ratio kept (the frame's own size when None), rounded to multiples of 32."""
    height, width = frame_size
    if input_size is not None:
        scale = min(input_size[0] / height, input_size[1] / width)
        height, width = height * scale, width * scale

    def snap(value: float) -> int:
        return max(MIN_INPUT_SIZE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return snap(height), snap(width)


class Preprocessor:
    """BGR uint8 frame -> normalised RGB float32 (1, 3, h, w), into buffers reused
    while the frame size stays the same."""

    def __init__(self, input_size: tuple[int, int] | None, mean, std) -> None:
        self.input_size = input_size
        # x_rgb_norm = (x / 255 - mean) / std = x * scale + offset, per channel (BGR order here)
        std_bgr, mean_bgr = np.asarray(std, np.float32)[::-1], np.asarray(mean, np.float32)[::-1]
        self.scale = (1.0 / (255.0 * std_bgr)).astype(np.float32)
        self.offset = (-mean_bgr / std_bgr).astype(np.float32)
        self.mean, self.std = tuple(mean), tuple(std)
        self._frame_size: tuple[int, int] | None = None

    def _allocate(self, frame_size: tuple[int, int]) -> None:
        self._frame_size = frame_size
        self.size = model_input_size(frame_size, self.input_size)
        height, width = self.size
        self._resized = np.empty((height, width, 3), np.uint8)
        self._float = np.empty((height, width, 3), np.float32)
        self._blob = np.empty((1, 3, height, width), np.float32)

    def resize(self, frame: np.ndarray) -> np.ndarray:
        """The frame resized to the model's input size (BGR uint8); the buffer is reused."""
        check_frame(frame)
        if frame.shape[:2] != self._frame_size:
            self._allocate(frame.shape[:2])
        if frame.shape[:2] == self.size:
            self._resized[...] = frame
        else:
            cv2.resize(frame, self.size[::-1], dst=self._resized, interpolation=cv2.INTER_LINEAR)
        return self._resized

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        resized = self.resize(frame)
        np.multiply(resized, self.scale, out=self._float)
        np.add(self._float, self.offset, out=self._float)
        self._blob[0] = self._float.transpose(2, 0, 1)[::-1]  # HWC BGR -> CHW RGB
        return self._blob


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"expected a BGR uint8 frame of shape (H, W, 3), got {shape} {dtype}")
    if min(frame.shape[:2]) < 8:
        raise ValueError(f"frame {frame.shape[1]}x{frame.shape[0]} is too small to segment")


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
    """logits (1, C, h, w) -> labels (H, W) uint8 at the frame's size. Also takes labels
    (1, h, w) uint8 from a backend that took the argmax itself (fast path only).

    Fast path: argmax at the model's resolution, labels resized with nearest
    neighbour. Exact path: logits resized bilinearly to the frame, then argmax.
    """
    if logits.dtype == torch.uint8:
        if exact:
            raise ValueError("the exact path needs logits, not labels")
        labels = logits[0].cpu().numpy()
    else:
        if exact:
            logits = F.interpolate(logits.float(), size=frame_size, mode="bilinear", align_corners=False)
        labels = argmax_channels(logits[0].float().numpy()) if logits.device.type == "cpu" else None
        if labels is None:  # on the GPU torch's argmax is fast; copy back only the labels
            labels = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
    if labels.shape != tuple(frame_size):
        labels = cv2.resize(labels, frame_size[::-1], interpolation=cv2.INTER_NEAREST)
    return labels


# ---------------------------------------------------------------- the segmenter


class Segmenter:
    """Segment BGR frames with a checkpoint on the chosen backend.

    backend "auto" picks the fastest available: ONNX Runtime with TensorRT, else
    PyTorch on CUDA (fp16), else ONNX Runtime on the CPU; `description` says what
    it picked. `predict` returns labels and leaves the stage times in `timings`.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        backend: str = "auto",
        device: str = "auto",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        calibration: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        from engine.backends import create_backend

        _check_choice("backend", backend, BACKENDS)
        _check_choice("device", device, DEVICES)
        _check_choice("precision", precision, PRECISIONS)
        self.checkpoint = Path(checkpoint)
        self.info: CheckpointInfo = read_checkpoint_info(self.checkpoint)
        self.input_size = tuple(input_size) if input_size else self.info.input_size
        self.backend = create_backend(self, backend, device, precision, calibration, threads)
        self.preprocessor = Preprocessor(self.input_size, self.info.mean, self.info.std)
        self.lut = palette_lut(self.info.palette)
        self.timings = StageTimes()
        log.info("segmenter: %s on %s", self.info.variant, self.description)

    @property
    def description(self) -> str:
        return self.backend.description

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    def predict(self, frame: np.ndarray, exact: bool = False) -> np.ndarray:
        """frame: BGR uint8 (H, W, 3) -> labels uint8 (H, W); stage times in `timings`."""
        logits = self.infer(frame, exact)
        started = time.perf_counter()
        labels = labels_from_logits(logits, frame.shape[:2], exact)
        self.timings.postprocess = (time.perf_counter() - started) * 1e3
        return labels

    def infer(self, frame: np.ndarray, exact: bool = False) -> torch.Tensor:
        """Preprocess and inference only: frame -> logits (1, C, h, w), or on the fast path
        labels (1, h, w) uint8 where the backend takes the argmax itself. Pipelines call
        this and `labels_from_logits` on different threads."""
        started = time.perf_counter()
        blob = self.backend.prepare(self.preprocessor, frame)
        prepared = time.perf_counter()
        logits = self.backend.infer(blob, labels=not exact)
        inferred = time.perf_counter()
        self.timings = StageTimes((prepared - started) * 1e3, (inferred - prepared) * 1e3)
        return logits

    def predict_batch(self, frames: list[np.ndarray], exact: bool = False) -> list[np.ndarray]:
        """Offline work: frames of one size go through the backend as one batch."""
        if not frames:
            return []
        prepared = [self.backend.prepare(self.preprocessor, frame).copy() for frame in frames]
        if any(frame.shape != frames[0].shape for frame in frames) or prepared[0].ndim != 4:
            # Mixed sizes, or a backend that normalises on the device per frame.
            return [self.predict(frame, exact) for frame in frames]
        blob = np.concatenate(prepared)
        logits = self.backend.infer(blob, labels=not exact)
        return [labels_from_logits(logits[i : i + 1], frames[0].shape[:2], exact) for i in range(len(frames))]

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return colorize(labels, self.lut)

    def overlay(self, frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return overlay(frame, labels, self.lut, alpha)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BackendError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
