"""Training with the official RTFormer recipe, resumable and distributed.

Defaults are the official Cityscapes recipe: AdamW (0.9, 0.999), weight decay
0.0125, lr 4e-4 with linear warm-up from 1e-6 then polynomial (power 1) decay
to 1e-6, cross-entropy on the main and auxiliary heads weighted 1 and 0.4,
lr multiplier 10 on DAPPM and heads. Every value is a `TrainConfig` field,
settable from a TOML/JSON file and the command line.

Exact resume: the learning rate is a function of the step, the data stream a
function of (seed, position) (see `engine.data.EpochStream`), and the state
file holds model, optimizer, grad scaler, step and the torch RNG.

Several processes: start with `torchrun --nproc-per-node N -m engine.cli train ...`;
DistributedDataParallel, SyncBatchNorm on GPUs (on CPU, DDP broadcasts rank 0's
BN statistics each step), each rank reads its share of the stream, only rank 0
writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
import tomllib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine.checkpoint import CheckpointInfo, save_checkpoint
from engine.classes import CAMVID, ClassSet
from engine.data import (
    IGNORE_INDEX,
    CombinedDataset,
    EpochStream,
    ResumableSampler,
    TrainTransform,
    open_dataset,
    unlabelled_folder,
)
from engine.distill import TeacherTargets, class_weight_vector, distillation_loss, load_teacher
from engine.evaluate import evaluate
from engine.rtformer import RTFormer, variant_config

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
# Steps timed to fit a time budget: after start-up (workers, cuDNN autotuning) settles.
BUDGET_PROBE = (50, 150)


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
    aux_weight: float = 0.4
    lr_multiplier: float = 10.0  # on DAPPM and the heads
    workers: int = 2
    log_interval: int = 10
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
    # Augmentation against one dataset's look (probabilities; 0 = off): see engine.data.TrainTransform.
    stretch: float = 0.0
    sky_prob: float = 0.0
    hue_prob: float = 0.0
    gamma_prob: float = 0.0
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    noise_prob: float = 0.0
    jpeg_prob: float = 0.0
    # Distillation (engine.distill): a teacher file enables it.
    teacher: str = ""  # ESPNetv2 Cityscapes weights, merged to CamVid's classes
    teacher_scale: float = 2.0  # the teacher's input: the image resized by this
    teacher_targets: str = "cached"  # "cached" (computed once per image) or "online" (every crop)
    teacher_cache: str = "runs/teacher-cache"
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    distill_labelled_weight: float = 1.0  # on pixels that have a label (1 = like every other pixel)
    distill_class_weights: dict = field(default_factory=dict)  # class name -> weight, by the teacher's class
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


def save_atomically(state: dict, path: Path) -> None:
    """torch.save through a temporary file: a crash never leaves half a file at `path`."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def read_config_file(path: str | Path) -> dict:
    """Field values from a .toml or .json file (validated by the config's `replace`)."""
    path = Path(path)
    text = path.read_text()
    return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up from warmup_start_lr to lr, then linear (poly 1) decay to min_lr."""
    if step < config.warmup_iters:
        return config.warmup_start_lr + (config.lr - config.warmup_start_lr) * step / config.warmup_iters
    remaining = config.iters - config.warmup_iters
    progress = (step - config.warmup_iters) / max(1, remaining)
    return (config.lr - config.min_lr) * (1.0 - min(progress, 1.0)) + config.min_lr


def segmentation_loss(outputs, labels: torch.Tensor, aux_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on main (weight 1) and aux (aux_weight) logits over the labelled
    pixels; returns (total, main). 0 for a batch without labels (unlabelled images)."""
    logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
    main = labelled_cross_entropy(logits, labels)
    if aux_logits is None:
        return main, main
    return main + aux_weight * labelled_cross_entropy(aux_logits, labels), main


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over pixels with a label; 0 (still in the graph) when there are none,
    where F.cross_entropy's mean would be 0/0."""
    summed = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return summed / (labels != IGNORE_INDEX).sum().clamp_min(1)


@torch.no_grad()
def recalibrate_batchnorm(
    model: RTFormer, dataset, batch_size: int = 8, device: str | torch.device = "cpu"
) -> None:
    """Replace every BN's running statistics by their average over `dataset`
    (full-resolution images, no augmentation).

    The official BN momentum keeps mostly the last training batch's statistics
    (Paddle momentum 0.1 = PyTorch 0.9), which are noisy with small batches of
    random crops; averaging over the whole training set gives the population's.
    """
    from torch.utils.data import DataLoader

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in norms]
    drop_paths = [(m, m.rate) for m in model.modules() if hasattr(m, "rate")]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch weighs the same
    for module, _ in drop_paths:
        module.rate = 0.0
    was_training = model.training
    model.train()
    try:
        for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=True):
            model(images.to(device))
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
        for module, rate in drop_paths:
            module.rate = rate
        model.train(was_training)


def load_backbone(model: RTFormer, path: str | Path) -> list[str]:
    """Copy every tensor of checkpoint `path` whose name and shape match; returns the names copied."""
    from safetensors.torch import load_file

    source = load_file(str(path))
    target = model.state_dict()
    matched = {
        name: tensor
        for name, tensor in source.items()
        if name in target and target[name].shape == tensor.shape
    }
    model.load_state_dict(matched, strict=False)
    return sorted(matched)


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.rank, self.world_size = _distributed_setup()
        self.device = pick_device(config.device, self.rank)
        self.output = Path(config.output)
        self.is_main = self.rank == 0
        torch.manual_seed(config.seed)

        labelled = open_dataset(config.dataset, config.data_root, config.train_split)
        self.val_set = (
            open_dataset(config.dataset, config.data_root, config.val_split) if config.val_split else None
        )
        self.classes = labelled.classes
        # Inference size recorded in the weights: the evaluation images' own size.
        reference = self.val_set or labelled
        self.input_size = tuple(cv2.imread(str(reference.samples[0].image)).shape[:2])
        if config.unlabelled and not config.teacher:
            raise ValueError("unlabelled folders need a teacher to supervise them (--teacher)")
        self.train_set = labelled
        if config.unlabelled:
            folders = [unlabelled_folder(f, self.classes, self.input_size) for f in config.unlabelled]
            self.train_set = CombinedDataset([labelled, *folders])
        self.setup_distillation()
        self.stream = EpochStream(self.train_set, make_transform(config, self.classes), self.cached_targets)

        model_config = variant_config(
            config.variant, num_classes=self.classes.num_classes, **config.model_overrides
        )
        self.model = RTFormer(model_config).to(self.device)
        if config.pretrained_backbone:
            copied = load_backbone(self.model, config.pretrained_backbone)
            self.say(f"initialised {len(copied)} tensors from {config.pretrained_backbone}")
        self.optimizer = torch.optim.AdamW(
            self.model.parameter_groups(config.lr_multiplier),
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.use_amp = config.amp and self.device.type == "cuda"
        self.amp_dtype = amp_dtype(config.amp_dtype) if self.use_amp else torch.float32
        # bfloat16 has float32's range: only float16 needs its loss scaled against underflow.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # crops have one size: autotune once, then reuse
        self.step = 0
        self.best_miou = -1.0
        if config.resume:
            self.load_state()

        self.network: torch.nn.Module = self.model
        if self.world_size > 1:
            if self.device.type == "cuda":
                self.network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.network, device_ids=device_ids)

    def setup_distillation(self) -> None:
        """The teacher (online) or its cached answers, and the per-class weights."""
        config = self.config
        self.teacher, self.cached_targets, self.class_weights = None, None, None
        if not config.teacher:
            return
        if self.classes.names != CAMVID.names:
            raise ValueError("the ESPNetv2 teacher speaks CamVid's 11 classes; the training data has others")
        self.class_weights = class_weight_vector(self.classes.names, config.distill_class_weights)
        if config.teacher_targets == "online":
            self.teacher = load_teacher(config.teacher, config.teacher_scale).to(self.device)
        elif config.teacher_targets == "cached":
            self.cached_targets = TeacherTargets(
                self.train_set, config.teacher, config.teacher_cache, config.teacher_scale, self.input_size
            )
            if self.is_main and self.cached_targets.missing():
                self.say(f"computing the teacher's targets once, into {self.cached_targets.folder}")
                self.cached_targets.compute_in_child(progress=True)
            self.barrier()
        else:
            raise ValueError(f"teacher_targets must be 'cached' or 'online', not {config.teacher_targets!r}")

    # ------------------------------------------------------------ the loop

    def run(self, until: int | None = None) -> None:
        """Train up to `until` (default: config.iters) steps, then save state and weights."""
        config = self.config
        until = min(until or config.iters, config.iters)
        loader = iter(self.make_loader())
        started = time.monotonic()
        bar = tqdm(
            total=config.iters, initial=self.step, disable=not self.is_main, desc="train", dynamic_ncols=True
        )
        self.model.train()
        window_start, window_images, window_loss = time.monotonic(), 0, []
        probe_times: dict[int, float] = {}
        while self.step < until:
            lr = learning_rate(config, self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group["lr_multiplier"]
            loss = self.train_step(loader)
            self.step += 1
            window_images += config.batch_size * config.grad_accum * self.world_size
            window_loss.append(loss)
            bar.update(1)
            if config.budget_minutes and self.step in BUDGET_PROBE:
                probe_times[self.step] = time.monotonic()
                if self.step == BUDGET_PROBE[1]:
                    config = self.fit_to_budget(probe_times, time.monotonic() - started)
                    until = min(until, config.iters)
                    bar.total = config.iters
                    bar.refresh()
            if self.step % config.log_interval == 0 or self.step == until:
                speed = window_images / max(time.monotonic() - window_start, 1e-9)
                mean_loss = float(np.mean(window_loss))
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                self.log({"step": self.step, "loss": mean_loss, "lr": lr, "images_per_s": speed})
                window_start, window_images, window_loss = time.monotonic(), 0, []
            if self.val_set is not None and config.eval_interval and self.step % config.eval_interval == 0:
                self.validate()
            if self.step % config.checkpoint_interval == 0:
                self.save_state()
            if config.max_minutes and time.monotonic() - started > config.max_minutes * 60:
                self.say(f"time limit reached at step {self.step}; continue with --resume")
                break
        bar.close()
        self.save_state()
        finished = self.step >= config.iters
        validated_now = config.eval_interval and self.step % config.eval_interval == 0
        if finished and self.val_set is not None and not validated_now:
            self.validate()
        self.save_weights("last.safetensors")

    def fit_to_budget(self, probe_times: dict[int, float], elapsed_s: float) -> TrainConfig:
        """Set `iters` so that the remaining steps, at the probed rate, end within the budget."""
        first, last = BUDGET_PROBE
        seconds_per_step = (probe_times[last] - probe_times[first]) / (last - first)
        remaining_s = self.config.budget_minutes * 60 - elapsed_s
        fitted = self.step + max(0, int(remaining_s / seconds_per_step))
        fitted = self.agree_on(min(fitted, self.config.iters))
        self.config = self.config.replace(iters=fitted)
        self.say(
            f"time budget {self.config.budget_minutes:g} min at {seconds_per_step * 1e3:.0f} ms/step: "
            f"training {fitted} steps"
        )
        return self.config

    def agree_on(self, value: int) -> int:
        """Rank 0's value on every rank (their clocks differ a little)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def train_step(self, loader) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(self.config.grad_accum):
            batch = [tensor.to(self.device, non_blocking=True) for tensor in next(loader)]
            images, labels = batch[:2]
            targets = batch[2] if len(batch) > 2 else None
            if self.teacher is not None:
                with torch.no_grad():
                    targets = self.teacher.probabilities(images)
            last = micro == self.config.grad_accum - 1
            sync = self.network.no_sync() if (self.world_size > 1 and not last) else nullcontext()
            with sync, torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                outputs = self.network(images)
                loss, _ = segmentation_loss(outputs, labels, self.config.aux_weight)
                if targets is not None:
                    loss = loss + self.config.distill_weight * self.distill(outputs, labels, targets)
                self.scaler.scale(loss / self.config.grad_accum).backward()
            total += loss.item() / self.config.grad_accum
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not math.isfinite(total):
            raise FloatingPointError(f"loss became {total} at step {self.step}")
        return total

    def distill(self, outputs, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The distillation term on the main head, every pixel (labelled ones weighted
        by distill_labelled_weight)."""
        logits = outputs[0] if isinstance(outputs, tuple) else outputs
        pixel_weights = None
        if self.config.distill_labelled_weight != 1.0:
            labelled = labels != IGNORE_INDEX
            pixel_weights = torch.where(labelled, self.config.distill_labelled_weight, 1.0)
        return distillation_loss(
            logits, targets, self.config.distill_temperature, self.class_weights, pixel_weights
        )

    def make_loader(self) -> DataLoader:
        config = self.config
        per_step = config.batch_size * config.grad_accum * self.world_size
        sampler = ResumableSampler(start=self.step * per_step, rank=self.rank, world_size=self.world_size)
        return DataLoader(
            self.stream,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            persistent_workers=config.workers > 0,
            worker_init_fn=_quiet_worker,
            # Own generator: creating the loader must not consume the global RNG,
            # or a resumed run's drop-path masks would differ from an uninterrupted one.
            generator=torch.Generator().manual_seed(config.seed),
        )

    # ------------------------------------------------------------ evaluation and files

    def validate(self) -> None:
        if self.is_main:
            report = evaluate(self.model, self.val_set, self.device, progress=False)
            self.log(
                {"step": self.step, "val_miou": report.miou, "val_pixel_accuracy": report.pixel_accuracy}
            )
            self.say(f"step {self.step}: {self.config.val_split} mIoU {report.miou:.2f}")
            if report.miou > self.best_miou:
                self.best_miou = report.miou
                self.save_weights(
                    "best.safetensors", {"val_miou": report.miou, "val_split": self.config.val_split}
                )
            plot_curves(self.output / LOG_FILE, self.output / "curves.png")
        self.barrier()

    def save_weights(self, name: str, metrics: dict | None = None) -> None:
        if not self.is_main:
            return
        info = CheckpointInfo.for_classes(
            self.model.config,
            self.classes,
            input_size=self.input_size,
            metrics={"step": self.step, **(metrics or {})},
            extra={"training_command": training_command(), "train_config": dataclasses.asdict(self.config)},
        )
        save_checkpoint(self.output / name, self.model, info)

    def save_state(self) -> None:
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.step,
                "iters": self.config.iters,  # may have been fitted to a time budget
                "best_miou": self.best_miou,
                "torch_rng": torch.get_rng_state(),
                "config": json.dumps(dataclasses.asdict(self.config)),
            }
            save_atomically(state, self.output / STATE_FILE)
        self.barrier()

    def load_state(self) -> None:
        path = self.output / STATE_FILE
        if not path.is_file():
            self.say(f"nothing to resume in {self.output}; starting from step 0")
            return
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_miou = state["step"], state["best_miou"]
        if self.config.budget_minutes and self.step >= BUDGET_PROBE[1]:
            self.config = self.config.replace(iters=state["iters"])  # the schedule already fitted
        torch.set_rng_state(state["torch_rng"])
        if self.is_main:
            truncate_log(self.output / LOG_FILE, self.step)
        self.say(f"resumed from {path} at step {self.step}")

    def log(self, entry: dict) -> None:
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            with open(self.output / LOG_FILE, "a") as log:
                log.write(json.dumps({**entry, "time": time.time()}) + "\n")

    def say(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


# ---------------------------------------------------------------- helpers


def make_transform(config: TrainConfig, classes: ClassSet) -> TrainTransform:
    sky = classes.names.index("Sky") if "Sky" in classes.names else -1
    if config.sky_prob and sky < 0:
        raise ValueError("sky_prob needs a class named 'Sky' in the training data")
    return TrainTransform(
        config.crop_size,
        config.scale_range,
        jitter=config.jitter,
        seed=config.seed,
        stretch=config.stretch,
        sky_prob=config.sky_prob,
        sky_class=sky,
        hue_prob=config.hue_prob,
        gamma_prob=config.gamma_prob,
        grayscale_prob=config.grayscale_prob,
        blur_prob=config.blur_prob,
        noise_prob=config.noise_prob,
        jpeg_prob=config.jpeg_prob,
    )


def _quiet_worker(worker_id: int) -> None:
    # One thread per loader worker: the cores belong to the model.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def amp_dtype(name: str) -> torch.dtype:
    if name not in ("bfloat16", "float16"):
        raise ValueError(f"amp_dtype must be bfloat16 or float16, not {name!r}")
    if name == "bfloat16" and not torch.cuda.is_bf16_supported():
        return torch.float16  # GPUs before Ampere
    return getattr(torch, name)


def pick_device(name: str, rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device(name)


def _distributed_setup() -> tuple[int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def training_command() -> str:
    return "rtformer " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]) if sys.argv else ""


def truncate_log(path: Path, step: int) -> None:
    """Drop log entries past `step` (written after the last saved state)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def plot_curves(log_path: Path, png_path: Path) -> None:
    """Training loss and validation mIoU against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = read_log(log_path)
    losses = [(e["step"], e["loss"]) for e in entries if "loss" in e]
    mious = [(e["step"], e["val_miou"]) for e in entries if "val_miou" in e]
    figure, loss_axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    if losses:
        loss_axis.plot(*zip(*losses, strict=True), color="tab:blue", linewidth=0.8, label="training loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    if mious:
        miou_axis = loss_axis.twinx()
        miou_axis.plot(*zip(*mious, strict=True), color="tab:red", marker="o", label="mIoU")
        miou_axis.set_ylabel("validation mIoU (%)", color="tab:red")
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
