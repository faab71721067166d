"""Confidence from the model's probabilities: the measures against a plain softmax, the
inspector's top classes, the heat map, and the AUROC used to choose the measure."""

import numpy as np
import pytest
import torch

from engine.runtime.confidence import (
    MEASURES,
    confidence,
    draw_heat_map,
    probabilities_at,
    top_classes,
)
from tests.synthetic import import_tool


@pytest.fixture
def logits():
    return np.random.default_rng(0).normal(0, 3, (11, 24, 32)).astype(np.float32)


def reference(logits: np.ndarray, measure: str) -> np.ndarray:
    probabilities = torch.softmax(torch.from_numpy(logits).double(), 0).numpy()
    ordered = np.sort(probabilities, axis=0)
    if measure == "top":
        return ordered[-1]
    if measure == "margin":
        return ordered[-1] - ordered[-2]
    entropy = -(probabilities * np.log(probabilities)).sum(0)
    return 1 - entropy / np.log(len(logits))


@pytest.mark.parametrize("measure", MEASURES)
def test_each_measure_equals_its_definition_on_the_softmax(logits, measure):
    values = confidence(logits, measure)
    assert values.shape == (24, 32) and values.dtype == np.float32
    np.testing.assert_allclose(values, reference(logits, measure), atol=1e-5)
    assert values.min() >= 0 and values.max() <= 1
    np.testing.assert_allclose(confidence(logits, measure, stride=2), values[::2, ::2], atol=1e-6)


def test_a_certain_pixel_scores_one_and_a_tie_scores_low():
    logits = np.zeros((3, 1, 2), np.float32)
    logits[0, 0, 0] = 50  # sure of class 0
    for measure in MEASURES:
        values = confidence(logits, measure)
        assert values[0, 0] == pytest.approx(1, abs=1e-6)
        assert values[0, 1] < 0.5  # three classes level
    assert confidence(logits, "margin")[0, 1] == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown confidence measure"):
        confidence(logits, "vibes")


def test_the_inspector_gives_the_best_three_classes_of_the_softmax(logits):
    probabilities = torch.softmax(torch.from_numpy(logits[:, 5, 7]).double(), 0).numpy()
    best = top_classes(logits, 5, 7)
    assert [index for index, _ in best] == list(np.argsort(-probabilities)[:3])
    assert [p for _, p in best] == pytest.approx(sorted(probabilities, reverse=True)[:3], abs=1e-9)
    assert probabilities_at(logits, 5, 7).sum() == pytest.approx(1)


def test_the_heat_map_marks_unsure_pixels_red_and_draws_its_scale():
    frame = np.full((120, 160, 3), 128, np.uint8)
    values = np.ones((60, 80), np.float32)
    values[:, :20] = 0  # the left quarter unsure
    picture = draw_heat_map(frame, values, 1.0, "margin")
    assert picture.shape == frame.shape
    left, middle = picture[60, 10].astype(int), picture[60, 80].astype(int)
    assert left[2] > left[0] and middle[0] > middle[2]  # BGR: red where unsure, blue where sure
    sure = draw_heat_map(frame, np.ones((60, 80), np.float32), 1.0, "margin")
    strip = sure[:, -12:].reshape(-1, 3).astype(int)
    assert (strip[:, 2] > strip[:, 0] + 100).any()  # the scale's unsure end, on an all-sure frame


def test_auroc_from_histograms_counts_pairs_and_ties():
    auroc = import_tool("confidence_auroc").auroc
    right, wrong = np.array([0, 0, 1, 3]), np.array([2, 1, 1, 0])
    # right above wrong: (bin 2: 3 wrong below + half a tie) + (bin 3: 4 wrong below, 3 times)
    assert auroc(right, wrong) == pytest.approx((3 + 0.5 + 3 * 4) / 16)
    assert auroc(np.array([0, 5]), np.array([5, 0])) == 1.0
