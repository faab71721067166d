"""engine.runtime.render: labels at the model's size, drawing at the view's size, hidden classes."""

import cv2
import numpy as np

from engine.model.classes import CAMVID
from engine.runtime.render import colorize, palette_lut, render
from tests.synthetic import synthetic_frame

LUT = palette_lut(CAMVID.palette)


def small_labels(height=24, width=40, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 11, (height, width)).astype(np.uint8)


def test_model_size_labels_draw_the_same_pixels_as_labels_scaled_first():
    frame = synthetic_frame(108, 192)
    labels = small_labels()
    scaled = cv2.resize(labels, (192, 108), interpolation=cv2.INTER_NEAREST)  # what postprocess makes
    for view in ("overlay", "mask", "side-by-side"):
        assert np.array_equal(render(view, frame, labels, LUT), render(view, frame, scaled, LUT))
    hidden = {1, 4}
    assert np.array_equal(
        render("overlay", frame, labels, LUT, hidden=hidden),
        render("overlay", frame, scaled, LUT, hidden=hidden),
    )
    shown = render("mask", frame, labels, LUT, hidden=hidden)
    assert (shown[np.isin(scaled, list(hidden))] == 0).all()
    assert (
        shown[~np.isin(scaled, list(hidden))] == colorize(scaled, LUT)[~np.isin(scaled, list(hidden))]
    ).all()


def test_drawing_at_the_view_size_keeps_the_aspect_ratio_and_never_enlarges():
    frame = synthetic_frame(216, 384)
    labels = small_labels()
    assert render("overlay", frame, labels, LUT, size=(100, 1000)).shape == (100, 178, 3)
    assert render("side-by-side", frame, labels, LUT, size=(216, 384)).shape == (108, 384, 3)  # two panels
    assert render("mask", frame, labels, LUT, size=(2000, 2000)).shape == (216, 384, 3)
