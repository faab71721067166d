"""Backbone pre-training on ImageNet-style classification: `rtformer pretrain`.

Data: `root/train/<class>/*` and `root/val/<class>/*` (any image cv2 reads), one
folder per class, as ImageNet is usually unpacked.

The classifier is the RTFormer backbone (every module but the segmentation heads)
with a small classification head on its fused 1/8 features, as DDRNet's
classifier does: 1x1 conv to 1024 channels, BN, ReLU, global average pooling, a
linear layer. The saved file holds the backbone tensors under the segmentation
model's own names, so `rtformer train --pretrained-backbone FILE` (`load_backbone`)
copies them by name and shape, as it does the official backbone files after
`convert-paddle`; the classification head is stored under `classifier.` and is
never matched.

Defaults: the paper gives its ImageNet numbers (Table 1: Base 77.4 top-1) without
a full recipe in our reference, so the defaults are the usual transformer recipe
for ImageNet (DeiT's): AdamW, lr 5e-4 per 512 images, weight decay 0.05, 5 warm-up
epochs then cosine decay, label smoothing 0.1, random-resized crops of 224 with
flips and colour jitter 0.4, 300 epochs. Every value can be overridden.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from engine.media import list_images
from engine.model.rtformer import RTFormer, variant_config
from engine.training.config import replace_config
from engine.training.data import DatasetError, distort_colour, normalize, read_image
from engine.training.loop import TrainingLoop, pick_device

CLASSIFIER_PREFIX = "classifier."
STATE_FILE = "pretrain_state.pt"
HIDDEN_CHANNELS = 1024


# ---------------------------------------------------------------- data


class ImageFolder(Dataset):
    """`root/<split>/<class>/<image>`; classes are the train split's folder names, sorted."""

    def __init__(self, root: str | Path, split: str, classes: list[str] | None = None) -> None:
        folder = Path(root) / split
        if not folder.is_dir():
            raise DatasetError(f"{split} folder not found: {folder}")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not found:
            raise DatasetError(f"{folder} has no class folders (expected {folder}/<class>/<images>)")
        self.classes = classes or found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise DatasetError(f"{folder}: classes not in the training set: {', '.join(unknown)}")
        self.samples: list[tuple[Path, int]] = []
        for name in found:
            images = list_images(folder / name)
            if not images:
                raise DatasetError(f"class folder {folder / name} has no images")
            self.samples += [(image, self.classes.index(name)) for image in images]
        self.transform: ClassificationTransform | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        image = read_image(path)  # raises DatasetError naming the file
        assert self.transform is not None, "set a transform first"
        return self.transform(image, index), label


@dataclass
class ClassificationTransform:
    """Random-resized crop, flip and colour jitter for training; resize and centre crop
    (crop / 0.875) for evaluation. Randomness comes from (seed, epoch, index)."""

    size: int = 224
    train: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    jitter: float = 0.4
    seed: int = 0
    epoch: int = 0

    def __call__(self, image: np.ndarray, index: int) -> Tensor:
        if not self.train:
            return normalize(self.centre_crop(image))
        rng = np.random.default_rng([self.seed, self.epoch, index, 2])
        image = self.random_resized_crop(image, rng)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        return normalize(distort_colour(image, rng, self.jitter))

    def random_resized_crop(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A crop of random area (scale range) and aspect (3/4 to 4/3), resized to size x size;
        the whole image when ten draws find no crop that fits."""
        height, width = image.shape[:2]
        for _ in range(10):
            area = height * width * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                top = int(rng.integers(0, height - crop_h + 1))
                left = int(rng.integers(0, width - crop_w + 1))
                image = image[top : top + crop_h, left : left + crop_w]
                break
        return cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)

    def centre_crop(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        short = round(self.size / 0.875)
        scale = short / min(height, width)
        image = cv2.resize(image, (max(short, round(width * scale)), max(short, round(height * scale))))
        height, width = image.shape[:2]
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return np.ascontiguousarray(image[top : top + self.size, left : left + self.size])


# ---------------------------------------------------------------- model


class RTFormerClassifier(nn.Module):
    """forward(x: (N, 3, H, W)) -> class logits (N, num_classes)."""

    def __init__(self, variant: str, num_classes: int, **overrides) -> None:
        super().__init__()
        # The segmentation heads are unused here: num_classes 1 keeps them tiny.
        config = variant_config(variant, num_classes=1, use_aux_head=False, **overrides)
        self.network = RTFormer(config)
        features = 4 * config.base_channels
        self.classifier = nn.Sequential(
            nn.Conv2d(features, HIDDEN_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(HIDDEN_CHANNELS),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(HIDDEN_CHANNELS, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        fused, _ = self.network.encode(x)
        return self.classifier(fused)

    def backbone_state(self) -> dict[str, Tensor]:
        """Backbone tensors under the segmentation model's names, and the classifier's under
        `classifier.` (which no segmentation tensor matches)."""
        state = {
            name: tensor
            for name, tensor in self.network.state_dict().items()
            if not name.startswith(("head.", "aux_head."))
        }
        state.update({CLASSIFIER_PREFIX + n: t for n, t in self.classifier.state_dict().items()})
        return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}


# ---------------------------------------------------------------- training


@dataclass
class PretrainConfig:
    variant: str = "slim"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    data_root: str = "imagenet"
    train_split: str = "train"
    val_split: str = "val"
    output: str = "runs/pretrain"
    epochs: int = 300
    batch_size: int = 256  # per step
    image_size: int = 224
    lr: float = 5e-4  # per 512 images; scaled to batch_size
    min_lr: float = 1e-5
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    jitter: float = 0.4
    workers: int = 8
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "bfloat16"
    resume: bool = False

    def replace(self, **values) -> PretrainConfig:
        return replace_config(self, values, "pre-training")


def cosine_rate(config: PretrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up to the batch-scaled lr, then cosine decay to min_lr, per step."""
    peak = config.lr * config.batch_size / 512
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.min_lr + (peak - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def pretrain(config: PretrainConfig) -> dict:
    """Train the classifier; writes backbone.safetensors (+ state and log) to config.output.
    Returns the last epoch's metrics."""
    if config.batch_size < 2:
        raise ValueError("batch_size must be at least 2: batch normalisation needs two images a step")
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    train_set, val_set = open_image_folders(config)
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise DatasetError(f"{len(train_set)} training images: fewer than one batch of {config.batch_size}")
    model = RTFormerClassifier(config.variant, len(train_set.classes), **config.model_overrides).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loop = TrainingLoop(
        model,
        optimizer,
        device,
        config.output,
        state_file=STATE_FILE,
        amp=config.amp,
        amp_dtype_name=config.amp_dtype,
        progress_key="epoch",
    )
    state = loop.load_state() if config.resume else None
    metrics: dict = {}
    for epoch in range(state["epoch"] if state else 0, config.epochs):
        train_set.transform.epoch = epoch  # a new draw of crops each epoch, the same after a resume
        started = time.monotonic()
        losses, lr = train_epoch(loop, config, train_set, epoch, steps_per_epoch)
        top1, top5 = accuracy(model, val_set, device, config.batch_size, config.workers)
        metrics = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "lr": lr,
            "val_top1": top1,
            "val_top5": top5,
            "images_per_s": len(losses) * config.batch_size / (time.monotonic() - started),
        }
        loop.log(metrics)
        loop.say(f"epoch {epoch + 1}: loss {metrics['loss']:.3f}, val top-1 {top1:.2f}%, top-5 {top5:.2f}%")
        save_backbone(model, train_set.classes, config, metrics)
        loop.save_state(epoch=epoch + 1)
    return metrics


def open_image_folders(config: PretrainConfig) -> tuple[ImageFolder, ImageFolder]:
    """The training and validation folders with their transforms; validation uses the
    training set's classes."""
    train_set = ImageFolder(config.data_root, config.train_split)
    val_set = ImageFolder(config.data_root, config.val_split, train_set.classes)
    train_set.transform = ClassificationTransform(
        config.image_size, True, jitter=config.jitter, seed=config.seed
    )
    val_set.transform = ClassificationTransform(config.image_size, False)
    return train_set, val_set


def train_epoch(
    loop: TrainingLoop, config: PretrainConfig, train_set: ImageFolder, epoch: int, steps_per_epoch: int
) -> tuple[list[float], float]:
    """One pass over the training set; returns the step losses and the last learning rate."""
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.workers,
        pin_memory=loop.device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed + epoch),
    )
    loop.model.train()
    losses, lr = [], config.lr
    for index, (images, labels) in enumerate(tqdm(loader, desc=f"epoch {epoch + 1}", leave=False)):
        step = epoch * steps_per_epoch + index
        lr = cosine_rate(config, step, steps_per_epoch)
        loop.set_learning_rate(lr)
        images, labels = images.to(loop.device, non_blocking=True), labels.to(loop.device, non_blocking=True)
        loop.zero_grad()
        with loop.autocast():
            loss = F.cross_entropy(loop.model(images).float(), labels, label_smoothing=config.label_smoothing)
        loop.backward(loss)
        loop.optimizer_step(loss.item(), step)
        losses.append(loss.item())
    return losses, lr


def save_backbone(
    model: RTFormerClassifier, classes: list[str], config: PretrainConfig, metrics: dict
) -> None:
    """backbone.safetensors in the output folder, with the classes and metrics as metadata."""
    from safetensors.torch import save_file

    info = {"variant": config.variant, "classes": json.dumps(classes), **_strings(metrics)}
    save_file(model.backbone_state(), str(Path(config.output) / "backbone.safetensors"), metadata=info)


@torch.inference_mode()
def accuracy(
    model: nn.Module, dataset: ImageFolder, device, batch_size: int, workers: int
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) over `dataset`."""
    model.eval()
    top1 = top5 = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        logits = model(images.to(device)).float().cpu()
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += int((best[:, 0] == labels).sum())
        top5 += int((best == labels[:, None]).any(dim=1).sum())
    return 100 * top1 / len(dataset), 100 * top5 / len(dataset)


def _strings(metrics: dict) -> dict[str, str]:
    return {key: str(value) for key, value in metrics.items()}
