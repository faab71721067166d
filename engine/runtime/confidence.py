"""How sure the model is, pixel by pixel, from its own probabilities (the softmax of its
logits at the model's input size).

Three measures, each in [0, 1], 1 the surest:
- "top": the best class's probability;
- "margin": the best class's probability minus the second best's;
- "entropy": 1 - H(p) / log(C), H the entropy of the class probabilities.
`DEFAULT_MEASURE` is the one that best ranks wrong pixels below right ones on CamVid
test (area under the ROC curve of "this pixel is right"; tools/confidence_auroc.py).

The logits are (C, h, w) float32 at the model's size; the views take every second row
and column (`VIEW_STRIDE`), a quarter of the work, and draw the result scaled up.
"""

from __future__ import annotations

import cv2
import numpy as np

MEASURES = ("top", "margin", "entropy")
# AUROC of "this pixel is right" over CamVid test's 233 images (docs/benchmarks/confidence-auroc-amx.json):
# top 0.885, entropy 0.885, margin 0.882 for Slim; 0.890, 0.890, 0.888 for Base (PyTorch fp32;
# OpenVINO within 0.001). The best, and the cheapest: one exponential a class, no sort.
DEFAULT_MEASURE = "top"
# The app and `segment --view confidence` compute it on every second row and column (a
# quarter of the exponentials) and draw it scaled up: the heat map looks the same.
VIEW_STRIDE = 2


def confidence(logits: np.ndarray, measure: str = DEFAULT_MEASURE, stride: int = 1) -> np.ndarray:
    """logits (C, h, w) -> confidence (h', w') float32 in [0, 1], on every `stride`-th row
    and column."""
    if measure not in MEASURES:
        raise ValueError(f"unknown confidence measure {measure!r}; choose from {', '.join(MEASURES)}")
    # One contiguous copy, then in place: the strided view made every pass 1.6x slower, and
    # each new 1.9 MB array cost page faults (1.0 against 1.5-2.2 ms a frame in the app).
    planes = np.array(logits[:, ::stride, ::stride], np.float32)  # a copy: the caller's logits stay
    np.subtract(planes, planes.max(axis=0), out=planes)  # <= 0: exp never overflows
    if measure == "margin":
        best, second = _two_largest(planes)
    shifted = planes.copy() if measure == "entropy" else None
    exponentials = np.exp(planes, out=planes)
    total = exponentials.sum(axis=0)
    if measure == "top":
        return np.reciprocal(total, out=total)
    if measure == "margin":
        return (np.exp(best) - np.exp(second)) / total
    entropy = np.log(total) - (exponentials * shifted).sum(axis=0) / total  # H = log S - sum(p * (l - l_max))
    return np.clip(1.0 - entropy / np.float32(np.log(len(planes))), 0.0, 1.0).astype(np.float32, copy=False)


def _two_largest(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    best = np.maximum(planes[0], planes[1])
    second = np.minimum(planes[0], planes[1])
    for plane in planes[2:]:
        second = np.maximum(second, np.minimum(best, plane))
        best = np.maximum(best, plane)
    return best, second


def probabilities_at(logits: np.ndarray, row: int, column: int) -> np.ndarray:
    """The class probabilities (C,) at one pixel: the softmax of its logits."""
    values = logits[:, row, column].astype(np.float64)
    values = np.exp(values - values.max())
    return values / values.sum()


def top_classes(logits: np.ndarray, row: int, column: int, count: int = 3) -> list[tuple[int, float]]:
    """The `count` most probable classes at one pixel, as (class, probability), best first."""
    probabilities = probabilities_at(logits, row, column)
    order = np.argsort(-probabilities, kind="stable")[:count]
    return [(int(index), float(probabilities[index])) for index in order]


# ----------------------------------------------------------------------- drawing

COLOUR_MAP = cv2.COLORMAP_TURBO  # unsure pixels red, sure ones blue


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Confidence (h, w) in [0, 1] -> BGR (h, w, 3): 1 blue (sure) ... 0 red (unsure)."""
    return cv2.applyColorMap(((1.0 - values) * 255).astype(np.uint8), COLOUR_MAP)


def draw_heat_map(frame: np.ndarray, values: np.ndarray, alpha: float, measure: str) -> np.ndarray:
    """The confidence's colours blended over the frame, with the colour scale and its legend."""
    height, width = frame.shape[:2]
    colours = cv2.resize(heat_colours(values), (width, height), interpolation=cv2.INTER_LINEAR)
    picture = cv2.addWeighted(frame, 1.0 - alpha, colours, alpha, 0.0)
    draw_scale(picture, measure)
    return picture


def draw_scale(picture: np.ndarray, measure: str) -> None:
    """A vertical colour scale at the right edge: 1 (sure) at the top, 0 at the bottom,
    with the measure's name; sized to the picture."""
    height, width = picture.shape[:2]
    bar_height, bar_width = max(20, height // 3), max(6, width // 60)
    margin, font = max(4, width // 80), cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.3, height / 900)
    top, right = margin * 3, width - margin
    left = right - bar_width
    if left < 0 or top + bar_height >= height:
        return
    ramp = np.linspace(1.0, 0.0, bar_height, dtype=np.float32)[:, None].repeat(bar_width, 1)
    picture[top : top + bar_height, left:right] = heat_colours(ramp)
    cv2.rectangle(picture, (left, top), (right - 1, top + bar_height - 1), (255, 255, 255), 1)
    for text, y in (("1", top + 4), ("0", top + bar_height), (f"{measure}", top - margin)):
        size = cv2.getTextSize(text, font, scale, 1)[0]
        origin = (max(0, left - size[0] - 3 if text != measure else right - size[0]), y + size[1] // 2)
        cv2.putText(picture, text, origin, font, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(picture, text, origin, font, scale, (255, 255, 255), 1, cv2.LINE_AA)
