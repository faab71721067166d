"""Turn a finished training run into a shipped checkpoint in weights/.

    .venv/bin/python tools/ship_weights.py runs/slim-camvid weights/rtformer-slim-camvid.safetensors \
        --data-root ../shared/data/CamVid --split test

Recomputes the BN statistics over the training images (see
`engine.train.recalibrate_batchnorm`), evaluates on the test split (PyTorch,
full resolution, single scale) before and after, then writes the checkpoint with
its metadata (test mIoU, per-class IoU, training command, configuration and
time), the evaluation report as JSON, and the training curves beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from engine.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from engine.classes import class_set
from engine.data import open_dataset
from engine.evaluate import evaluate
from engine.train import read_log, recalibrate_batchnorm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--train-split", default="train+val", help="images for the BN statistics")
    args = parser.parse_args()

    model, info = load_checkpoint(args.run / "last.safetensors")
    dataset = open_dataset(args.dataset, args.data_root, args.split)
    before = evaluate(model, dataset)
    recalibrate_batchnorm(model, open_dataset(args.dataset, args.data_root, args.train_split))
    model.eval()
    report = evaluate(model, dataset)
    print(report.table())
    print(f"mIoU with the training run's BN statistics: {before.miou:.2f}; recalibrated: {report.miou:.2f}")

    log = read_log(args.run / "log.jsonl")
    hours = (log[-1]["time"] - log[0]["time"]) / 3600 if log else 0.0
    metrics = {
        f"{args.split}_miou": round(report.miou, 2),
        f"{args.split}_pixel_accuracy": round(report.pixel_accuracy, 2),
        f"{args.split}_class_iou": {
            k: None if v is None else round(v, 2) for k, v in report.class_iou.items()
        },
        "evaluation": f"{args.dataset} {args.split}, single scale, full resolution, PyTorch fp32",
        "step": info.metrics.get("step"),
        f"{args.split}_miou_before_bn_recalibration": round(before.miou, 2),
    }
    extra = dict(info.extra)
    extra["training_hours"] = round(hours, 2)
    shipped = CheckpointInfo.for_classes(
        info.config, class_set(args.dataset), input_size=(360, 480), metrics=metrics, extra=extra
    )
    save_checkpoint(args.output, model, shipped)
    report.to_json(args.output.with_suffix(".eval.json"))
    shutil.copy(args.run / "curves.png", args.output.with_suffix(".curves.png"))
    print(
        json.dumps(
            {"written": str(args.output), "hours": round(hours, 2), **asdict(report)} | {"confusion": "..."}
        )
    )


if __name__ == "__main__":
    main()
