"""Shared test helpers."""

import torch

from engine.rtformer import RTFormer, build_model


def calibrated_model(variant: str = "slim", num_classes: int = 11, seed: int = 0, **overrides) -> RTFormer:
    """A randomly initialised model whose BN statistics come from a few batches,
    so eval-mode activations have the scale of a trained network (logits of
    order 1-10 instead of hundreds) and numeric comparisons are meaningful."""
    torch.manual_seed(seed)
    model = build_model(variant, num_classes=num_classes, drop_path_rate=0.0, **overrides).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 128, 160))
        # Kaiming init leaves the classifier far louder than a trained one; scale it
        # so logits spread like a trained model's (std of a few units).
        model.head.conv2.weight.mul_(0.1)
    return model.eval()
