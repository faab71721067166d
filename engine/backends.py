"""Inference backends behind `Segmenter`: PyTorch (CPU, CUDA) and ONNX Runtime.

Each backend has `description`, `prepare(preprocessor, frame)` (the model input)
and `infer(input) -> logits (N, C, h, w)` as a torch tensor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from engine.checkpoint import load_checkpoint
from engine.export import FP32_KIND, INT8_KIND, cache_path, cached_onnx, normalise_frames
from engine.segmenter import BackendError, Preprocessor

log = logging.getLogger("rtformer.engine")

ORT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def ort_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


class TorchBackend:
    """PyTorch eager: inference mode, channels-last, fp16 on CUDA; on CUDA the
    normalisation runs on the GPU (the CPU only resizes)."""

    def __init__(self, checkpoint: Path, device: str, precision: str, threads: int | None = None) -> None:
        if device == "cuda" and not cuda_available():
            raise BackendError("PyTorch CUDA asked for, but this machine has no CUDA device")
        if precision == "int8":
            raise BackendError("INT8 runs on ONNX Runtime: choose backend 'onnxruntime'")
        if precision == "fp16" and device != "cuda":
            raise BackendError("fp16 needs CUDA; on the CPU use fp32 (or INT8 on ONNX Runtime)")
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        model, info = load_checkpoint(checkpoint, self.device)
        self.model = model.to(memory_format=torch.channels_last, dtype=self.dtype).eval()
        self.mean = (torch.tensor(info.mean, device=self.device).view(1, 3, 1, 1) * 255).to(self.dtype)
        self.std = (torch.tensor(info.std, device=self.device).view(1, 3, 1, 1) * 255).to(self.dtype)
        self.description = f"PyTorch {device.upper()} {precision}"

    def prepare(self, preprocessor: Preprocessor, frame: np.ndarray):
        if self.device.type == "cuda":
            return preprocessor.resize(frame)[None]  # (1, h, w, 3) uint8
        return preprocessor(frame)

    @torch.inference_mode()
    def infer(self, blob, labels: bool = False) -> torch.Tensor:
        """Logits (N, C, h, w); with `labels` on CUDA, the argmax (N, h, w) uint8 taken on the
        device, so only the labels cross to the host (on the CPU, postprocessing takes it)."""
        if blob.dtype == np.uint8:  # resized BGR frames (N, h, w, 3): normalise on the device
            frames = torch.from_numpy(blob).to(self.device, non_blocking=True)
            images = normalise_frames(frames, self.mean, self.std)
        else:
            images = torch.from_numpy(blob).to(self.device, self.dtype)
        images = images.contiguous(memory_format=torch.channels_last)
        logits = self.model(images)
        if labels and self.device.type == "cuda":
            return logits.argmax(1).to(torch.uint8)
        return logits.float()


class OnnxRuntimeBackend:
    """ONNX Runtime with providers TensorRT > CUDA > CPU where present; fp32 or INT8."""

    def __init__(
        self,
        checkpoint: Path,
        device: str,
        precision: str,
        calibration: str | Path | None = None,
        threads: int | None = None,
        spinning: bool = False,
    ) -> None:
        if precision == "fp16":
            raise BackendError("fp16 runs on PyTorch CUDA; ONNX Runtime here takes fp32 or INT8")
        self.providers = choose_providers(device if precision != "int8" else "cpu")
        path = int8_model(checkpoint, calibration) if precision == "int8" else cached_onnx(checkpoint)
        self.session = open_session(
            path, self.providers, threads, spinning, cached=True, checkpoint=checkpoint
        )
        self.input_name = self.session.get_inputs()[0].name
        used = self.session.get_providers()[0].replace("ExecutionProvider", "")
        self.description = f"ONNX Runtime {used} {precision}"
        self.path = path

    def prepare(self, preprocessor: Preprocessor, frame: np.ndarray) -> np.ndarray:
        return preprocessor.resize(frame)[None]  # (1, h, w, 3) uint8: the graph normalises

    def infer(self, blob: np.ndarray, labels: bool = False) -> torch.Tensor:
        """Logits (N, C, h, w), or with `labels` the graph's own argmax (N, h, w) uint8."""
        (output,) = self.session.run(["labels" if labels else "logits"], {self.input_name: blob})
        return torch.from_numpy(output)


def choose_providers(device: str) -> list[str]:
    available = ort_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = [p for p in ORT_PROVIDER_ORDER if p in available]
    missing = [p for p in ORT_PROVIDER_ORDER[:2] if p not in available]
    if missing and device == "cuda":
        log.warning("ONNX Runtime here lacks %s; falling back to %s", ", ".join(missing), wanted[0])
    return wanted


def session_options(threads: int | None, spinning: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    # Spinning worker threads steal the CPU from capture, GUI and encoder threads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # Smaller work blocks balance the two threads better on this model's small tensors:
    # Slim at 360x480 on two cores, 43.0 -> 40.1-40.3 ms in three interleaved runs (2 to 8 alike).
    options.add_session_config_entry("session.dynamic_block_base", "4")
    options.log_severity_level = 3
    return options


def open_session(
    path: Path,
    providers: list[str],
    threads: int | None = None,
    spinning: bool = False,
    cached: bool = False,
    checkpoint: Path | None = None,
):
    """An InferenceSession; a damaged file is reported clearly, and a damaged cache
    file is exported again once."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), session_options(threads, spinning), providers=providers)
    except FileNotFoundError:
        raise BackendError(f"ONNX model not found: {path}") from None
    except Exception as error:  # ORT raises its own pybind error types
        if cached and checkpoint is not None and path.name.endswith(f".{FP32_KIND}.onnx"):
            log.warning("cached ONNX model %s is damaged (%s); exporting again", path, _first_line(error))
            path.unlink(missing_ok=True)
            return open_session(cached_onnx(checkpoint), providers, threads, spinning)
        raise BackendError(f"ONNX Runtime cannot load {path}: {_first_line(error)}") from None


def int8_model(checkpoint: Path, calibration: str | Path | None) -> Path:
    path = cache_path(checkpoint, INT8_KIND)
    if path.is_file():
        return path
    if calibration is None:
        raise BackendError(
            f"no INT8 model for {checkpoint} yet: run `rtformer quantize {checkpoint} --calibration DIR` "
            "or give calibration frames"
        )
    from engine.quantize import quantize_checkpoint

    return quantize_checkpoint(checkpoint, calibration, output=path)


def create_backend(segmenter, backend: str, device: str, precision: str, calibration, threads):
    """Resolve "auto" choices and build the backend; says what it picked."""
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    if backend == "auto":
        if precision == "int8" or (device == "cuda" and "TensorrtExecutionProvider" in ort_providers()):
            backend = "onnxruntime"
        elif device == "cuda":
            backend = "torch"
        else:
            backend = "onnxruntime"
    if backend == "torch":
        chosen = TorchBackend(segmenter.checkpoint, device, precision, threads)
    else:
        chosen = OnnxRuntimeBackend(segmenter.checkpoint, device, precision, calibration, threads)
    log.info("backend: %s", chosen.description)
    return chosen


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
