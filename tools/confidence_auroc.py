"""Which confidence measure tells right pixels from wrong ones: the area under the ROC
curve of "this pixel is right" (the argmax equals the label) for each measure of
engine.runtime.confidence, over every labelled pixel of CamVid test, per variant and
backend, at the model's input size (what the app and `segment` draw).

    .venv/bin/python tools/confidence_auroc.py --data-root data/CamVid \\
        -o docs/benchmarks/confidence-auroc-amx.json

AUROC from 4096-bin histograms of each measure over right and wrong pixels (exact to
about 1e-4). Also the mean confidence of right and wrong pixels, and the cost of the
measure per frame at the view's stride.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from engine.commands.bench import machine_description, write_json
from engine.resources import shipped_weights
from engine.runtime.confidence import MEASURES, VIEW_STRIDE, confidence
from engine.runtime.cpu import cpu_class
from engine.runtime.segmenter import Segmenter
from engine.training.data import IGNORE_INDEX, camvid

BINS = 4096


def auroc(right: np.ndarray, wrong: np.ndarray) -> float:
    """Probability that a random right pixel scores above a random wrong one (ties half),
    from histograms over the same bins."""
    below = np.cumsum(wrong) - wrong  # wrong pixels in lower bins
    pairs = right.sum() * wrong.sum()
    return float((right * (below + 0.5 * wrong)).sum() / pairs) if pairs else float("nan")


def measure(segmenter: Segmenter, root: Path, limit: int | None) -> dict:
    data = camvid(root, "test")
    histograms = {name: np.zeros((2, BINS), np.int64) for name in MEASURES}
    sums = {name: np.zeros(2) for name in MEASURES}
    timings = {name: [] for name in MEASURES}
    count = len(data) if limit is None else min(limit, len(data))
    for index in range(count):
        image, label = data.load(index)
        logits, labels = segmenter.infer_both(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        height, width = labels.shape
        truth = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
        valid = truth != IGNORE_INDEX
        correct = (labels == truth)[valid]
        for name in MEASURES:
            values = confidence(logits, name)[valid]
            bins = np.minimum((values * BINS).astype(np.int64), BINS - 1)
            histograms[name][1] += np.bincount(bins[correct], minlength=BINS)
            histograms[name][0] += np.bincount(bins[~correct], minlength=BINS)
            sums[name] += (values[correct].sum(), values[~correct].sum())
            started = time.perf_counter()
            confidence(logits, name, VIEW_STRIDE)
            timings[name].append((time.perf_counter() - started) * 1e3)
    result = {"images": count, "backend": segmenter.description}
    for name in MEASURES:
        wrong, right = histograms[name]
        result[name] = {
            "auroc": auroc(right, wrong),
            "mean_right": sums[name][0] / max(1, right.sum()),
            "mean_wrong": sums[name][1] / max(1, wrong.sum()),
            "ms_per_frame_at_view_stride": float(np.median(timings[name])),
        }
    result["pixel_accuracy"] = float(histograms[MEASURES[0]][1].sum() / histograms[MEASURES[0]].sum())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=Path("data/CamVid"))
    parser.add_argument("--backends", nargs="+", default=["torch", "auto"])
    parser.add_argument("--limit", type=int, help="the first N test images only")
    parser.add_argument("-o", "--output", type=Path)
    arguments = parser.parse_args()
    report = {"machine": {**machine_description(), "class": cpu_class()}, "results": {}}
    for variant, weights in shipped_weights().items():
        for backend in arguments.backends:
            segmenter = Segmenter(weights, backend)
            key = f"{variant} {segmenter.description}"
            report["results"][key] = measure(segmenter, arguments.data_root, arguments.limit)
            print(key, json.dumps(report["results"][key]), flush=True)
    if arguments.output:
        write_json(report, arguments.output)


if __name__ == "__main__":
    main()
