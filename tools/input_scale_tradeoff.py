"""What a smaller input costs and saves: CamVid test mIoU on the app's path and
milliseconds a frame, at each input scale the app offers (`INPUT_SCALES`), the timings
interleaved in one process so that the machine's noise hits every scale alike.

    # accuracy (any time), then speed (on a quiet machine):
    .venv/bin/python tools/input_scale_tradeoff.py --data-root data/CamVid \
        --backend openvino --precision int8 --no-speed -o docs/input-scales-accuracy-openvino-int8.json
    .venv/bin/python tools/input_scale_tradeoff.py --data-root data/CamVid \
        --backend openvino --precision int8 --no-eval -o docs/input-scales-speed-epyc-bf16.json
    # the kernels an AVX2-only CPU gets (BENCHMARKS.md, "the instruction-set cap"), speed only:
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python tools/input_scale_tradeoff.py --no-eval ...
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
from pathlib import Path

import cv2

from engine.commands.bench import interleaved
from engine.resources import shipped_weights
from engine.runtime.cpu import ISA_CAP_VARIABLE, cpu_class, cpuinfo_field
from engine.runtime.segmenter import INPUT_SCALES, Segmenter
from engine.training.data import open_dataset
from engine.training.evaluate import evaluate_segmenter


def segmenters(checkpoint: Path, backend: str, precision: str, threads: int | None) -> dict[str, Segmenter]:
    """One Segmenter per offered scale, keyed by the scale as text ("0.8")."""
    return {
        f"{scale:.3g}": Segmenter(checkpoint, backend, "cpu", precision, threads=threads, input_scale=scale)
        for scale in INPUT_SCALES
    }


def speed(runners: dict[str, Segmenter], frame, rounds: int) -> dict:
    """Median ms a frame (preprocess and inference, labels at the model's size) per scale,
    and each scale's frames per second relative to the full size."""
    calls = {scale: functools.partial(runner.infer_labels, frame) for scale, runner in runners.items()}
    medians = {scale: statistics.median(times) for scale, times in interleaved(calls, rounds, 10).items()}
    full = medians["1"]
    return {
        "median_ms": {scale: round(ms, 2) for scale, ms in medians.items()},
        "speedup": {scale: round(full / ms, 3) for scale, ms in medians.items()},
    }


def accuracy(runners: dict[str, Segmenter], dataset) -> dict:
    """mIoU and per-class IoU on the app's path (argmax at the model's size, labels resized)."""
    result = {}
    for scale, runner in runners.items():
        report = evaluate_segmenter(runner, dataset)
        result[scale] = {
            "miou": round(report.miou, 2),
            "class_iou": {
                name: None if iou is None else round(iou, 1) for name, iou in report.class_iou.items()
            },
        }
        print(f"  scale {scale}: mIoU {report.miou:.2f}", file=sys.stderr, flush=True)
    return result


def measure(checkpoint: Path, args, dataset) -> dict:
    runners = segmenters(checkpoint, args.backend, args.precision, args.threads)
    frame = cv2.cvtColor(dataset.load(0)[0], cv2.COLOR_RGB2BGR)  # a CamVid frame, 360x480
    for runner in runners.values():
        runner.infer_labels(frame)  # sizes the preprocessor
    report = {
        "runs_on": runners["1"].description,
        "model_input": {scale: "x".join(map(str, r.preprocessor.size)) for scale, r in runners.items()},
    }
    if not args.no_speed:
        report.update(speed(runners, frame, args.rounds))
    if not args.no_eval:
        report["camvid"] = accuracy(runners, dataset)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="CamVid: the test split is measured")
    parser.add_argument("--variants", nargs="+", default=["slim", "base"])
    parser.add_argument("--backend", default="openvino", choices=("torch", "onnxruntime", "openvino"))
    parser.add_argument("--precision", default="int8", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--no-eval", action="store_true", help="speed only")
    parser.add_argument("--no-speed", action="store_true", help="accuracy only (needs no quiet machine)")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    dataset = open_dataset("camvid", args.data_root, "test")
    report = {
        "cpu": cpuinfo_field("model name"),
        "cpu_class": cpu_class(),
        "isa_cap": os.environ.get(ISA_CAP_VARIABLE, ""),
        "command": " ".join(["python", *sys.argv]),
    }
    for variant in args.variants:
        print(variant, file=sys.stderr, flush=True)
        report[variant] = measure(shipped_weights()[variant], args, dataset)
        print(json.dumps(report[variant]), flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
