"""The inference engine: one `Segmenter` that turns a BGR frame into a label map.

Stages, each timed per call: preprocess (engine.runtime.preprocess: resize keeping the
aspect ratio to the model's input size; normalisation where the backend does not
do it), inference (engine.runtime.backends: PyTorch CPU/CUDA, ONNX Runtime or OpenVINO),
postprocess (engine.runtime.postprocess: argmax, labels resized to the frame with nearest
neighbour; or, on the exact path used by evaluation, logits resized first; on video,
optionally, engine.runtime.stabilize's steady labels).
Drawing is engine.runtime.render's.

Frames are BGR uint8 (OpenCV and PyAV's "bgr24"); palettes are RGB, as stored
in checkpoints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.model.checkpoint import CheckpointInfo, read_checkpoint_info
from engine.runtime.availability import resolve
from engine.runtime.backends import both_outputs, create_backend
from engine.runtime.confidence import VIEW_STRIDE, confidence
from engine.runtime.errors import BackendError
from engine.runtime.graphs import cuda_graphs_by_default
from engine.runtime.postprocess import argmax_channels, labels_at, labels_from_logits
from engine.runtime.preprocess import (
    INPUT_SCALES,
    Preprocessor,
    check_frame,
    model_input_size,
    scaled_input_size,
)
from engine.runtime.render import VIEWS, colorize, overlay, palette_lut, render
from engine.runtime.stabilize import MaskStabilizer

# Re-exported: the Segmenter's callers find the pipeline's parts here.
__all__ = [
    "BACKENDS",
    "DEVICES",
    "INPUT_SCALES",
    "PRECISIONS",
    "VIEWS",
    "BackendError",
    "Preprocessor",
    "Segmenter",
    "StageTimes",
    "argmax_channels",
    "check_frame",
    "colorize",
    "labels_at",
    "labels_from_logits",
    "model_input_size",
    "overlay",
    "palette_lut",
    "render",
    "scaled_input_size",
]

log = logging.getLogger("rtformer.engine")

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")


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


# ---------------------------------------------------------------- the segmenter


@dataclass
class ModelOutputs:
    """One frame's outputs at the model's size."""

    labels: np.ndarray  # (h, w) uint8, steady ones when a stabilizer was given
    logits: np.ndarray | None = None  # (C, h, w) float32, a copy
    confidence: np.ndarray | None = None  # (h / VIEW_STRIDE, w / VIEW_STRIDE) float32 in [0, 1]


class Segmenter:
    """Segment BGR frames with a checkpoint on the chosen backend.

    "auto" (backend or precision) on the CPU picks, by timing them on this machine at
    the model's input size, the fastest backend and precision whose accuracy cost for
    this checkpoint is measured within limits (engine.runtime.availability.fastest_cpu_choice);
    on CUDA, timed the same way, the fastest of PyTorch fp32, PyTorch fp16 and ONNX
    Runtime's CUDA/TensorRT provider (where installed) whose labels keep 99.9% of
    PyTorch fp32's (fastest_cuda_choice). `description` says what it picked. `predict` returns labels
    and leaves the stage times in `timings`. PyTorch on CUDA replays a CUDA graph per
    input shape (engine.runtime.graphs) unless `cuda_graphs` is False or the
    environment has RTFORMER_CUDA_GRAPHS=0.

    Frames are fitted into `input_size` (the checkpoint's own by default), each side times
    `input_scale`: 0.8 or 2/3 of it (`INPUT_SCALES`) for CPUs too slow for the full size.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        backend: str = "auto",
        device: str = "auto",
        precision: str = "auto",
        input_size: tuple[int, int] | None = None,
        calibration: str | Path | None = None,
        threads: int | None = None,
        streams: int = 1,
        cuda_graphs: bool | None = None,
        input_scale: float = 1.0,
    ) -> None:
        _check_choice("backend", backend, BACKENDS)
        _check_choice("device", device, DEVICES)
        _check_choice("precision", precision, PRECISIONS)
        self.checkpoint = Path(checkpoint)
        self.info: CheckpointInfo = read_checkpoint_info(self.checkpoint)
        self.input_size = tuple(input_size) if input_size else self.info.input_size
        self.input_scale = input_scale
        if input_scale != 1.0:
            if self.input_size is None:
                raise ValueError(
                    f"{self.checkpoint.name} has no input size of its own (it runs at each frame's "
                    "size), so it cannot run at a fraction of it: choose the full size"
                )
            self.input_size = scaled_input_size(self.input_size, input_scale)
        if cuda_graphs is None:
            cuda_graphs = cuda_graphs_by_default()
        backend, device, precision = resolve(
            self.checkpoint, backend, device, precision, self.input_size, calibration, threads, cuda_graphs
        )
        self.backend = create_backend(
            self.checkpoint, backend, device, precision, calibration, threads, streams, cuda_graphs
        )
        self.backend_name, self.precision = backend, precision  # what "auto" resolved to
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
        """frame: BGR uint8 (H, W, 3) -> labels uint8 (H, W); stage times in `timings`.
        `exact` (evaluation) resizes the logits before the argmax; by default the
        argmax is taken at the model's size (what the app and `segment` draw)."""
        if exact:
            logits = self.infer_logits(frame)
            started = time.perf_counter()
            labels = labels_from_logits(logits, frame.shape[:2], exact=True)
        else:
            model_labels = self.infer_labels(frame)[0].numpy()
            started = time.perf_counter()
            labels = labels_at(model_labels, frame.shape[:2])
        self.timings.postprocess = (time.perf_counter() - started) * 1e3
        return labels

    def predict_model_labels(self, frame: np.ndarray, stabilizer: MaskStabilizer | None = None) -> np.ndarray:
        """frame: BGR uint8 (H, W, 3) -> labels uint8 (h, w) at the model's input size, for
        renderers that scale the colours themselves (engine.runtime.render): at 1080p this skips a
        full-size label map nobody needs. With a `stabilizer` (frames of one video, in
        order), its steady labels; its cost is the postprocess time."""
        if stabilizer is None:
            labels = self.infer_labels(frame)[0].numpy()
            self.timings.postprocess = 0.0
            return labels
        started = time.perf_counter()
        batch = self.prepare(frame)
        prepared = time.perf_counter()
        with both_outputs(self.backend, batch) as (logits, labels):  # lent: used before the block ends
            inferred = time.perf_counter()
            steady = stabilizer(self.preprocessor.resized, logits[0].numpy(), labels[0].numpy())
        self.timings = StageTimes((prepared - started) * 1e3, (inferred - prepared) * 1e3, stabilizer.last_ms)
        return steady

    def predict_outputs(
        self,
        frame: np.ndarray,
        stabilizer: MaskStabilizer | None = None,
        keep_logits: bool = False,
        measure: str | None = None,
    ) -> ModelOutputs:
        """`predict_model_labels`, and from the same run what the app's views need: a copy of
        the logits (`keep_logits`, the pixel inspector) and the confidence by `measure`
        (the confidence view), at the model's size. Their cost is the postprocess time."""
        if not keep_logits and measure is None:
            return ModelOutputs(self.predict_model_labels(frame, stabilizer))
        started = time.perf_counter()
        batch = self.prepare(frame)
        prepared = time.perf_counter()
        with both_outputs(self.backend, batch) as (logits, labels):  # lent: used before the block ends
            inferred = time.perf_counter()
            planes, own = logits[0].numpy(), labels[0].numpy()
            steady = own.copy() if stabilizer is None else stabilizer(self.preprocessor.resized, planes, own)
            kept = planes.copy() if keep_logits else None
            sure = confidence(planes, measure, VIEW_STRIDE) if measure else None
        done = time.perf_counter()
        self.timings = StageTimes(
            (prepared - started) * 1e3, (inferred - prepared) * 1e3, (done - inferred) * 1e3
        )
        return ModelOutputs(steady, kept, sure)

    def infer_both(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocess and inference: frame -> (logits (C, h, w) float32, labels (h, w) uint8)
        at the model's size, from one run; the model's input stays in `preprocessor.resized`."""
        logits, labels = self._timed(frame, self.backend.infer_both)
        return logits[0].numpy(), labels[0].numpy()

    def infer_labels(self, frame: np.ndarray) -> torch.Tensor:
        """Preprocess and inference: frame -> labels (1, h, w) uint8 at the model's size;
        stage times in `timings`."""
        return self._timed(frame, self.backend.infer_labels)

    def infer_logits(self, frame: np.ndarray) -> torch.Tensor:
        """Preprocess and inference: frame -> logits (1, C, h, w) at the model's size."""
        return self._timed(frame, self.backend.infer_logits)

    def _timed(self, frame: np.ndarray, infer) -> torch.Tensor:
        started = time.perf_counter()
        batch = self.prepare(frame)
        prepared = time.perf_counter()
        output = infer(batch)
        self.timings = StageTimes((prepared - started) * 1e3, (time.perf_counter() - prepared) * 1e3)
        return output

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """The backend's input for one frame, (1, h, w, 3) uint8 or (1, 3, h, w) float32,
        in a buffer reused by the next call."""
        if self.backend.takes_frames:
            return self.preprocessor.resize(frame)[None]
        return self.preprocessor(frame)

    def predict_batch(self, frames: list[np.ndarray], exact: bool = False) -> list[np.ndarray]:
        """Offline work: frames of one size go through the backend as one batch."""
        if not frames:
            return []
        if any(frame.shape != frames[0].shape for frame in frames):
            return [self.predict(frame, exact) for frame in frames]
        size = frames[0].shape[:2]
        batch = np.concatenate([self.prepare(frame).copy() for frame in frames])
        if exact:
            logits = self.backend.infer_logits(batch)
            return [labels_from_logits(logits[i : i + 1], size, exact=True) for i in range(len(frames))]
        return [labels_at(labels.numpy(), size) for labels in self.backend.infer_labels(batch)]

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return colorize(labels, self.lut)

    def overlay(self, frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return overlay(frame, labels, self.lut, alpha)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BackendError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
