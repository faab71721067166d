"""CamVid test mIoU with each look change of the training augmentation applied to every
test image alone (sky replacement, hue/colour temperature, gamma, grayscale, blur, noise,
JPEG): how far a model's answer depends on CamVid's look.

    .venv/bin/python tools/look_robustness.py weights/rtformer-slim-camvid.safetensors \
        runs/slim-distill/last.safetensors --data-root data/CamVid -o runs/look-robustness.json

Each change is drawn with a fixed seed per image, so every model sees the same images.
This measures invariance after training; it is not a training ablation (one training
run per augmentation does not fit this 2-core machine).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.model.checkpoint import load_checkpoint
from engine.training.data import TrainTransform, open_dataset
from engine.training.evaluate import evaluate

LOOKS = {
    "none": {},
    "blue sky": {"sky_prob": 1.0},
    "hue and colour temperature": {"hue_prob": 1.0},
    "gamma": {"gamma_prob": 1.0},
    "grayscale": {"grayscale_prob": 1.0},
    "blur": {"blur_prob": 1.0},
    "noise": {"noise_prob": 1.0},
    "JPEG": {"jpeg_prob": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--looks", nargs="+", choices=list(LOOKS), default=list(LOOKS))
    parser.add_argument("-o", "--output")
    args = parser.parse_args()

    dataset = open_dataset("camvid", args.data_root, args.split)
    height, width = dataset.load(0)[1].shape
    results: dict[str, dict[str, float]] = {}
    models = {path: load_checkpoint(path)[0].eval() for path in args.checkpoints}
    for look in args.looks:
        probabilities = LOOKS[look]
        dataset.transform = TrainTransform(
            (height, width), (1.0, 1.0), flip=False, jitter=0.0, seed=123, sky_class=0, **probabilities
        )
        for path, model in models.items():
            result = evaluate(model, dataset, progress=False)
            results.setdefault(path, {})[look] = round(result.miou, 2)
            road = result.class_iou["Road"]
            results[path][f"{look} (Road IoU)"] = round(road, 2)
            print(f"{look:<28} {Path(path).name:<40} {result.miou:6.2f}  Road IoU {road:5.1f}", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
