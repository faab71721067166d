"""ONNX export of RTFormer with dynamic batch, height and width."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from engine.rtformer import RTFormer

DEFAULT_OPSET = 17
log = logging.getLogger("rtformer.engine")


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


def file_digest(path: str | Path, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def cache_path(checkpoint: str | Path, kind: str, opset: int = DEFAULT_OPSET) -> Path:
    """Where the ONNX model of `checkpoint` is cached: beside it, named by the
    checkpoint's hash and the export settings, or in the user cache when the
    checkpoint's folder is read-only."""
    checkpoint = Path(checkpoint)
    name = f"{checkpoint.stem}.{file_digest(checkpoint)}.opset{opset}.{kind}.onnx"
    folder = checkpoint.parent
    if not os.access(folder, os.W_OK):
        folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rtformer-studio"
    return folder / name


def cached_onnx(checkpoint: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """The fp32 ONNX model of `checkpoint`, exported on first use."""
    from engine.checkpoint import load_checkpoint

    path = cache_path(checkpoint, "fp32", opset)
    if not path.is_file():
        model, info = load_checkpoint(checkpoint)
        log.info("exporting %s to %s", checkpoint, path)
        temporary = path.with_suffix(".tmp")
        export_onnx(model, temporary, opset, sample_size=info.input_size or (360, 480))
        temporary.replace(path)
    return path
