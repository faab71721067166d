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

from engine.media import IMAGE_SUFFIXES, list_images
from engine.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from engine.model.classes import ADE20K, CAMVID, CITYSCAPES, ClassSet, generic_class_set

IGNORE_INDEX = 255


class DatasetError(Exception):
    """A dataset folder or file that cannot be used; the message names it."""


# ---------------------------------------------------------------- samples and reading


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path | None  # None: an unlabelled image (every pixel ignored by the labelled loss)


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
        fit_size: tuple[int, int] | None = None,
    ) -> None:
        if not samples:
            raise DatasetError("the dataset holds no images")
        self.samples = samples
        self.classes = classes
        self.label_table = label_table
        self.transform = transform or EvalTransform()
        # Unlabelled frames of any size are first scaled, aspect kept, to fit this (H, W):
        # the size the app feeds the model, so their objects have the labelled images' scale.
        self.fit_size = fit_size

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw image (RGB uint8) and label (uint8, 255 = ignore) of sample `index`."""
        sample = self.samples[index]
        image = read_image(sample.image)
        if sample.label is None:
            image = fit_within(image, self.fit_size)
            return image, np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        label = read_label(sample.label)
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


def fit_within(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """`image` scaled (aspect kept, INTER_AREA) to fit within (H, W); unchanged when None or already fitting."""
    if size is None:
        return image
    scale = min(size[0] / image.shape[0], size[1] / image.shape[1])
    if scale >= 1.0:
        return image
    target = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, target, interpolation=cv2.INTER_AREA)


class CombinedDataset(Dataset):
    """Several datasets with one class set, indexed one after another (e.g. CamVid's
    labelled images, then unlabelled folders supervised by a teacher)."""

    def __init__(self, parts: list[SegmentationDataset]) -> None:
        names = {part.classes.names for part in parts}
        if len(names) != 1:
            raise DatasetError("datasets to combine must have the same classes")
        self.parts = parts
        self.classes = parts[0].classes
        self.samples = [sample for part in parts for sample in part.samples]
        self._starts = np.cumsum([0] + [len(part) for part in parts])

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.parts[part].load(index - int(self._starts[part]))


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
    images = list_images(
        _require_dir(root / "leftImg8bit" / split, "Cityscapes image"), "*/*_leftImg8bit.png"
    )
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
    images = list_images(_require_dir(root / "images" / folder, "ADE20K image"))
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
    images = list_images(_require_dir(root / "images" / split, "image"))
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


def unlabelled_folder(
    root: str | Path, classes: ClassSet, fit_size: tuple[int, int] | None
) -> SegmentationDataset:
    """Every image in `root` (sorted), without labels: for training under a teacher."""
    images = list_images(_require_dir(Path(root), "unlabelled image"))
    if not images:
        raise DatasetError(f"no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return SegmentationDataset([Sample(image, None) for image in images], classes, fit_size=fit_size)


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
    """The official augmentation (random scale, crop with ignore padding, flip, colour
    distortion) and, when their probabilities are set, augmentation that breaks one
    dataset's look for footage it has never seen: label-aware sky replacement, hue and
    colour temperature, gamma, grayscale, blur, sensor
    noise and JPEG artefacts, and anisotropic stretch (other aspect ratios squeezed into
    the model's input).

    Randomness comes from `(seed, key)` alone (key: the sample's position in the
    training stream), so resumed runs and any number of workers agree exactly.
    Teacher targets (`soft`, (H, W, K) uint8 probabilities) get the same geometry as
    the image; photometric changes never touch them: the student learns to give the
    clean frame's answer on the altered one. With `dark_level`, each sample also carries
    its crop's dark pixels ((H, W) bool, last), judged before any look change, for the
    trainer's dark rule on cached and online targets alike (`distrust_dark_answers`).
    """

    crop_size: tuple[int, int] = (512, 1024)  # (H, W)
    scale_range: tuple[float, float] = (0.5, 2.0)
    scale_step: float = 0.25
    flip: bool = True
    jitter: float = 0.4  # brightness, contrast and saturation factors in [1-j, 1+j]
    seed: int = 0
    stretch: float = 0.0  # width scaled by an extra factor in [1/(1+s), 1+s] (aspect ratios)
    sky_prob: float = 0.0  # replace labelled sky by a blue gradient with clouds
    sky_class: int = 0
    hue_prob: float = 0.0  # hue shift up to +-hue_degrees, and a colour temperature change
    hue_degrees: float = 12.0
    gamma_prob: float = 0.0  # gamma in [0.6, 1.6]
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0  # Gaussian, sigma up to 1.5 px
    noise_prob: float = 0.0  # Gaussian sensor noise, sigma up to 8 grey levels
    jpeg_prob: float = 0.0  # re-encoded at quality 25-90
    dark_level: int | None = None  # grey level below which a pixel is dark; None: no mask

    def __call__(self, image: np.ndarray, label: np.ndarray, key: int, soft: np.ndarray | None = None):
        rng = np.random.default_rng([self.seed, key, 1])
        image, label, soft = self.random_scale(image, label, rng, soft)
        image, label, soft = self.random_crop(image, label, rng, soft)
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
            soft = soft[:, ::-1] if soft is not None else None
        # Judged on the frame as shot, before any look change.
        dark = dark_pixels(image, self.dark_level) if self.dark_level is not None else None
        # A stream of its own: adding look changes leaves the geometry of every sample as it was.
        look = np.random.default_rng([self.seed, key, 2])
        image = np.ascontiguousarray(image)
        image = self.change_look(image, label, look)
        image = self.distort_colour(image, rng)
        image = self.camera_effects(image, look)
        tensors = [normalize(image), torch.from_numpy(label.astype(np.int64))]
        if soft is not None:
            tensors.append(torch.from_numpy(np.ascontiguousarray(soft.transpose(2, 0, 1))))
        if dark is not None:
            tensors.append(torch.from_numpy(dark))
        return tuple(tensors)

    def random_scale(self, image, label, rng, soft=None):
        low, high = self.scale_range
        steps = round((high - low) / self.scale_step) if self.scale_step else 0
        scale = low + self.scale_step * rng.integers(0, steps + 1) if steps else rng.uniform(low, high)
        height, width = label.shape
        stretch = float(np.exp(rng.uniform(-1, 1) * np.log1p(self.stretch))) if self.stretch else 1.0
        size = (max(1, round(width * scale * stretch)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        if soft is not None:
            soft = resize_channels(soft, size)
        return image, label, soft

    def random_crop(self, image, label, rng, soft=None):
        crop_h, crop_w = self.crop_size
        height, width = label.shape
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        if pad_h or pad_w:  # pad with ignore so padding never counts as a class
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
            if soft is not None:  # all-zero targets mark padding: no teacher there
                soft = np.pad(soft, ((0, pad_h), (0, pad_w), (0, 0)))
            height, width = label.shape
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        window = (slice(top, top + crop_h), slice(left, left + crop_w))
        return image[window], label[window], (soft[window] if soft is not None else None)

    def distort_colour(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return distort_colour(image, rng, self.jitter)

    def change_look(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sky, hue/colour temperature, gamma and grayscale, each with its probability."""
        draws = rng.random(4)
        if draws[0] < self.sky_prob:
            image = replace_sky(image, label == self.sky_class, rng)
        if draws[1] < self.hue_prob:
            image = shift_hue_and_temperature(image, rng, self.hue_degrees)
        if draws[2] < self.gamma_prob:
            image = apply_gamma(image, float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))))
        if draws[3] < self.grayscale_prob:
            image = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        return image

    def camera_effects(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Blur, noise and JPEG, in the order a camera applies them."""
        draws = rng.random(3)
        if draws[0] < self.blur_prob:
            image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 1.5)))
        if draws[1] < self.noise_prob:
            noise = rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape).astype(np.float32)
            image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        if draws[2] < self.jpeg_prob:
            quality = int(rng.integers(25, 91))
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED) if ok else image
        return np.ascontiguousarray(image)


def resize_channels(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, K) uint8 or float32 resized bilinearly to (width, height) = `size`, in groups of 4
    channels (what cv2 resizes for any K)."""
    parts = [
        cv2.resize(array[..., k : k + 4], size, interpolation=cv2.INTER_LINEAR)
        for k in range(0, array.shape[2], 4)
    ]
    parts = [part[..., None] if part.ndim == 2 else part for part in parts]
    return np.concatenate(parts, axis=2)


def replace_sky(image: np.ndarray, sky: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint the `sky` pixels as a clear or cloudy daytime sky: a vertical gradient from a
    deep blue at the top to a pale one at the horizon, with soft white clouds.

    CamVid's skies are overcast grey; this is what its models never see.
    """
    if not sky.any():
        return image
    height, width = sky.shape
    rows = np.nonzero(sky.any(axis=1))[0]
    top, bottom = rows[0], max(rows[-1], rows[0] + 1)
    position = np.clip((np.arange(height, dtype=np.float32) - top) / (bottom - top), 0, 1)[:, None, None]
    zenith = np.array([rng.uniform(20, 90), rng.uniform(80, 150), rng.uniform(180, 250)], np.float32)
    horizon = np.array([rng.uniform(150, 215), rng.uniform(185, 230), rng.uniform(225, 255)], np.float32)
    sky_image = zenith * (1 - position) + horizon * position  # (H, 1, 3)
    sky_image = np.broadcast_to(sky_image, (height, width, 3)).copy()
    cover = rng.uniform(0.0, 0.6)  # fraction of the sky under cloud
    if cover > 0.05:
        coarse = rng.random((max(2, height // 40), max(2, width // 40))).astype(np.float32)
        field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        field = cv2.GaussianBlur(field, (0, 0), max(2.0, width / 60))
        threshold = np.quantile(field, 1 - cover)
        alpha = np.clip((field - threshold) * 6, 0, 1)[..., None] * rng.uniform(0.6, 1.0)
        cloud = np.float32(rng.uniform(215, 255))
        sky_image = sky_image * (1 - alpha) + cloud * alpha
    mask = cv2.GaussianBlur(sky.astype(np.float32), (3, 3), 0)[..., None]  # soften the seam
    out = image.astype(np.float32) * (1 - mask) + sky_image * mask
    return np.clip(out, 0, 255).astype(np.uint8)


def dark_pixels(image: np.ndarray, level: int) -> np.ndarray:
    """(H, W) bool: the pixels of `image` (RGB) darker than `level` grey levels."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) < level


def shift_hue_and_temperature(image: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
    """Hue rotated by up to +-`degrees`, then a warm or cool cast (red/blue gains 0.8-1.2)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # OpenCV hue: 0-179, 2 degrees a step
    shift = round(rng.uniform(-degrees, degrees) / 2)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    warmth = rng.uniform(-0.2, 0.2)
    gains = np.array([1 + warmth, 1.0, 1 - warmth], np.float32)
    return np.clip(image * gains, 0, 255).astype(np.uint8)


def apply_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    table = (np.linspace(0, 1, 256) ** gamma * 255).round().astype(np.uint8)
    return table[image]


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

    def __init__(
        self,
        dataset: SegmentationDataset | CombinedDataset,
        transform: TrainTransform,
        soft_targets: Callable[[int, tuple[int, int]], np.ndarray] | None = None,
    ) -> None:
        self.dataset, self.transform = dataset, transform
        # soft_targets(index, (H, W)) -> (H, W, K) uint8 teacher probabilities of sample `index`
        self.soft_targets = soft_targets
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def index_at(self, position: int) -> int:
        epoch = position // len(self.dataset)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.transform.seed, epoch])
            self._epoch, self._order = epoch, rng.permutation(len(self.dataset))
        return int(self._order[position % len(self.dataset)])

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, position: int) -> tuple[torch.Tensor, ...]:
        index = self.index_at(position)
        image, label = self.dataset.load(index)
        if self.soft_targets is None:
            return self.transform(image, label, position)
        return self.transform(image, label, position, self.soft_targets(index, image.shape[:2]))
