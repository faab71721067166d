"""Evaluation: confusion matrix, mIoU, per-class IoU, pixel accuracy.

Predictions are made at the dataset's full resolution: logits are resized
bilinearly to the label size before the argmax. Optional horizontal flip and
multi-scale inputs average the softmax probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.training.data import IGNORE_INDEX, SegmentationDataset


def update_confusion(confusion: np.ndarray, prediction: np.ndarray, label: np.ndarray) -> None:
    """Add one image: confusion[true class, predicted class] += pixels (ignore pixels skipped)."""
    num_classes = confusion.shape[0]
    valid = label != IGNORE_INDEX
    pairs = label[valid].astype(np.int64) * num_classes + prediction[valid].astype(np.int64)
    confusion += np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass
class EvalReport:
    miou: float  # percent, mean over classes that occur in labels or predictions
    pixel_accuracy: float  # percent
    mean_accuracy: float  # percent, mean over classes that occur in labels
    class_iou: dict[str, float | None]  # percent; None where a class never occurs
    confusion: list[list[int]]
    num_images: int = 0
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    path: str = "research (PyTorch at full resolution)"

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, class_names: Sequence[str], **extra) -> EvalReport:
        confusion = confusion.astype(np.float64)
        true_positive = np.diag(confusion)
        labelled = confusion.sum(axis=1)
        predicted = confusion.sum(axis=0)
        union = labelled + predicted - true_positive
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, true_positive / union, np.nan)
            accuracy = np.where(labelled > 0, true_positive / labelled, np.nan)
        total = confusion.sum()
        return cls(
            miou=float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else 0.0,
            pixel_accuracy=float(true_positive.sum() / total * 100) if total else 0.0,
            mean_accuracy=float(np.nanmean(accuracy) * 100) if np.isfinite(accuracy).any() else 0.0,
            class_iou={
                name: (None if np.isnan(value) else float(value * 100))
                for name, value in zip(class_names, iou, strict=True)
            },
            confusion=confusion.astype(np.int64).tolist(),
            **extra,
        )

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def table(self) -> str:
        width = max(len(name) for name in self.class_iou)
        lines = [f"{'class':<{width}}  IoU (%)", "-" * (width + 9)]
        for name, value in self.class_iou.items():
            lines.append(f"{name:<{width}}  {'-' if value is None else f'{value:6.2f}':>7}")
        lines += [
            "-" * (width + 9),
            f"{'mIoU':<{width}}  {self.miou:7.2f}",
            f"{'pixel acc.':<{width}}  {self.pixel_accuracy:7.2f}",
            f"{'mean acc.':<{width}}  {self.mean_accuracy:7.2f}",
        ]
        return "\n".join(lines)


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module, image: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False
) -> torch.Tensor:
    """image: (N, 3, H, W) normalised -> class probabilities (N, classes, H, W), averaged
    over scales (input resized by each factor) and, with `flip`, horizontal flips."""
    height, width = image.shape[2:]
    total = None
    for scale in scales:
        scaled = image
        if scale != 1.0:
            size = (round(height * scale), round(width * scale))
            scaled = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        views = [(scaled, False), (scaled.flip(3), True)] if flip else [(scaled, False)]
        for view, flipped in views:
            logits = model(view)
            if flipped:
                logits = logits.flip(3)
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probabilities = logits.softmax(dim=1)
            total = probabilities if total is None else total + probabilities
    return total / (len(scales) * (2 if flip else 1))


def evaluate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    device: str | torch.device = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    progress: bool = True,
) -> EvalReport:
    """Evaluate `model` on every image of `dataset` at full resolution."""
    was_training = model.training
    model.eval()
    num_classes = dataset.classes.num_classes
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    try:
        for index in tqdm(range(len(dataset)), desc="evaluate", disable=not progress, leave=False):
            image, label = dataset[index]
            probabilities = predict_probabilities(model, image[None].to(device), scales, flip)
            prediction = probabilities.argmax(dim=1)[0].cpu().numpy()
            update_confusion(confusion, prediction, label.numpy())
    finally:
        model.train(was_training)
    return EvalReport.from_confusion(
        confusion, dataset.classes.names, num_images=len(dataset), scales=tuple(scales), flip=flip
    )


def evaluate_segmenter(
    segmenter, dataset: SegmentationDataset, exact: bool = False, progress: bool = True
) -> EvalReport:
    """Evaluate a deployed `Segmenter` (any backend and precision) on BGR frames, labels at
    the frame's size. By default on the app's own path (what the window and `segment` run:
    argmax at the model's input size, then the labels resized); `exact` resizes the logits
    first (a little more accurate, slower)."""
    import cv2

    num_classes = dataset.classes.num_classes
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for index in tqdm(range(len(dataset)), desc="evaluate", disable=not progress, leave=False):
        image, label = dataset.load(index)
        prediction = segmenter.predict(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), exact=exact)
        update_confusion(confusion, prediction, label)
    report = EvalReport.from_confusion(confusion, dataset.classes.names, num_images=len(dataset))
    report.path = "exact (logits resized, then argmax)" if exact else "app (argmax, then labels resized)"
    return report
