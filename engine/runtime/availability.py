"""Which backends this machine can run, why the others cannot, and which is fastest:
the one answer that the app's Backend menu, `rtformer doctor`, the soak tool and
`Segmenter(backend="auto")` share.

On the CPU "auto" is decided by measurement (`fastest_cpu_choice`): the candidates are
the CPU backends and precisions whose accuracy cost for this checkpoint is recorded
within ACCURACY_LIMITS (a record written by `tools/backend_accuracy.py` beside the
weights; fp32 costs nothing), each is timed on this machine at the model's input
size, and the fastest wins. The decision is cached per checkpoint, size, threads,
CPU and runtime versions, so the timing runs once.

On CUDA "auto" is measured the same way (`fastest_cuda_choice`) among PyTorch fp32,
PyTorch fp16 (both with CUDA graphs unless turned off) and ONNX Runtime's CUDA or
TensorRT provider where installed; a precision other than fp32 is a candidate only
when its labels agree with PyTorch fp32's on at least 99.9% of the pixels of the
bundled calibration frames (on an H200, fp16 was no faster than fp32: BENCHMARKS.md, GPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.resources import user_cache_dir
from engine.runtime.cpu import ISA_CAP_VARIABLE, cpuinfo_field
from engine.runtime.errors import BackendError

log = logging.getLogger("rtformer.engine")


@dataclass(frozen=True)
class BackendChoice:
    label: str
    backend: str
    device: str
    precision: str


AUTOMATIC = BackendChoice("Automatic (fastest measured)", "auto", "auto", "auto")
BACKEND_CHOICES = (
    AUTOMATIC,
    BackendChoice("PyTorch CPU", "torch", "cpu", "fp32"),
    BackendChoice("PyTorch CUDA (fp16)", "torch", "cuda", "fp16"),
    BackendChoice("ONNX Runtime CPU", "onnxruntime", "cpu", "fp32"),
    BackendChoice("ONNX Runtime CUDA/TensorRT", "onnxruntime", "cuda", "fp32"),
    BackendChoice("INT8 (ONNX Runtime CPU)", "onnxruntime", "cpu", "int8"),
    BackendChoice("OpenVINO CPU", "openvino", "cpu", "fp32"),
    BackendChoice("OpenVINO CPU (bf16)", "openvino", "cpu", "bf16"),
    BackendChoice("INT8 (OpenVINO CPU)", "openvino", "cpu", "int8"),
)
# mIoU points a precision may lose against fp32 (CamVid test, the app's path) to be
# picked by "auto": the project's limits.
ACCURACY_LIMITS = {"fp32": 0.0, "bf16": 0.3, "int8": 1.0}
CPU_CANDIDATES = (
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("onnxruntime", "int8"),
    ("openvino", "int8"),
)
ACCURACY_REFERENCE = "onnxruntime fp32"

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
CUDA_CANDIDATES = (("torch", "fp32"), ("torch", "fp16"), ("onnxruntime", "fp32"))
# The share of pixels whose labels a GPU precision must keep against PyTorch fp32.
CUDA_LABEL_AGREEMENT = 0.999
AGREEMENT_FRAMES = 4  # of the bundled calibration frames


def onnxruntime_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def available() -> list[tuple[BackendChoice, str]]:
    """Every backend choice the app offers, in menu order, with the reason it cannot run
    on this machine ("" when it can): what the Backend menu and doctor list."""
    return [(choice, why_unavailable(choice)) for choice in BACKEND_CHOICES]


def why_unavailable(choice: BackendChoice) -> str:
    """Empty if this machine can run `choice`, else the reason."""
    if choice.backend == "torch" and choice.device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device on this machine"
    gpu_runtime = choice.backend == "onnxruntime" and choice.device == "cuda"
    if gpu_runtime and not set(onnxruntime_providers()) & GPU_PROVIDERS:
        conflict = onnxruntime_conflict()
        return conflict or "this ONNX Runtime has no CUDA or TensorRT provider (install onnxruntime-gpu)"
    if choice.backend == "openvino":
        return openvino_unavailable(choice.precision)
    return ""


def openvino_unavailable(precision: str) -> str:
    """Empty if OpenVINO can run `precision` on this CPU, else the reason."""
    from engine.runtime.backends import openvino_capabilities

    try:
        capabilities = openvino_capabilities()
    except BackendError as error:
        return str(error)
    if precision == "bf16" and "BF16" not in capabilities:
        return f"this CPU has no bf16 (OpenVINO reports {', '.join(sorted(capabilities))})"
    return ""


def default_backend() -> BackendChoice:
    """What the app starts with: "auto", which measures the candidates on this machine
    (`fastest_cpu_choice`, `fastest_cuda_choice`)."""
    return AUTOMATIC


def auto_summary() -> str:
    """What "auto" runs on this machine, in words (doctor's report)."""
    remembered = _remembered_choices().values()
    picks = sorted(
        {" ".join(map(str, entry.get("picked", []))) for entry in remembered if isinstance(entry, dict)}
    )
    measured = f"; measured here so far: {', '.join(picks)}" if picks else ""
    if torch.cuda.is_available():
        rule = "the fastest CUDA backend whose labels keep 99.9% of fp32's, timed at first use"
    else:
        rule = "the fastest CPU backend within the accuracy limits, timed at first use"
    return rule + measured


# ---------------------------------------------------------------- the measured choice


def resolve(
    checkpoint: str | Path,
    backend: str,
    device: str,
    precision: str,
    input_size: tuple[int, int] | None = None,
    calibration: str | Path | None = None,
    threads: int | None = None,
    cuda_graphs: bool = True,
) -> tuple[str, str, str]:
    """Concrete (backend, device, precision) for a request that may say "auto". On the CPU
    the measured `fastest_cpu_choice`; on CUDA the measured `fastest_cuda_choice`, timed
    with CUDA graphs on or off as they will run (INT8 runs on ONNX Runtime's CPU
    provider); PyTorch on the CPU is fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and backend != "torch" and "auto" in (backend, precision):
        backend, precision = fastest_cpu_choice(
            checkpoint, backend, precision, input_size, calibration, threads
        )
    elif device == "cuda" and precision == "int8":
        backend = "onnxruntime"
    elif device == "cuda" and backend in ("auto", "torch") and "auto" in (backend, precision):
        backend, precision = fastest_cuda_choice(checkpoint, backend, precision, input_size, cuda_graphs)
    if precision == "auto":  # PyTorch on the CPU, or ONNX Runtime asked for on CUDA
        precision = "fp32"
    return backend, device, precision


def accuracy_record_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.accuracy.json")


def accuracy_costs(checkpoint: str | Path) -> dict[str, float]:
    """mIoU points each "backend precision" loses against ONNX Runtime fp32 for this
    checkpoint, from its accuracy record; empty without a record for these exact weights."""
    from engine.runtime.artifacts import file_digest

    path = accuracy_record_path(checkpoint)
    try:
        record = json.loads(path.read_text())
        if record["checkpoint_digest"] != file_digest(checkpoint):
            log.info("ignoring %s: it was measured on other weights", path)
            return {}
        miou = record["miou"]
        costs = {name: miou[ACCURACY_REFERENCE] - value for name, value in miou.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return int8_costs_at_this_width(costs)


def int8_costs_at_this_width(costs: dict[str, float]) -> dict[str, float]:
    """The record names INT8 figures by weight width ("openvino int8w7", "... int8w8"); here
    "openvino int8" costs what the width this CPU runs (artifacts.int8_weight_bits) cost.
    A figure without a width (an older record) counts for nothing."""
    from engine.runtime.artifacts import int8_weight_bits

    bits = int8_weight_bits()
    chosen = {name: cost for name, cost in costs.items() if not name.endswith(" int8")}
    for name, cost in costs.items():
        if name.endswith(f" int8w{bits}"):
            chosen[name.removesuffix(f"w{bits}")] = cost
    return chosen


def cpu_candidates(checkpoint: str | Path, backend: str, precision: str) -> list[tuple[str, str]]:
    """The (backend, precision) pairs "auto" may pick: those the request leaves open,
    runnable here and, for a precision the user did not ask for, within its accuracy limit."""
    costs = accuracy_costs(checkpoint)
    candidates = []
    for name, kind in CPU_CANDIDATES:
        if backend not in ("auto", name) or precision not in ("auto", kind):
            continue
        if name == "openvino" and openvino_unavailable(kind):
            continue
        asked_for = precision == kind
        cost = 0.0 if kind == "fp32" else costs.get(f"{name} {kind}")
        if not asked_for and (cost is None or cost > ACCURACY_LIMITS[kind]):
            continue
        candidates.append((name, kind))
    return candidates


def fastest_cpu_choice(
    checkpoint: str | Path,
    backend: str = "auto",
    precision: str = "auto",
    input_size: tuple[int, int] | None = None,
    calibration: str | Path | None = None,
    threads: int | None = None,
) -> tuple[str, str]:
    """The (backend, precision) that runs this checkpoint fastest on this CPU among
    `cpu_candidates`, timed once and remembered."""
    candidates = cpu_candidates(checkpoint, backend, precision)
    if not candidates:
        raise BackendError(f"no CPU backend here runs backend={backend} precision={precision}")
    return _fastest_choice(checkpoint, candidates, "cpu", input_size, calibration, threads)


def cuda_candidates(backend: str, precision: str) -> list[tuple[str, str]]:
    """The CUDA (backend, precision) pairs the request leaves open and this machine runs."""
    runs_onnx_on_gpu = bool(set(onnxruntime_providers()) & GPU_PROVIDERS)
    return [
        (name, kind)
        for name, kind in CUDA_CANDIDATES
        if backend in ("auto", name)
        and precision in ("auto", kind)
        and (name != "onnxruntime" or runs_onnx_on_gpu)
    ]


def fastest_cuda_choice(
    checkpoint: str | Path,
    backend: str = "auto",
    precision: str = "auto",
    input_size: tuple[int, int] | None = None,
    cuda_graphs: bool = True,
) -> tuple[str, str]:
    """The (backend, precision) that runs this checkpoint fastest on this GPU among
    `cuda_candidates` whose labels keep CUDA_LABEL_AGREEMENT with fp32, timed once and
    remembered."""
    if not torch.cuda.is_available():
        raise BackendError("CUDA asked for, but this machine has no CUDA device")
    candidates = cuda_candidates(backend, precision)
    if not candidates:
        raise BackendError(f"no CUDA backend here runs backend={backend} precision={precision}")
    return _fastest_choice(checkpoint, candidates, "cuda", input_size, None, None, cuda_graphs)


def _fastest_choice(
    checkpoint: str | Path,
    candidates: list[tuple[str, str]],
    device: str,
    input_size: tuple[int, int] | None,
    calibration: str | Path | None,
    threads: int | None,
    cuda_graphs: bool = True,
) -> tuple[str, str]:
    if len(candidates) == 1:
        return candidates[0]
    from engine.runtime.artifacts import file_digest
    from engine.runtime.preprocess import model_input_size

    size = model_input_size(input_size, input_size) if input_size else (360, 480)
    graphs = cuda_graphs and device == "cuda"  # graphs change which precision is faster
    key = _choice_key(file_digest(checkpoint), size, threads, candidates, calibration, device, graphs)
    remembered = _remembered_choices()
    if isinstance(remembered.get(key), dict) and tuple(remembered[key].get("picked", ())) in candidates:
        picked = tuple(remembered[key]["picked"])
        log.info("auto: %s %s (measured before on this machine)", *picked)
        return picked
    agreement = {}
    if device == "cuda":
        agreement = label_agreement(checkpoint, candidates, size, cuda_graphs=graphs)
        candidates = [c for c in candidates if agreement[c] >= CUDA_LABEL_AGREEMENT]
    log.info("auto: timing %s at %dx%d on %s (once per checkpoint and machine)", candidates, *size, device)
    medians = time_candidates(checkpoint, candidates, size, calibration, threads, device, graphs)
    picked = min(medians, key=medians.get)
    named = {f"{b} {p}": round(t, 2) for (b, p), t in medians.items()}
    log.info("auto: picked %s %s; median ms %s", *picked, named)
    remembered[key] = {
        "picked": list(picked),
        "median_ms": named,
        "label_agreement": {f"{b} {p}": share for (b, p), share in agreement.items()},
    }
    _choices_file().write_text(json.dumps(remembered, indent=1) + "\n")
    return picked


def label_agreement(
    checkpoint: str | Path,
    candidates: list[tuple[str, str]],
    size: tuple[int, int],
    device: str = "cuda",
    cuda_graphs: bool = True,
) -> dict[tuple[str, str], float]:
    """Each candidate's share of pixels labelled as the first candidate (fp32) labels them,
    on the bundled calibration frames resized to `size`."""
    import cv2

    from engine.media import list_images
    from engine.runtime.artifacts import default_calibration
    from engine.runtime.backends import create_backend

    folder = default_calibration()
    images = list_images(folder)[:AGREEMENT_FRAMES] if folder else []
    if not images:
        raise BackendError("the bundled calibration frames are missing: reinstall RTFormer Studio")
    frames = np.stack([cv2.resize(cv2.imread(str(path)), size[::-1]) for path in images])
    labels = {}
    for name, kind in candidates:
        backend = create_backend(Path(checkpoint), name, device, kind, None, None, cuda_graphs=cuda_graphs)
        labels[(name, kind)] = torch.cat([backend.infer_labels(frame[None]) for frame in frames])
    reference = labels[candidates[0]]
    return {candidate: float((found == reference).float().mean()) for candidate, found in labels.items()}


def time_candidates(
    checkpoint: str | Path,
    candidates: list[tuple[str, str]],
    size: tuple[int, int],
    calibration: str | Path | None,
    threads: int | None,
    device: str = "cpu",
    cuda_graphs: bool = False,
    rounds: int = 8,
) -> dict[tuple[str, str], float]:
    """Median ms of each candidate on one random frame, timed interleaved round by round
    so that load from elsewhere on the machine slows them alike (on CUDA the labels'
    copy to the host waits for the GPU)."""
    from engine.runtime.backends import create_backend

    frames = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    runners = {}
    for name, kind in candidates:
        chosen = create_backend(
            Path(checkpoint), name, device, kind, calibration, threads, cuda_graphs=cuda_graphs
        )
        runners[(name, kind)] = chosen
        for _ in range(2):  # warm-up: first-run allocations and compilation
            chosen.infer_labels(frames)
    times: dict[tuple[str, str], list[float]] = {candidate: [] for candidate in runners}
    for _ in range(rounds):
        for candidate, runner in runners.items():
            started = time.perf_counter()
            runner.infer_labels(frames)
            times[candidate].append((time.perf_counter() - started) * 1e3)
    return {candidate: statistics.median(values) for candidate, values in times.items()}


# Bumped when a backend changes how it runs a precision, so that choices timed before are
# timed again: 2 since OpenVINO INT8 runs its float parts in bf16 where the CPU has it;
# 3 since OpenVINO with fp32 float parts takes its labels by reduction (labels_by_reduction).
CHOICE_REVISION = 3


def _choice_key(digest, size, threads, candidates, calibration, device="cpu", graphs=False) -> str:
    versions = installed_distributions("onnxruntime", "openvino", "onnxruntime-gpu", "torch")
    machine = _cpu_name() if device == "cpu" else f"{torch.cuda.get_device_name(0)} graphs={graphs}"
    text = json.dumps(
        [
            CHOICE_REVISION,
            digest,
            size,
            threads or os.cpu_count(),
            candidates,
            str(calibration),
            versions,
            machine,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_name() -> str:
    """The CPU's model and feature flags (two EPYCs of one name may differ in AVX-512), and
    oneDNN's instruction-set cap where one is set (it changes which kernels run)."""
    cap = os.environ.get(ISA_CAP_VARIABLE)
    capped = f" {ISA_CAP_VARIABLE}={cap}" if cap else ""
    return f"{cpuinfo_field('model name')} {cpuinfo_field('flags')}{capped}".strip() or platform.machine()


def _choices_file() -> Path:
    folder = user_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "auto-backend.json"


def _remembered_choices() -> dict:
    try:
        remembered = json.loads(_choices_file().read_text())
        return remembered if isinstance(remembered, dict) else {}
    except (OSError, ValueError):
        return {}


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
