"""Our RTFormer equals the official PaddleSeg model on converted weights.

The fixtures come from tools/make_parity_fixture.py: the official model built
at a tiny size with random weights, its .pdparams, and its eval-mode logits.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.model.convert_paddle import model_from_paddle, read_pdparams
from engine.model.rtformer import RTFormerConfig

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
TOLERANCE = 1e-4


def tiny_config(official: dict) -> RTFormerConfig:
    return RTFormerConfig(
        name="tiny",
        base_channels=official["base_channels"],
        head_channels=official["head_channels"],
        spp_channels=official["spp_channels"],
        num_groups=official["num_heads"],
        cross_size=official["cross_size"],
        num_classes=official["num_classes"],
        use_injection=tuple(official["use_injection"]),
    )


@pytest.mark.parametrize("case", ["injection-slim", "injection-base"])
def test_logits_equal_the_official_model(case):
    folder = FIXTURES / case
    meta = json.loads((folder / "meta.json").read_text())
    model = model_from_paddle(read_pdparams(folder / "model.pdparams"), tiny_config(meta["config"]), case)
    image = np.random.RandomState(meta["input_seed"]).standard_normal(meta["input_shape"]).astype("float32")
    with torch.inference_mode():
        logits = model(torch.from_numpy(image)).numpy()
    official = np.load(folder / "logits.npy")
    assert logits.shape == official.shape
    difference = np.abs(logits - official).max()
    assert difference < TOLERANCE, f"max abs difference {difference:.2e}"
    # The check means something only if the logits vary a lot across pixels and classes.
    assert official.std() > 0.1
