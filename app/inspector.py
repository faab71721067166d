"""The pixel inspector: what the model thinks at the pixel under the pointer, live or
paused. The best three classes with their probabilities (the softmax of the frame's
logits there), and the steady label where it differs from the frame's own.

`model_pixel` maps a point of the shown picture to a pixel of the model's input, for
every view: one panel (overlay, mask, confidence), two (side by side: the left shows
the plain frame, the right the overlay, both the same place), or the Compare view's
header and two models.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.services import Result
from app.services.compare import HEADER_PIXELS
from engine.runtime import top_classes


@dataclass(frozen=True)
class Spot:
    """A pixel of the model's input under the pointer, and which panel it was in."""

    row: int
    column: int
    panel: int  # 0: the main model; 1: the Compare view's second model


def model_pixel(result: Result, x: float, y: float, picture_size: tuple[int, int], view: str) -> Spot | None:
    """The model pixel at (x, y) in picture pixels (the picture is `picture_size` (H, W)
    as drawn), or None outside the frame (the Compare view's header)."""
    height, width = picture_size
    panels = 2 if result.partner is not None or view == "side-by-side" else 1
    if result.partner is not None:
        scale = height / max(1, result.picture.shape[0])  # the header scales with the picture
        header = HEADER_PIXELS * scale
        y, height = y - header, height - header
    panel_width = width / panels
    panel = min(panels - 1, int(x // panel_width)) if panels > 1 else 0
    fx, fy = (x - panel * panel_width) / panel_width, y / max(height, 1)
    if not (0 <= fx < 1 and 0 <= fy < 1):
        return None
    rows, columns = result.labels.shape
    spot_panel = panel if result.partner is not None else 0
    return Spot(int(fy * rows), int(fx * columns), spot_panel)


def describe(result: Result, spot: Spot, names: list[str]) -> str:
    """ "Road 91.2% | Sidewalk 6.0% | Car 1.1%", and "steady: Sidewalk" where the steady
    label differs from the frame's own; the second model's label in its panel."""
    if spot.panel == 1:
        labels = result.partner.labels
        row, column = _scaled(spot, result.labels.shape, labels.shape)
        return f"{result.partner.name}: {names[labels[row, column]]} (probabilities: left panel)"
    if result.logits is None:
        return f"{names[result.labels[spot.row, spot.column]]} (View > Pixel inspector for probabilities)"
    best = top_classes(result.logits, spot.row, spot.column)
    text = " | ".join(f"{names[index]} {probability * 100:.1f}%" for index, probability in best)
    steady = int(result.labels[spot.row, spot.column])
    if steady != best[0][0]:
        text += f"; steady: {names[steady]}"
    return text


def _scaled(spot: Spot, shape: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    return (
        min(target[0] - 1, spot.row * target[0] // shape[0]),
        min(target[1] - 1, spot.column * target[1] // shape[1]),
    )
