"""Small generated datasets in each supported layout (for tests only)."""

from pathlib import Path

import cv2
import numpy as np

from engine.classes import CAMVID

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
