"""Training configuration: `TrainConfig` (every field settable from a TOML/JSON file and
the command line) and the helpers both configurations use."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    variant: str = "slim"
    model_overrides: dict = field(default_factory=dict)  # any RTFormerConfig field
    dataset: str = "camvid"
    data_root: str = "../shared/data/CamVid"
    train_split: str = "train"
    val_split: str = "val"
    output: str = "runs/train"
    iters: int = 10000
    batch_size: int = 8  # per process and micro-batch
    grad_accum: int = 1
    crop_size: tuple[int, int] = (360, 480)  # (H, W)
    scale_range: tuple[float, float] = (0.5, 2.0)
    jitter: float = 0.4
    lr: float = 4e-4
    min_lr: float = 1e-6
    warmup_iters: int = 1500
    warmup_start_lr: float = 1e-6
    weight_decay: float = 0.0125
    betas: tuple[float, float] = (0.9, 0.999)
    optimizer: str = "adamw"  # "adamw" (official) or "sgd" (with `momentum`, for fine-tunes)
    momentum: float = 0.9  # SGD only
    # An exponential moving average of the weights (0 = off): what is validated and saved.
    ema_decay: float = 0.0
    aux_weight: float = 0.4
    # The labelled pixels' loss: "cross_entropy" (official) or "ohem" (cross-entropy over the
    # hard pixels only: true class below ohem_threshold, at least ohem_min_kept a batch), the
    # usual choice for CamVid's small classes (PaddleSeg's and mmseg's real-time recipes).
    label_loss: str = "cross_entropy"
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 40000
    lr_multiplier: float = 10.0  # on DAPPM and the heads
    workers: int = 2
    log_interval: int = 10  # steps, for these three intervals; 0: only at the end of the run
    eval_interval: int = 1000
    checkpoint_interval: int = 250
    max_minutes: float = 0.0  # stop cleanly (state saved) after this wall time; 0 = no limit
    # Fit the schedule to this wall time: the step rate measured early sets `iters`
    # (never above the configured value), so the learning rate still decays to the end.
    budget_minutes: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, on CUDA only
    amp_dtype: str = "bfloat16"  # "float16" (with loss scaling) where the GPU lacks bfloat16
    pretrained_backbone: str = ""  # a checkpoint whose matching tensors initialise the model
    resume: bool = False
    # Top-level modules kept as loaded, weights and BN statistics (e.g. "block4", "dappm", "head"):
    # a fine-tune that may only change what they receive (engine.training.train.freeze_modules).
    freeze: tuple[str, ...] = ()
    # BatchNorm normalising with the loaded running statistics and never updating them (its
    # scale and shift still learn): for fine-tunes of trained weights on small batches. Why:
    # the statistics a CPU fine-tune leaves (momentum 0.1 over batches of 8 small crops)
    # alone took shipped Slim from 52.11 to 48.64 on CamVid test, weights untouched
    # (tools/bn_statistics.py, issue 23).
    frozen_bn: bool = False
    # Augmentation against one dataset's look (probabilities; 0 = off): see engine.training.data.TrainTransform.
    stretch: float = 0.0
    sky_prob: float = 0.0
    shadow_prob: float = 0.0
    hue_prob: float = 0.0
    gamma_prob: float = 0.0
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    noise_prob: float = 0.0
    jpeg_prob: float = 0.0
    # Distillation (engine.training.distill): a teacher file enables it.
    # ESPNetv2 Cityscapes weights (merged to CamVid's classes), or a committee JSON of
    # teachers (engine.training.committee, configs/committee.json; cached targets only).
    teacher: str = ""
    teacher_scale: float = 2.0  # the teacher's input: the image resized by this
    teacher_targets: str = "cached"  # "cached" (computed once per image) or "online" (every crop)
    teacher_cache: str = "runs/teacher-cache"
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    distill_labelled_weight: float = 1.0  # on pixels that have a label (1 = like every other pixel)
    distill_class_weights: dict = field(default_factory=dict)  # class name -> weight, by the teacher's class
    # Classes the teacher is not believed about on pixels darker than distill_dark_level
    # (grey, 0-255): there its targets, cached or online, are dropped
    # (engine.training.distill.distrust_dark_answers).
    distill_dark_distrust: tuple[str, ...] = ()
    distill_dark_level: int = 40
    unlabelled: tuple[str, ...] = ()  # image folders trained on under the teacher alone

    def replace(self, **values) -> TrainConfig:
        return replace_config(self, values, "training")


def replace_config(config, values: dict, what: str):
    """`dataclasses.replace` that refuses unknown fields by name and takes lists for tuple
    fields (TOML, JSON and argparse give lists)."""
    for key in values:
        if not hasattr(config, key):
            raise ValueError(f"unknown {what} option {key!r}")
    values = {k: tuple(v) if isinstance(getattr(config, k), tuple) else v for k, v in values.items()}
    return dataclasses.replace(config, **values)


def read_config_file(path: str | Path) -> dict:
    """Field values from a .toml or .json file (validated by the config's `replace`)."""
    path = Path(path)
    text = path.read_text()
    return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
