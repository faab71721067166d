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


def write_checkpoint(path, variant: str = "slim", input_size=(128, 160), **overrides):
    """A calibrated random model saved as a CamVid checkpoint (for engine tests)."""
    from engine.checkpoint import CheckpointInfo, save_checkpoint
    from engine.classes import CAMVID

    model = calibrated_model(variant, num_classes=CAMVID.num_classes, **overrides)
    info = CheckpointInfo.for_classes(model.config, CAMVID, input_size=input_size)
    return save_checkpoint(path, model, info)


def synthetic_frame(height: int = 120, width: int = 160, seed: int = 0):
    """A BGR frame with smooth structure (gradients and blocks), not plain noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    frame = (
        frame.astype(np.int32)
        + rng.integers(0, 60, (height // 20 + 1, width // 20 + 1, 3))
        .repeat(20, 0)
        .repeat(20, 1)[:height, :width]
    )
    return np.clip(frame, 0, 255).astype(np.uint8)
