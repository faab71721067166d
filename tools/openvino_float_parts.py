"""OpenVINO INT8 on a CPU with bf16: the float parts in bf16 (labels by TopK, the default)
against fp32 float parts (labels by the reduction, `labels_by_reduction`), interleaved in
one process through `Segmenter.infer_labels` on a CamVid frame at 360x480.

    .venv/bin/python tools/openvino_float_parts.py --frames data/CamVid/test -o OUT.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path
from unittest import mock

import cv2

import engine.runtime.backends as backends
from engine.commands.bench import interleaved
from engine.runtime.segmenter import Segmenter

CHOICES = ("bf16 float parts", "fp32 float parts + reduction")
REPORTED = backends.openvino_capabilities  # before the patch below replaces it


def without_bf16() -> set[str]:
    """What OpenVINO reports, less bf16: the backend then takes the f32 hint for INT8."""
    capabilities = set(REPORTED())
    capabilities.discard("BF16")
    return capabilities


def segmenters(checkpoint: str) -> dict[str, Segmenter]:
    default = Segmenter(checkpoint, backend="openvino", precision="int8")
    if default.backend.config["INFERENCE_PRECISION_HINT"] != "bf16":
        raise SystemExit("this CPU runs OpenVINO INT8's float parts in fp32 already: nothing to compare")
    with mock.patch.object(backends, "openvino_capabilities", without_bf16):
        fp32 = Segmenter(checkpoint, backend="openvino", precision="int8")
    return dict(zip(CHOICES, (default, fp32), strict=True))


def compare(checkpoint: str, frame, rounds: int) -> dict:
    runners = segmenters(checkpoint)
    first, second = (runner.infer_labels(frame) for runner in runners.values())
    calls = {name: functools.partial(runner.infer_labels, frame) for name, runner in runners.items()}
    times = interleaved(calls, rounds, warmup=10)
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    return {
        "median_ms": medians,
        "fp32_over_bf16": round(medians[CHOICES[1]] / medians[CHOICES[0]], 3),
        "labels_equal": round(float((first == second).float().mean()), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="data/CamVid/test")
    parser.add_argument("--variants", nargs="+", default=["slim", "base"])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    frame = cv2.imread(str(sorted(Path(args.frames).glob("*.png"))[0]))
    report = {}
    for variant in args.variants:
        report[variant] = compare(f"weights/rtformer-{variant}-camvid.safetensors", frame, args.rounds)
        print(variant, report[variant], flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
