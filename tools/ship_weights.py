"""Turn a finished training run (or a mix of checkpoints made by
`tools/interpolate_weights.py`) into a shipped checkpoint in weights/.

    .venv/bin/python tools/ship_weights.py runs/slim-camvid weights/rtformer-slim-camvid.safetensors \
        --data-root data/CamVid --split test
    .venv/bin/python tools/ship_weights.py MIX.safetensors OUT.safetensors --data-root ... --keep-bn --half

Recomputes the BN statistics over the training images (see
`engine.training.train.recalibrate_batchnorm`) and keeps them or the training run's,
whichever scores higher on the training images (the test split never decides);
evaluates both on the test split (PyTorch, full resolution, single scale) for
the record, then writes the checkpoint with
its metadata (test mIoU, per-class IoU, training command, configuration and
time), the evaluation report as JSON, and the training curves beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict
from pathlib import Path

from engine.model.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from engine.model.classes import class_set
from engine.training.data import open_dataset
from engine.training.evaluate import evaluate
from engine.training.loop import read_log
from engine.training.train import plot_curves, recalibrate_batchnorm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="a training run's folder, or a checkpoint file (a mix)")
    parser.add_argument("output", type=Path)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--train-split", default="train+val", help="images for the BN statistics")
    parser.add_argument("--half", action="store_true", help="store float16 (evaluated as stored)")
    parser.add_argument("--trained-on", help="where it was trained, e.g. 'one NVIDIA H200'")
    parser.add_argument("--training-command", help="the command that trained it, when not `rtformer train`")
    parser.add_argument(
        "--keep-bn",
        action="store_true",
        help="ship the training run's BN statistics without trying recalibration (runs that also "
        "trained on other images: CamVid-only statistics would undo what those taught)",
    )
    args = parser.parse_args()

    run_folder = args.run.is_dir()
    as_trained, info = load_checkpoint(args.run / "last.safetensors" if run_folder else args.run)
    dataset = open_dataset(args.dataset, args.data_root, args.split)
    if args.half:  # evaluate exactly what will be stored
        store_as_half(as_trained)
    if args.keep_bn:
        model, report = as_trained, evaluate(as_trained, dataset)
        print(report.table())
        bn_metrics = {"bn_statistics": "the training run's (--keep-bn)"}
    else:
        model, report, bn_metrics = choose_bn_statistics(as_trained, dataset, args)

    log = read_log(args.run / "log.jsonl") if run_folder else []
    hours = (log[-1]["time"] - log[0]["time"]) / 3600 if log else 0.0
    shipped = shipped_info(info, report, bn_metrics, args, hours if run_folder else None)
    save_checkpoint(args.output, model, shipped, half=args.half)
    report.to_json(args.output.with_suffix(".eval.json"))
    if run_folder:  # a mix has no curves of its own
        plot_curves(args.run / "log.jsonl", args.output.with_suffix(".curves.png"))
    print(
        json.dumps(
            {"written": str(args.output), "hours": round(hours, 2), **asdict(report)} | {"confusion": "..."}
        )
    )


def shipped_info(info: CheckpointInfo, report, bn_metrics: dict, args, hours: float | None) -> CheckpointInfo:
    """The shipped file's metadata: its own evaluation, the training record, and the
    training hours (None for a mix, whose record names the runs instead)."""
    metrics = {
        f"{args.split}_miou": round(report.miou, 2),
        f"{args.split}_pixel_accuracy": round(report.pixel_accuracy, 2),
        f"{args.split}_class_iou": {
            k: None if v is None else round(v, 2) for k, v in report.class_iou.items()
        },
        "evaluation": f"{args.dataset} {args.split}, single scale, full resolution, PyTorch fp32",
        "step": info.metrics.get("step"),
        **bn_metrics,
    }
    extra = dict(info.extra)
    if hours is not None:
        extra["training_hours"] = round(hours, 2)
    if args.trained_on:
        extra["trained_on"] = args.trained_on
    if args.training_command:
        extra["training_command"] = args.training_command
    return CheckpointInfo.for_classes(
        info.config, class_set(args.dataset), input_size=(360, 480), metrics=metrics, extra=extra
    )


def store_as_half(model) -> None:
    model.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    )


def choose_bn_statistics(as_trained, dataset, args):
    """The training run's BN statistics or ones recomputed over the training images,
    whichever scores higher there (the test split never decides); both evaluated on the test split."""
    train_set = open_dataset(args.dataset, args.data_root, args.train_split)
    recalibrated = copy.deepcopy(as_trained)
    recalibrate_batchnorm(recalibrated, train_set)
    recalibrated.eval()
    if args.half:
        store_as_half(recalibrated)
    fit = {
        name: evaluate(m, train_set).miou
        for name, m in (("training run", as_trained), ("recalibrated", recalibrated))
    }
    chosen = max(fit, key=fit.get)
    before, after = evaluate(as_trained, dataset), evaluate(recalibrated, dataset)
    report = after if chosen == "recalibrated" else before
    print(report.table())
    print(
        f"{args.split} mIoU with the training run's BN statistics: {before.miou:.2f}; recalibrated: "
        f"{after.miou:.2f}; shipped: {chosen} ({args.train_split} mIoU {fit['training run']:.2f} vs "
        f"{fit['recalibrated']:.2f})"
    )
    metrics = {
        f"{args.split}_miou_training_bn_statistics": round(before.miou, 2),
        f"{args.split}_miou_recalibrated_bn_statistics": round(after.miou, 2),
        "bn_statistics": f"{chosen} (higher {args.train_split} mIoU: "
        f"{fit['training run']:.2f} training run, {fit['recalibrated']:.2f} recalibrated)",
    }
    return (recalibrated if chosen == "recalibrated" else as_trained), report, metrics


if __name__ == "__main__":
    main()
