"""Which backends this machine can run, why the others cannot, and which is fastest:
the one answer that the app's Backend menu, `rtformer doctor` and the soak tool share.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BackendChoice:
    label: str
    backend: str
    device: str
    precision: str


BACKEND_CHOICES = (
    BackendChoice("PyTorch CPU", "torch", "cpu", "fp32"),
    BackendChoice("PyTorch CUDA (fp16)", "torch", "cuda", "fp16"),
    BackendChoice("ONNX Runtime CPU", "onnxruntime", "cpu", "fp32"),
    BackendChoice("ONNX Runtime CUDA/TensorRT", "onnxruntime", "cuda", "fp32"),
    BackendChoice("INT8 (ONNX Runtime CPU)", "onnxruntime", "cpu", "int8"),
)

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}


def onnxruntime_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def why_unavailable(choice: BackendChoice) -> str:
    """Empty if this machine can run `choice`, else the reason."""
    if choice.backend == "torch" and choice.device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device on this machine"
    gpu_runtime = choice.backend == "onnxruntime" and choice.device == "cuda"
    if gpu_runtime and not set(onnxruntime_providers()) & GPU_PROVIDERS:
        conflict = onnxruntime_conflict()
        return conflict or "this ONNX Runtime has no CUDA or TensorRT provider (install onnxruntime-gpu)"
    return ""


def default_backend() -> BackendChoice:
    """The fastest backend this machine runs: TensorRT/CUDA through ONNX Runtime when it
    has TensorRT, else PyTorch CUDA fp16, else ONNX Runtime on the CPU."""
    by_label = {choice.label: choice for choice in BACKEND_CHOICES}
    if "TensorrtExecutionProvider" in onnxruntime_providers() and torch.cuda.is_available():
        return by_label["ONNX Runtime CUDA/TensorRT"]
    if torch.cuda.is_available():
        return by_label["PyTorch CUDA (fp16)"]
    return by_label["ONNX Runtime CPU"]


def installed_distributions(*names: str) -> list[str]:
    found = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return found


def onnxruntime_conflict() -> str:
    """A message when the CPU and GPU builds of ONNX Runtime are both installed: they share
    the `onnxruntime` module, so whichever was installed last wins, often the CPU one."""
    builds = installed_distributions("onnxruntime", "onnxruntime-gpu")
    if len(builds) < 2:
        return ""
    return (
        f"both {builds[0]} and {builds[1]} are installed and shadow each other; for the GPU run "
        "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu`"
    )
