"""`rtformer bench`: model latency side by side, and the end-to-end `segment` path.

Runners of one (variant, size) are measured interleaved, round by round, so
that a noisy, shared machine slows them alike and their ratios hold. Each gets
warm-up runs first; then median and p95 latency, FPS, and the ratio of its FPS
to PyTorch eager fp32.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine.model.checkpoint import CheckpointInfo, save_checkpoint
from engine.model.classes import CAMVID
from engine.model.rtformer import build_model

DEFAULT_SIZES = ((360, 480), (720, 960))
REFERENCE_RUNNER = "torch eager fp32"  # ratios are to this one; to CUDA fp32 in a GPU-only run
LARGE_SIZE = (1024, 2048)


@dataclass
class Result:
    variant: str
    size: str
    runner: str
    median_ms: float
    p95_ms: float
    fps: float
    ratio_to_torch: float = 0.0
    runs: int = 0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def interleaved(
    runners: dict[str, Callable[[], None]], rounds: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Time each runner once per round, in turn; milliseconds per runner."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1e3)
    return times


def bench_checkpoint(folder: Path, variant: str, weights: Path | None) -> Path:
    """The shipped weights when given, else a random model of the variant (speed does not
    depend on the values; INT8 accuracy does, so quote it only for trained weights)."""
    if weights is not None and weights.is_file():
        return weights
    torch.manual_seed(0)
    model = build_model(variant, num_classes=CAMVID.num_classes).eval()
    return save_checkpoint(
        folder / f"{variant}.safetensors", model, CheckpointInfo.for_classes(model.config, CAMVID)
    )


def model_runners(
    checkpoint: Path, size: tuple[int, int], calibration: Path | None, threads: int, cpu: bool = True
) -> dict:
    """Runners for one size; `cpu=False` keeps only the CUDA ones (a GPU machine's check).
    The CPU backends run the deployment graph (uint8 frames in, normalisation inside) as
    the Segmenter opens it, and fetch the logits; INT8 runners only with `calibration`."""
    from engine.model.checkpoint import load_checkpoint
    from engine.runtime.availability import openvino_unavailable
    from engine.runtime.backends import create_backend

    height, width = size
    rng = np.random.default_rng(0)
    blob = rng.standard_normal((1, 3, height, width)).astype(np.float32)
    frames = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    torch.set_num_threads(threads)
    model, _ = load_checkpoint(checkpoint)
    model = model.to(memory_format=torch.channels_last)
    images = torch.from_numpy(blob).contiguous(memory_format=torch.channels_last)

    def torch_eager() -> None:
        with torch.inference_mode():
            model(images)

    def runner(backend: str, precision: str) -> Callable[[], None]:
        chosen = create_backend(checkpoint, backend, "cpu", precision, calibration, threads)
        return lambda: chosen.infer_logits(frames)

    runners = {}
    if cpu:
        runners["torch eager fp32"] = torch_eager
        wanted = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]
        if calibration is not None:
            wanted += [("onnxruntime", "int8"), ("openvino", "int8")]
        for backend, precision in wanted:
            if backend == "openvino" and openvino_unavailable(precision):
                continue  # doctor says why; bf16 needs AVX512-BF16 or AMX
            runners[f"{backend} {precision}"] = runner(backend, precision)
    if torch.cuda.is_available():
        runners.update(cuda_runners(model, blob))
        runners.update(cuda_backend_runners(checkpoint, frames))
    return runners


def cuda_backend_runners(checkpoint: Path, frames: np.ndarray) -> dict:
    """The PyTorch CUDA backend as the Segmenter runs it (uint8 frames up, normalisation
    and argmax on the GPU, labels down), eager against CUDA graphs."""
    from engine.runtime.backends import TorchBackend

    runners = {}
    for precision in ("fp32", "fp16"):
        for graphs in (False, True):
            backend = TorchBackend(checkpoint, "cuda", precision, cuda_graphs=graphs)
            name = f"cuda {precision} {'graphs' if graphs else 'eager'}"
            runners[name] = lambda chosen=backend: chosen.infer_labels(frames)  # .cpu() waits for the GPU
    return runners


def cuda_runners(model: torch.nn.Module, blob: np.ndarray) -> dict:
    torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
    gpu = torch.from_numpy(blob).cuda().contiguous(memory_format=torch.channels_last)
    # Copies: the CPU runner keeps using `model`.
    fp32_model = copy.deepcopy(model).cuda()
    fp16_model = copy.deepcopy(model).cuda().half()

    def run(net, images) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode():
                net(images)
            torch.cuda.synchronize()

        return call

    return {"torch cuda fp32": run(fp32_model, gpu), "torch cuda fp16": run(fp16_model, gpu.half())}


def end_to_end(
    checkpoint: Path,
    video: Path,
    threads: int,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    repeats: int = 3,
    streams: int = 1,
) -> dict:
    """`segment` on a video (decode, preprocess, infer, postprocess, render, encode) against
    the model alone on the same backend and input size. The two alternate `repeats` times
    and each figure is the median: on a shared machine a single pair can differ by 30%
    from noise alone (seen: 13.1 vs 16.8 FPS for the same run)."""
    from engine.commands.segment_files import segment_video
    from engine.runtime.segmenter import Segmenter

    segmenter = Segmenter(
        checkpoint, backend=backend, device="cpu", precision=precision, threads=threads, streams=streams
    )
    from engine.media import probe
    from engine.runtime.preprocess import model_input_size

    info = probe(video)
    size = model_input_size((info.height, info.width), segmenter.input_size)
    inputs = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    reports, model_fps = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as scratch:
            reports.append(segment_video(segmenter, video, Path(scratch) / "out.mp4", progress=False))
        model_fps.append(model_only_fps(segmenter.backend, inputs))
    report = sorted(reports, key=lambda r: r.fps)[len(reports) // 2]
    stages = report.stage_ms
    return {
        "video": video.name,
        "frames": report.frames,
        "input_size": list(size),
        "repeats": repeats,
        "end_to_end_fps": report.fps,
        "model_only_fps": statistics.median(model_fps),
        "end_to_end_share": report.fps / statistics.median(model_fps),
        "stage_median_ms": stages,
        "pre_post_share_of_inference": (stages["preprocess"] + stages["postprocess"]) / stages["inference"],
        "backend": segmenter.description,
    }


def model_only_fps(backend, inputs: np.ndarray, seconds: float = 4.0) -> float:
    """Frames per second of the backend alone, from as many threads as it runs at once
    (`parallel`): what `segment` could reach if nothing else took the CPU."""
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(3):
        backend.infer_labels(inputs)

    def count() -> int:
        done, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            backend.infer_labels(inputs)
            done += 1
        return done

    with ThreadPoolExecutor(backend.parallel) as pool:
        return sum(pool.map(lambda _: count(), range(backend.parallel))) / seconds


def run_bench(
    variants=("slim", "base"),
    sizes=DEFAULT_SIZES,
    weights: dict[str, Path] | None = None,
    calibration: Path | None = None,
    video: Path | None = None,
    rounds: int = 30,
    threads: int = 2,
    cpu: bool = True,
    end_to_end_backend: tuple[str, str] = ("onnxruntime", "fp32"),
    streams: int = 1,
    on_table: Callable[[str], None] = lambda table: None,
) -> dict:
    """Every runner side by side per (variant, size); `on_table` gets each group's table
    as soon as it is measured (the CLI prints it)."""
    results: list[Result] = []
    reference_runner = REFERENCE_RUNNER if cpu else "torch cuda fp32"
    previous_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as scratch:
        for variant in variants:
            checkpoint = bench_checkpoint(Path(scratch), variant, (weights or {}).get(variant))
            local = Path(scratch) / f"{variant}-local.safetensors"
            local.write_bytes(checkpoint.read_bytes())  # exports and INT8 go to scratch, not weights/
            for size in sizes:
                group = measure_size(
                    variant, local, size, calibration, threads, cpu, rounds, reference_runner
                )
                results += group
                on_table(format_table(group))
        e2e = (
            end_to_end(
                Path(scratch) / f"{variants[0]}-local.safetensors",
                video,
                threads,
                *end_to_end_backend,
                streams=streams,
            )
            if video
            else None
        )
    torch.set_num_threads(previous_threads)
    return {
        "machine": machine_description(),
        "threads": threads,
        "reference_runner": reference_runner,
        "results": [asdict(r) for r in results],
        "end_to_end": e2e,
    }


def measure_size(
    variant: str,
    checkpoint: Path,
    size: tuple[int, int],
    calibration: Path | None,
    threads: int,
    cpu: bool,
    rounds: int,
    reference_runner: str,
) -> list[Result]:
    """Every runner on one (variant, size), interleaved; speed-ups against `reference_runner`."""
    runners = model_runners(checkpoint, size, calibration, threads, cpu)
    pixels = size[0] * size[1] / (360 * 480) * (4 if variant == "base" else 1)
    # GPU runs take milliseconds: enough rounds for a stable median whatever the size.
    times = interleaved(runners, rounds=max(5, int(rounds / pixels)) if cpu else rounds)
    reference = 1000 / statistics.median(times[reference_runner])
    results = []
    for name, values in times.items():
        fps = 1000 / statistics.median(values)
        median = statistics.median(values)
        size_name = f"{size[0]}x{size[1]}"
        results.append(
            Result(
                variant, size_name, name, median, percentile(values, 95), fps, fps / reference, len(values)
            )
        )
    return results


def machine_description() -> dict:
    import onnxruntime

    from engine.runtime.availability import installed_distributions
    from engine.runtime.cpu import cpuinfo_field

    return {
        "cpu": cpuinfo_field("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": next(iter(installed_distributions("openvino")), None),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def format_table(results: list[Result]) -> str:
    lines = [
        f"{'variant':7} {'size':>9} {'runner':18} {'median ms':>10} {'p95 ms':>8} {'FPS':>7} {'x torch':>8}"
    ]
    for r in results:
        lines.append(
            f"{r.variant:7} {r.size:>9} {r.runner:18} {r.median_ms:10.1f} {r.p95_ms:8.1f} {r.fps:7.1f} "
            f"{r.ratio_to_torch:8.2f}"
        )
    return "\n".join(lines)


def write_json(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
