"""Each class's share of a frame, and the table of them over a video: one owner of the
areas CSV that `rtformer segment --areas` and the app's File > Export areas write.

The CSV: a header `frame,time,<class names>`, then one row per frame in order, the time
in seconds on the source's clock, the shares as fractions of the frame that sum to 1.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def class_shares(labels: np.ndarray, classes: int) -> np.ndarray:
    """(classes,) float64: the fraction of the label map's pixels in each class."""
    counts = np.bincount(labels.ravel(), minlength=classes)[:classes]
    return counts / max(1, labels.size)


class AreasCsv:
    """Writes the areas table row by row (a context manager: the file closes on exit)."""

    def __init__(self, path: str | Path, class_names: list[str]) -> None:
        self.path = Path(path)
        self.file = open(self.path, "w", newline="")  # noqa: SIM115 - closed in close()
        self.writer = csv.writer(self.file)
        self.writer.writerow(["frame", "time", *class_names])
        self.rows, self.classes = 0, len(class_names)

    def write(self, frame: int, seconds: float, shares: np.ndarray) -> None:
        self.writer.writerow([frame, f"{seconds:.4f}", *(f"{share:.6f}" for share in shares)])
        self.rows += 1

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> AreasCsv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
