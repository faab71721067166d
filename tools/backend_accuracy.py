"""CamVid test mIoU of a checkpoint on every CPU backend and precision, on the app's
own path (argmax at the model's input size, labels resized), written as the accuracy
record beside the weights (`<stem>.accuracy.json`) that "auto" reads to know which
precisions stay within the accuracy limits (engine.runtime.availability).

    .venv/bin/python tools/backend_accuracy.py weights/rtformer-slim-camvid.safetensors \
        --data-root ../shared/data/CamVid

INT8 is calibrated on the default calibration (assets/calibration: CamVid train and Udacity frames), which is what
the app and `segment` use when the user gives none; `--calibration` measures another.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from engine.runtime.artifacts import default_calibration, file_digest
from engine.runtime.availability import (
    ACCURACY_REFERENCE,
    CPU_CANDIDATES,
    accuracy_record_path,
    why_unavailable,
)
from engine.runtime.segmenter import Segmenter
from engine.training.data import open_dataset
from engine.training.evaluate import evaluate_segmenter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--calibration", type=Path, help="INT8 calibration frames (default: assets/calibration)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("-o", "--output", type=Path, help="default: beside the checkpoint")
    args = parser.parse_args()

    from engine.runtime.availability import BackendChoice

    dataset = open_dataset("camvid", args.data_root, args.split)
    calibration = args.calibration or default_calibration()
    miou, seconds, skipped = {}, {}, {}
    for backend, precision in CPU_CANDIDATES:
        name = f"{backend} {precision}"
        reason = why_unavailable(BackendChoice(name, backend, "cpu", precision))
        if reason:
            skipped[name] = reason
            print(f"{name}: skipped ({reason})", file=sys.stderr)
            continue
        segmenter = Segmenter(
            args.checkpoint, backend, "cpu", precision, calibration=calibration, threads=args.threads
        )
        started = time.perf_counter()
        report = evaluate_segmenter(segmenter, dataset)
        seconds[name] = round(time.perf_counter() - started, 1)
        miou[name] = report.miou
        print(f"{name}: mIoU {report.miou:.2f} ({seconds[name]} s)", file=sys.stderr)
    record = {
        "checkpoint": args.checkpoint.name,
        "checkpoint_digest": file_digest(args.checkpoint),
        "dataset": f"CamVid {args.split} ({len(dataset)} images, 360x480)",
        "path": "app (argmax at the model's input size, then labels resized)",
        "reference": ACCURACY_REFERENCE,
        "calibration": Path(calibration).name if calibration else None,
        "miou": miou,
        "loss_vs_reference": {
            name: round(miou[ACCURACY_REFERENCE] - value, 2) for name, value in miou.items()
        },
        "unavailable": skipped,
        "machine": platform.processor() or platform.machine(),
        "command": " ".join(["python", *sys.argv]),
    }
    output = args.output or accuracy_record_path(args.checkpoint)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["loss_vs_reference"], indent=1))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
