"""CamVid test mIoU of a checkpoint on every CPU backend and precision, on the app's
own path (argmax at the model's input size, labels resized), written as the accuracy
record beside the weights (`<stem>.accuracy.json`) that "auto" reads to know which
precisions stay within the accuracy limits (engine.runtime.availability).

    .venv/bin/python tools/backend_accuracy.py weights/rtformer-slim-camvid.safetensors \
        --data-root data/CamVid

INT8 is calibrated on the default calibration (assets/calibration: CamVid train and Udacity frames), which is what
the app and `segment` use when the user gives none; `--calibration` measures another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from engine.runtime.artifacts import INT8_WEIGHT_BITS_VARIABLE, default_calibration, file_digest
from engine.runtime.availability import (
    ACCURACY_REFERENCE,
    CPU_CANDIDATES,
    BackendChoice,
    accuracy_record_path,
    why_unavailable,
)
from engine.runtime.cpu import VNNI_CLASSES, cpu_class, cpuinfo_field
from engine.runtime.segmenter import Segmenter
from engine.training.data import open_dataset
from engine.training.evaluate import evaluate_segmenter


def record_names(backend: str, precision: str, widths: tuple[int, ...]) -> list[tuple[str, int | None]]:
    """The record's names for one candidate: "openvino int8w7", ... per INT8 weight width."""
    if precision != "int8":
        return [(f"{backend} {precision}", None)]
    return [(f"{backend} int8w{bits}", bits) for bits in widths]


def measure_all(
    checkpoint: Path, dataset, calibration, widths: tuple[int, ...], threads: int | None
) -> tuple[dict[str, float], dict[str, str]]:
    """mIoU of every CPU candidate runnable here ("openvino int8w8", ...), and why the
    others were skipped."""
    miou, skipped = {}, {}
    for backend, precision in CPU_CANDIDATES:
        for name, bits in record_names(backend, precision, widths):
            reason = why_unavailable(BackendChoice(name, backend, "cpu", precision))
            if reason:
                skipped[name] = reason
                print(f"{name}: skipped ({reason})", file=sys.stderr)
                continue
            os.environ[INT8_WEIGHT_BITS_VARIABLE] = str(bits or 7)  # read when the INT8 file is chosen
            segmenter = Segmenter(
                checkpoint, backend, "cpu", precision, calibration=calibration, threads=threads
            )
            started = time.perf_counter()
            miou[name] = evaluate_segmenter(segmenter, dataset).miou
            print(f"{name}: mIoU {miou[name]:.2f} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    os.environ.pop(INT8_WEIGHT_BITS_VARIABLE, None)
    return miou, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--calibration", type=Path, help="INT8 calibration frames (default: assets/calibration)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--int8-bits",
        type=int,
        nargs="+",
        choices=(7, 8),
        help="INT8 weight widths to measure (default: 7 and 8 on a CPU with VNNI, else 7: "
        "8 bits overflow without VNNI)",
    )
    parser.add_argument("-o", "--output", type=Path, help="default: beside the checkpoint")
    args = parser.parse_args()

    dataset = open_dataset("camvid", args.data_root, args.split)
    calibration = args.calibration or default_calibration()
    widths = args.int8_bits or ((7, 8) if cpu_class() in VNNI_CLASSES else (7,))
    miou, skipped = measure_all(args.checkpoint, dataset, calibration, widths, args.threads)
    record = {
        "checkpoint": args.checkpoint.name,
        "checkpoint_digest": file_digest(args.checkpoint),
        "dataset": f"CamVid {args.split} ({len(dataset)} images, 360x480)",
        "path": "app (argmax at the model's input size, then labels resized)",
        "reference": ACCURACY_REFERENCE,
        "calibration": Path(calibration).name if calibration else None,
        "int8_weights": "int8wN: per-channel N-bit weights; a CPU runs 8 with VNNI, else 7 "
        "(engine.runtime.artifacts.int8_weight_bits)",
        "miou": miou,
        "loss_vs_reference": {
            name: round(miou[ACCURACY_REFERENCE] - value, 2) for name, value in miou.items()
        },
        "unavailable": skipped,
        "machine": platform.processor() or platform.machine(),
        "cpu": cpuinfo_field("model name"),
        "cpu_class": cpu_class(),
        "command": " ".join(["python", *sys.argv]),
    }
    output = args.output or accuracy_record_path(args.checkpoint)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["loss_vs_reference"], indent=1))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
