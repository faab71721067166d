"""INT8 with 7-bit against 8-bit weights on this CPU: CamVid test mIoU on the app's path and
ms per frame, for ONNX Runtime and OpenVINO, side by side in one run.

    .venv/bin/python tools/int8_weight_width.py weights/rtformer-slim-camvid.safetensors \
        weights/rtformer-base-camvid.safetensors --data-root data/CamVid -o int8-width.json

Why it matters: CPUs without VNNI multiply u8 x s8 pairs with a saturating 16-bit add
(vpmaddubsw), which 8-bit weights overflow (engine.runtime.quantize); with VNNI they
should not. Timing is one frame at a time at the model's input size, the runners
interleaved round by round so that load from elsewhere slows them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from engine.runtime.artifacts import INT8_WEIGHT_BITS_VARIABLE, default_calibration
from engine.runtime.cpu import ISA_CAP_VARIABLE, cpu_class, cpuinfo_field
from engine.runtime.segmenter import Segmenter
from engine.training.data import open_dataset
from engine.training.evaluate import evaluate_segmenter

RUNTIMES = ("onnxruntime", "openvino")
WIDTHS = (7, 8)


def int8_segmenters(checkpoint: Path, threads: int | None) -> dict[str, Segmenter]:
    """ "<runtime> w<bits>" -> a Segmenter on that INT8 model (default calibration)."""
    segmenters = {}
    for bits in WIDTHS:
        os.environ[INT8_WEIGHT_BITS_VARIABLE] = str(bits)  # read when the model file is chosen
        for runtime in RUNTIMES:
            segmenters[f"{runtime} w{bits}"] = Segmenter(
                checkpoint, runtime, "cpu", "int8", calibration=default_calibration(), threads=threads
            )
    os.environ.pop(INT8_WEIGHT_BITS_VARIABLE)
    return segmenters


def interleaved_ms(segmenters: dict[str, Segmenter], rounds: int) -> dict[str, float]:
    """Median ms of `infer_labels` on one frame at the model's input size, interleaved."""
    some = next(iter(segmenters.values()))
    frame = np.random.default_rng(0).integers(0, 256, (1, *some.input_size, 3), dtype=np.uint8)
    for segmenter in segmenters.values():
        for _ in range(3):  # warm-up: compilation, first-run allocations
            segmenter.backend.infer_labels(frame)
    times: dict[str, list[float]] = {name: [] for name in segmenters}
    for _ in range(rounds):
        for name, segmenter in segmenters.items():
            started = time.perf_counter()
            segmenter.backend.infer_labels(frame)
            times[name].append((time.perf_counter() - started) * 1e3)
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    dataset = open_dataset("camvid", args.data_root, args.split)
    results = {
        "cpu": cpuinfo_field("model name"),
        "cpu_class": cpu_class(),
        "isa_cap": os.environ.get(ISA_CAP_VARIABLE),  # OpenVINO follows it, ONNX Runtime does not
        "dataset": f"CamVid {args.split} ({len(dataset)} images), app path",
        "command": " ".join(["python", *sys.argv]),
        "checkpoints": {},
    }
    for checkpoint in args.checkpoints:
        segmenters = int8_segmenters(checkpoint, args.threads)
        miou = {}
        for name, segmenter in segmenters.items():
            miou[name] = round(evaluate_segmenter(segmenter, dataset).miou, 2)
            print(f"{checkpoint.name} {name}: mIoU {miou[name]}", file=sys.stderr)
        milliseconds = interleaved_ms(segmenters, args.rounds)
        print(f"{checkpoint.name} ms per frame: {milliseconds}", file=sys.stderr)
        results["checkpoints"][checkpoint.name] = {"miou": miou, "median_ms": milliseconds}
    text = json.dumps(results, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
