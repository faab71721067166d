"""Training configuration: `TrainConfig` (every field settable from a TOML/JSON file and
the command line, each with its group and a sentence of help) and the helpers both
configurations use.

A config file may start from another: `include = "finetune.toml"` (a path relative to the
including file) reads that file first, and the including file lists only what differs.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# The groups of `rtformer train -h`, in the order they are shown.
GROUPS = (
    "data",
    "model",
    "schedule and optimiser",
    "distillation",
    "augmentation",
    "output",
)

INCLUDE_KEY = "include"


def option(default, group: str, help: str):
    """A config field with its `rtformer train -h` group and help sentence."""
    return field(default=default, metadata={"group": group, "help": help})


@dataclass
class TrainConfig:
    # data
    dataset: str = option("camvid", "data", "the class set and folder layout of the labelled data")
    data_root: str = option("data/CamVid", "data", "the labelled data set's folder")
    train_split: str = option("train", "data", "the split(s) to train on, e.g. train+val")
    val_split: str = option("val", "data", "the split validated on during training; empty: none")
    unlabelled: tuple[str, ...] = option(
        (), "data", "image folders trained on under the teacher alone (no labels)"
    )
    workers: int = option(2, "data", "data loader processes (1 on a 2-core machine)")
    # model
    variant: str = option("slim", "model", "RTFormer variant: slim or base")
    model_overrides: dict = field(
        default_factory=dict, metadata={"group": "model", "help": "any RTFormerConfig field, as JSON"}
    )
    pretrained_backbone: str = option(
        "", "model", "a checkpoint whose tensors of matching name and shape initialise the model"
    )
    # BatchNorm normalising with the loaded running statistics and never updating them (its
    # scale and shift still learn). Why: the statistics a CPU fine-tune leaves (momentum 0.1
    # over batches of 8 small crops) alone took Slim from 52.11 to 48.64 on CamVid test,
    # weights untouched (tools/bn_statistics.py).
    frozen_bn: bool = option(
        False, "model", "keep every BatchNorm's loaded statistics (fine-tunes on small batches)"
    )
    # schedule and optimiser
    iters: int = option(
        10000, "schedule and optimiser", "training steps (an upper bound with --budget-minutes)"
    )
    budget_minutes: float = option(
        0.0,
        "schedule and optimiser",
        "fit the schedule to this wall time: the step rate over steps 50-150 sets the steps; 0: off",
    )
    max_minutes: float = option(
        0.0, "schedule and optimiser", "stop cleanly, state saved, after this wall time; 0: no limit"
    )
    batch_size: int = option(8, "schedule and optimiser", "images per step and process")
    grad_accum: int = option(1, "schedule and optimiser", "micro-batches summed into one step")
    lr: float = option(4e-4, "schedule and optimiser", "AdamW's peak learning rate (poly decay to min-lr)")
    min_lr: float = option(1e-6, "schedule and optimiser", "the learning rate at the last step")
    warmup_iters: int = option(1500, "schedule and optimiser", "linear warm-up steps")
    warmup_start_lr: float = option(1e-6, "schedule and optimiser", "the learning rate at step 0")
    weight_decay: float = option(0.0125, "schedule and optimiser", "AdamW's weight decay")
    betas: tuple[float, float] = option((0.9, 0.999), "schedule and optimiser", "AdamW's betas")
    lr_multiplier: float = option(
        10.0, "schedule and optimiser", "learning-rate factor on DAPPM and the heads (official)"
    )
    aux_weight: float = option(0.4, "schedule and optimiser", "weight of the auxiliary head's loss")
    ema_decay: float = option(
        0.0,
        "schedule and optimiser",
        "a moving average of the weights, which is what is validated and saved; 0: off",
    )
    seed: int = option(0, "schedule and optimiser", "seeds the model's start and every augmentation")
    device: str = option("auto", "schedule and optimiser", "auto, cpu or cuda")
    amp: bool = option(True, "schedule and optimiser", "mixed precision (CUDA only)")
    amp_dtype: str = option(
        "bfloat16", "schedule and optimiser", "bfloat16, or float16 (with loss scaling) on older GPUs"
    )
    # distillation (engine.training.distill): a teacher file enables it
    teacher: str = option(
        "",
        "distillation",
        "the teacher: ESPNetv2 Cityscapes weights, or a committee JSON (configs/committee.json)",
    )
    teacher_scale: float = option(2.0, "distillation", "the teacher's input: the image resized by this")
    teacher_targets: str = option(
        "cached", "distillation", "cached (computed once per image) or online (on every crop, GPU)"
    )
    teacher_cache: str = option("runs/teacher-cache", "distillation", "where cached teacher answers go")
    distill_weight: float = option(1.0, "distillation", "weight of the KL term against the teacher")
    distill_temperature: float = option(1.0, "distillation", "softmax temperature of the KL term")
    distill_labelled_weight: float = option(
        1.0, "distillation", "the KL term's weight on pixels that have a label (0: labels alone there)"
    )
    distill_class_weights: dict = field(
        default_factory=dict,
        metadata={
            "group": "distillation",
            "help": 'per teacher class, the weight of its pixels, as JSON: {"Building": 0}',
        },
    )
    distill_dark_distrust: tuple[str, ...] = option(
        (), "distillation", "classes the teacher is not believed about on pixels darker than the level"
    )
    distill_dark_level: int = option(40, "distillation", "the grey level (0-255) below which a pixel is dark")
    # augmentation
    crop_size: tuple[int, int] = option(
        (360, 480), "augmentation", "crop height and width (fine-tunes: the size the model runs at)"
    )
    scale_range: tuple[float, float] = option((0.5, 2.0), "augmentation", "random rescale range")
    jitter: float = option(0.4, "augmentation", "brightness, contrast and saturation factors in [1-j, 1+j]")
    stretch: float = option(0.0, "augmentation", "width scaled by up to 1+s: other aspect ratios")
    sky_prob: float = option(0.0, "augmentation", "labelled sky repainted blue with clouds")
    hue_prob: float = option(0.0, "augmentation", "hue shift and colour temperature change")
    gamma_prob: float = option(0.0, "augmentation", "gamma in [0.6, 1.6]")
    grayscale_prob: float = option(0.0, "augmentation", "the image made grey")
    blur_prob: float = option(0.0, "augmentation", "Gaussian blur, sigma up to 1.5 px")
    noise_prob: float = option(0.0, "augmentation", "Gaussian sensor noise, sigma up to 8 grey levels")
    jpeg_prob: float = option(0.0, "augmentation", "re-encoded as JPEG at quality 25-90")
    # output
    output: str = option("runs/train", "output", "the run's folder: checkpoints, log.jsonl, state")
    resume: bool = option(False, "output", "go on from the run folder's saved state")
    log_interval: int = option(10, "output", "steps between log lines; 0: only at the end")
    eval_interval: int = option(1000, "output", "steps between validations; 0: only at the end")
    checkpoint_interval: int = option(250, "output", "steps between saved states; 0: only at the end")

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


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Field values from a .toml or .json file (validated by the config's `replace`).

    `include = "other.toml"` (relative to this file) reads that file first; this file's
    values replace the included ones, key by key. An include cycle is refused."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise ValueError(f"config include cycle: {chain}")
    text = path.read_text()
    values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    include = values.pop(INCLUDE_KEY, None)
    if include is None:
        return values
    if not isinstance(include, str):
        raise ValueError(f"{path.name}: {INCLUDE_KEY} must be one file name, not {include!r}")
    base = path.parent / include
    if not base.is_file():
        raise ValueError(f"{path.name}: included file {include!r} not found beside it")
    return {**read_config_file(base, (*_seen, path)), **values}
