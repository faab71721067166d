"""ONNX export of RTFormer with dynamic batch, height and width. Which exports exist and
where they are cached is engine.runtime.artifacts' concern."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.model.rtformer import RTFormer

DEFAULT_OPSET = 17


class FramesToLogits(torch.nn.Module):
    """The deployment graph: BGR uint8 frames (N, H, W, 3) in; logits and labels out.

    Colour order, layout and ImageNet normalisation run inside the graph, so the
    runtime does them vectorised on all its threads and the Python side only
    resizes. The argmax runs inside too: the fast path asks for the small uint8
    labels alone and never copies the logits out of the runtime.
    frames: (N, H, W, 3) uint8 -> logits (N, classes, H, W) float, labels (N, H, W) uint8
    """

    def __init__(self, model: RTFormer, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(normalise_frames(frames, self.mean, self.std))
        return logits, logits.argmax(1).to(torch.uint8)


def normalise_frames(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """BGR uint8 frames (N, H, W, 3) -> normalised RGB (N, 3, H, W) in `mean`'s dtype.
    mean, std: (1, 3, 1, 1), on the 0..255 scale."""
    images = frames.permute(0, 3, 1, 2).flip(1).to(mean.dtype)
    return (images - mean) / std


def export_onnx(
    model: RTFormer,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    sample_size: tuple[int, int] = (360, 480),
    normalisation: tuple | None = None,
) -> Path:
    """Export `model` (eval mode) to `path`; N, H and W are dynamic.

    Default: input "images" (N, 3, H, W) float32, normalised; output "logits"
    (N, classes, H, W). With `normalisation=(mean, std)`: input "frames" (N, H, W, 3)
    uint8 BGR, outputs "logits" and "labels" (N, H, W) uint8 (FramesToLogits).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    network: torch.nn.Module = model
    sample = torch.zeros(1, model.config.in_channels, *sample_size)
    name, dynamic = "images", {0: "batch", 2: "height", 3: "width"}
    outputs = {"logits": {0: "batch", 2: "height", 3: "width"}}
    if normalisation is not None:
        network = FramesToLogits(model, *normalisation).eval()
        sample = torch.zeros(1, *sample_size, 3, dtype=torch.uint8)
        name, dynamic = "frames", {0: "batch", 1: "height", 2: "width"}
        outputs["labels"] = dynamic
    try:
        with torch.inference_mode():
            torch.onnx.export(
                network,
                (sample,),
                str(path),
                input_names=[name],
                output_names=list(outputs),
                dynamic_axes={name: dynamic, **outputs},
                opset_version=opset,
                do_constant_folding=True,
                # The TorchScript exporter: the dynamo one needs onnxscript and
                # gains nothing for this plain convolutional graph.
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return path
