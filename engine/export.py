"""ONNX export of RTFormer with dynamic batch, height and width."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.rtformer import RTFormer

DEFAULT_OPSET = 17


def export_onnx(
    model: RTFormer,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    sample_size: tuple[int, int] = (360, 480),
) -> Path:
    """Export `model` (eval mode) to `path`: input "images" (N, 3, H, W) float32,
    output "logits" (N, classes, H, W); N, H and W are dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    sample = torch.zeros(1, model.config.in_channels, *sample_size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    try:
        with torch.inference_mode():
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": dynamic, "logits": dynamic},
                opset_version=opset,
                do_constant_folding=True,
                # The TorchScript exporter: the dynamo one needs onnxscript and
                # gains nothing for this plain convolutional graph.
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return path
