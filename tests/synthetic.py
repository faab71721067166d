"""Test helpers: generated frames, videos, models, checkpoints and datasets in each
supported layout; and the app tests' wait."""

from pathlib import Path

import cv2
import numpy as np
import torch

from engine.media import VideoWriter
from engine.model.classes import CAMVID
from engine.model.rtformer import RTFormer, build_model

TINY_MODEL = {"base_channels": 4, "head_channels": 4, "spp_channels": 8, "cross_size": 2}


def block_scene(
    rng: np.random.Generator, size=(72, 96), num_classes=3, block=24
) -> tuple[np.ndarray, np.ndarray]:
    """A label map of random square blocks and an RGB image painting each class its
    own colour (CamVid's palette), so image and label alignment can be checked."""
    height, width = size
    coarse = rng.integers(0, num_classes, (height // block + 1, width // block + 1)).astype(np.uint8)
    label = np.kron(coarse, np.ones((block, block), np.uint8))[:height, :width]
    palette = np.asarray(CAMVID.palette, np.uint8)
    return palette[label % len(palette)], label


def write_png(path: Path, array: np.ndarray, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if rgb else array)


def make_camvid(root: Path, counts=None, seed: int = 0) -> Path:
    """SegNet layout: split lists, image and *annot folders; label 11 is void."""
    rng = np.random.default_rng(seed)
    for split, count in (counts or {"train": 6, "val": 2, "test": 2}).items():
        lines = []
        for index in range(count):
            image, label = block_scene(rng, num_classes=11)
            label[:4] = 11  # a void strip
            write_png(root / split / f"seq_{index:03d}.png", image, rgb=True)
            write_png(root / f"{split}annot" / f"seq_{index:03d}.png", label)
            lines.append(f"{split}/seq_{index:03d}.png {split}annot/seq_{index:03d}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_cityscapes(root: Path, split: str = "val", count: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for index in range(count):
        image, label = block_scene(rng, num_classes=19)
        city = "aachen" if index % 2 == 0 else "bremen"
        name = f"{city}_000000_{index:06d}"
        write_png(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", image, rgb=True)
        write_png(root / "gtFine" / split / city / f"{name}_gtFine_labelTrainIds.png", label)
    return root


def make_ade20k(root: Path, split: str = "validation", count: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    for index in range(count):
        image, label = block_scene(rng, num_classes=150)
        name = f"ADE_{split}_{index:08d}"
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(base / "images" / split / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        write_png(base / "annotations" / split / f"{name}.png", label)  # 0 = other, 1..150 classes
    return root


def make_folder(
    root: Path, split: str = "train", count: int = 8, num_classes: int = 3, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    names = ["background", "thing", "stuff", "other"][:num_classes]
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for index in range(count):
        image, label = block_scene(rng, num_classes=num_classes)
        write_png(root / "images" / split / f"img{index}.png", image, rgb=True)
        write_png(root / "labels" / split / f"img{index}.png", label)
    return root


# ---------------------------------------------------------------- models, frames and videos


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
    from engine.model.checkpoint import CheckpointInfo, save_checkpoint
    from engine.model.classes import CAMVID

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


def write_video(path, frames=30, fps=15, size=(96, 128)):
    with VideoWriter(path, fps=fps) as writer:
        for index in range(frames):
            writer.write(synthetic_frame(*size, seed=index))
    return path


# ---------------------------------------------------------------- the app's tests

TIMEOUT = 30_000  # ms, for qtbot.waitUntil


def wait_for_results(qtbot, window, count: int) -> None:
    target = window.session.results_seen + count
    qtbot.waitUntil(lambda: window.session.results_seen >= target, timeout=TIMEOUT)


def import_tool(name: str):
    """A script of tools/ imported as a module (tools/ is not a package), for its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
