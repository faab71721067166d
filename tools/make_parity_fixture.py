"""Build the official PaddleSeg RTFormer at a tiny size and save a parity fixture.

Runs in its own virtual environment, never the project's:

    python3 -m venv /tmp/paddle-venv
    /tmp/paddle-venv/bin/pip install paddlepaddle paddleseg "numpy<2"
    /tmp/paddle-venv/bin/python tools/make_parity_fixture.py tests/fixtures/parity

For each injection setting (Slim's: layer4 and layer5; Base's: layer4 only) it
writes `<case>/model.pdparams` (paddle.save of the state dict: the real
official file format), `<case>/logits.npy` (eval-mode logits) and
`<case>/meta.json` (the tiny config and how to regenerate the input).
`tests/test_parity.py` converts the weights and compares the logits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import paddle
from paddleseg.models import RTFormer

# Tiny but complete: every module of the real network, odd input sizes (72x104
# gives a 3x4 map at 1/32) and a cross_size that pools it with uneven,
# overlapping bins. Batch 2 checks the official groups=batch attention per sample.
TINY = {
    "base_channels": 4,
    "head_channels": 4,
    "spp_channels": 8,
    "num_heads": 8,
    "cross_size": 2,
    "num_classes": 3,
}
INPUT_SHAPE = (2, 3, 72, 104)
INPUT_SEED = 1234
CASES = {"injection-slim": [True, True], "injection-base": [True, False]}


def randomise(model: paddle.nn.Layer, rng: np.random.RandomState) -> None:
    """Replace the (near-trivial) initial values by random ones of sane scale, so
    that every weight and BN statistic influences the logits."""
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if name.endswith("_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("_mean") or name.endswith("bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:  # BN scale
            value = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        tensor.set_value(value.astype("float32"))


def make_case(out_dir: Path, use_injection: list[bool], seed: int) -> None:
    paddle.seed(seed)
    model = RTFormer(use_injection=use_injection, **TINY)
    randomise(model, np.random.RandomState(seed))
    model.eval()
    image = np.random.RandomState(INPUT_SEED).standard_normal(INPUT_SHAPE).astype("float32")
    logits = model(paddle.to_tensor(image))[0].numpy()

    out_dir.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(out_dir / "model.pdparams"))
    np.save(out_dir / "logits.npy", logits)
    meta = {
        "config": {**TINY, "use_injection": use_injection},
        "input_shape": list(INPUT_SHAPE),
        "input_seed": INPUT_SEED,
        "input": "numpy.random.RandomState(input_seed).standard_normal(input_shape), float32",
        "paddle": paddle.__version__,
        "paddleseg": __import__("paddleseg").__version__,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{out_dir}: logits {logits.shape}, |logits| mean {np.abs(logits).mean():.3f}")


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/parity")
    for index, (case, use_injection) in enumerate(CASES.items()):
        make_case(root / case, use_injection, seed=index)


if __name__ == "__main__":
    main()
