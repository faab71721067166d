"""Segmentation datasets, augmentation and a resumable sampler.

Every reader returns a `SegmentationDataset` of (image path, label path)
pairs with labels mapped to 0..N-1 and IGNORE_INDEX (255) for void pixels.
Datasets are chosen by name and root path (`open_dataset`). Problems with the
files raise `DatasetError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from engine.classes import ADE20K, CAMVID, CITYSCAPES, ClassSet, generic_class_set

IGNORE_INDEX = 255

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what cv2.imread takes


class DatasetError(Exception):
    """A dataset folder or file that cannot be used; the message names it."""


# ---------------------------------------------------------------- samples and reading


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    """Single-channel uint8 (H, W)."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"cannot read label {path}")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetError(
            f"label {path} must be a single-channel 8-bit PNG, got {label.shape} {label.dtype}"
        )
    return label


def lookup_table(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry table applying `mapping`; values not in it stay as they are."""
    table = np.arange(256, dtype=np.uint8)
    for source, target in mapping.items():
        table[source] = target
    return table


class SegmentationDataset(Dataset):
    """(image, label) pairs; `transform(image, label, index)` returns the training tensors.

    Item: image float32 (3, H, W) normalised, label int64 (H, W) with 255 = ignore.
    """

    def __init__(
        self,
        samples: list[Sample],
        classes: ClassSet,
        label_table: np.ndarray | None = None,
        transform: Callable | None = None,
    ) -> None:
        if not samples:
            raise DatasetError("the dataset holds no images")
        self.samples = samples
        self.classes = classes
        self.label_table = label_table
        self.transform = transform or EvalTransform()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw image (RGB uint8) and label (uint8, 255 = ignore) of sample `index`."""
        sample = self.samples[index]
        image, label = read_image(sample.image), read_label(sample.label)
        if self.label_table is not None:
            label = self.label_table[label]
        if image.shape[:2] != label.shape:
            raise DatasetError(
                f"image {sample.image} is {image.shape[1]}x{image.shape[0]} but its label "
                f"{sample.label} is {label.shape[1]}x{label.shape[0]}"
            )
        bad = label[(label >= self.classes.num_classes) & (label != IGNORE_INDEX)]
        if bad.size:
            raise DatasetError(
                f"label {sample.label} has values {sorted(set(bad.tolist()))[:5]} outside the "
                f"{self.classes.num_classes} classes of {self.classes.dataset}"
            )
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        return self.transform(image, label, index)


# ---------------------------------------------------------------- dataset readers


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} folder not found: {path}")
    return path


def _pair_by_stem(images: list[Path], label_for: Callable[[Path], Path]) -> list[Sample]:
    samples = []
    for image in images:
        label = label_for(image)
        if not label.is_file():
            raise DatasetError(f"image {image} has no label (expected {label})")
        samples.append(Sample(image, label))
    return samples


def _images_in(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)


def camvid(root: Path, split: str) -> SegmentationDataset:
    """SegNet's CamVid: `{split}.txt` lists "image label" pairs; split may join with "+"."""
    samples = []
    for part in split.split("+"):
        listing = root / f"{part}.txt"
        if not listing.is_file():
            raise DatasetError(f"CamVid split list not found: {listing}")
        for line_number, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise DatasetError(f"{listing}:{line_number}: expected 'image label', got {line!r}")
            image, label = (root / field.lstrip("/") for field in fields)
            for path in (image, label):
                if not path.is_file():
                    raise DatasetError(f"{listing}:{line_number}: file not found: {path}")
            samples.append(Sample(image, label))
    return SegmentationDataset(samples, CAMVID, lookup_table({11: IGNORE_INDEX}))


def cityscapes(root: Path, split: str) -> SegmentationDataset:
    """leftImg8bit/{split}/<city>/*_leftImg8bit.png with gtFine/.../*_gtFine_labelTrainIds.png."""
    images = _images_in(_require_dir(root / "leftImg8bit" / split, "Cityscapes image"), "*/*_leftImg8bit.png")
    label_root = _require_dir(root / "gtFine" / split, "Cityscapes label")

    def label_for(image: Path) -> Path:
        stem = image.name.replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
        return label_root / image.parent.name / stem

    return SegmentationDataset(_pair_by_stem(images, label_for), CITYSCAPES)


def ade20k(root: Path, split: str) -> SegmentationDataset:
    """ADEChallengeData2016: images/{training,validation}/*.jpg, annotations/.../*.png.
    Label 0 is "other" (ignored); classes are 1..150, shifted to 0..149."""
    folder = {"train": "training", "val": "validation"}.get(split, split)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    images = _images_in(_require_dir(root / "images" / folder, "ADE20K image"))
    label_root = _require_dir(root / "annotations" / folder, "ADE20K annotation")
    samples = _pair_by_stem(images, lambda image: label_root / f"{image.stem}.png")
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[1:151] = np.arange(150)
    return SegmentationDataset(samples, ADE20K, table)


def image_folder(root: Path, split: str) -> SegmentationDataset:
    """A generic dataset: `classes.txt` (a name per line, optionally "name R G B"),
    images/{split}/* and labels/{split}/<same stem>.png with values 0..N-1, 255 = ignore."""
    class_file = root / "classes.txt"
    if not class_file.is_file():
        raise DatasetError(f"class list not found: {class_file}")
    classes = parse_class_list(class_file)
    images = _images_in(_require_dir(root / "images" / split, "image"))
    label_root = _require_dir(root / "labels" / split, "label")
    samples = _pair_by_stem(images, lambda image: label_root / f"{image.stem}.png")
    return SegmentationDataset(samples, classes)


def parse_class_list(path: Path) -> ClassSet:
    names, colours = [], []
    for line in path.read_text().splitlines():
        fields = line.strip().rsplit(maxsplit=3)
        if not fields:
            continue
        if len(fields) == 4 and all(f.isdigit() for f in fields[1:]):
            names.append(fields[0])
            colours.append(tuple(int(f) for f in fields[1:]))
        else:
            names.append(line.strip())
    if not names:
        raise DatasetError(f"{path} lists no classes")
    if colours and len(colours) != len(names):
        raise DatasetError(f"{path}: give a colour for every class or for none")
    generic = generic_class_set(len(names), dataset=path.parent.name)
    return ClassSet(generic.dataset, tuple(names), tuple(colours) if colours else generic.palette)


READERS: dict[str, Callable[[Path, str], SegmentationDataset]] = {
    "camvid": camvid,
    "cityscapes": cityscapes,
    "ade20k": ade20k,
    "folder": image_folder,
}


def open_dataset(
    name: str, root: str | Path, split: str, transform: Callable | None = None
) -> SegmentationDataset:
    """Open dataset `name` ("camvid", "cityscapes", "ade20k", "folder") at `root`."""
    if name not in READERS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {sorted(READERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{name} root folder not found: {root}")
    dataset = READERS[name](root, split)
    if transform is not None:
        dataset.transform = transform
    return dataset


# ---------------------------------------------------------------- transforms


def normalize(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) with ImageNet normalisation."""
    scale = np.float32(255.0)
    image = (image.astype(np.float32) / scale - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class EvalTransform:
    """Full resolution, normalised."""

    def __call__(self, image: np.ndarray, label: np.ndarray, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize(image), torch.from_numpy(label.astype(np.int64))


@dataclass
class TrainTransform:
    """The official augmentation: random scale, crop with ignore padding, flip, colour distortion.

    Randomness comes from `(seed, key)` alone (key: the sample's position in the
    training stream), so resumed runs and any number of workers agree exactly.
    """

    crop_size: tuple[int, int] = (512, 1024)  # (H, W)
    scale_range: tuple[float, float] = (0.5, 2.0)
    scale_step: float = 0.25
    flip: bool = True
    jitter: float = 0.4  # brightness, contrast and saturation factors in [1-j, 1+j]
    seed: int = 0

    def __call__(self, image: np.ndarray, label: np.ndarray, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, key, 1])
        image, label = self.random_scale(image, label, rng)
        image, label = self.random_crop(image, label, rng)
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        image = self.distort_colour(image, rng)
        return normalize(image), torch.from_numpy(label.astype(np.int64))

    def random_scale(self, image, label, rng):
        low, high = self.scale_range
        steps = round((high - low) / self.scale_step) if self.scale_step else 0
        scale = low + self.scale_step * rng.integers(0, steps + 1) if steps else rng.uniform(low, high)
        height, width = label.shape
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        return image, label

    def random_crop(self, image, label, rng):
        crop_h, crop_w = self.crop_size
        height, width = label.shape
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        if pad_h or pad_w:  # pad with ignore so padding never counts as a class
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
            height, width = label.shape
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        return image[top : top + crop_h, left : left + crop_w], label[
            top : top + crop_h, left : left + crop_w
        ]

    def distort_colour(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return distort_colour(image, rng, self.jitter)


def distort_colour(image: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """Brightness, contrast and saturation, each by a factor in [1-jitter, 1+jitter], in random order."""
    if not jitter:
        return np.ascontiguousarray(image)
    low, high = 1 - jitter, 1 + jitter
    out = image.astype(np.float32)
    for kind in rng.permutation(3):
        factor = np.float32(rng.uniform(low, high))
        if kind == 0:  # brightness
            out = out * factor
        elif kind == 1:  # contrast, around the mean grey level
            grey = out.mean(axis=2).mean()
            out = (out - grey) * factor + grey
        else:  # saturation, around each pixel's grey value
            grey = out @ np.asarray([0.299, 0.587, 0.114], np.float32)
            out = (out - grey[..., None]) * factor + grey[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- sampling


class ResumableSampler(Sampler[int]):
    """An endless stream of global sample positions that starts anywhere and
    splits across distributed ranks: rank r of w takes positions p with p % w == r.
    Resuming at step s starts at position s * global batch size."""

    def __init__(self, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.rank, self.world_size = start, rank, world_size

    def __iter__(self) -> Iterator[int]:
        position = self.start + self.rank
        while True:
            yield position
            position += self.world_size

    def __len__(self) -> int:  # endless; a DataLoader only asks for a number
        return 2**62


class EpochStream(Dataset):
    """Maps global position p to sample permutation(seed, p // n)[p % n], augmented
    with randomness drawn from (seed, p) alone: the stream is the same for any
    number of workers and ranks, and after a resume."""

    def __init__(self, dataset: SegmentationDataset, transform: TrainTransform) -> None:
        self.dataset, self.transform = dataset, transform
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def index_at(self, position: int) -> int:
        epoch = position // len(self.dataset)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.transform.seed, epoch])
            self._epoch, self._order = epoch, rng.permutation(len(self.dataset))
        return int(self._order[position % len(self.dataset)])

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.dataset.load(self.index_at(position))
        return self.transform(image, label, position)
