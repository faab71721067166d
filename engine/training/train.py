"""Training with the official RTFormer recipe, resumable and distributed.

Defaults are the official Cityscapes recipe: AdamW (0.9, 0.999), weight decay
0.0125, lr 4e-4 with linear warm-up from 1e-6 then polynomial (power 1) decay
to 1e-6, cross-entropy on the main and auxiliary heads weighted 1 and 0.4,
lr multiplier 10 on DAPPM and heads. Every value is a `TrainConfig` field,
settable from a TOML/JSON file and the command line.

Exact resume: the learning rate is a function of the step, the data stream a
function of (seed, position) (see `engine.training.data.EpochStream`), and the state
file holds model, optimizer, grad scaler, step and the torch RNG.

Several processes: start with `torchrun --nproc-per-node N -m engine.commands.cli train ...`;
DistributedDataParallel, SyncBatchNorm on GPUs (on CPU, DDP broadcasts rank 0's
BN statistics each step), each rank reads its share of the stream, only rank 0
writes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine.model.checkpoint import CheckpointInfo, save_checkpoint
from engine.model.classes import CAMVID, ClassSet
from engine.model.rtformer import RTFormer, variant_config
from engine.training.config import TrainConfig
from engine.training.data import (
    IGNORE_INDEX,
    CombinedDataset,
    EpochStream,
    ResumableSampler,
    TrainTransform,
    open_dataset,
    unlabelled_folder,
)
from engine.training.distill import (
    TeacherTargets,
    class_indices,
    class_weight_vector,
    distillation_loss,
    distrust_dark_answers,
    is_committee,
)
from engine.training.espnetv2 import load_teacher
from engine.training.evaluate import evaluate
from engine.training.loop import LOG_FILE, TrainingLoop, distributed_setup, pick_device, read_log

STATE_FILE = "train_state.pt"
# Steps timed to fit a time budget: after start-up (workers, cuDNN autotuning) settles.
BUDGET_PROBE = (50, 150)


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


def make_optimizer(config: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW (the official recipe) over the model's parameter groups."""
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


class WeightAverage:
    """An exponential moving average of a model's weights: `module` is the averaged copy
    (its buffers, e.g. BN statistics, follow the live model's). Why: a fine-tune of trained
    weights on a CPU's small batches wanders with its noise; the average keeps what the
    steps agree on. One fused lerp a step (3-8 ms for Slim, where torch's AveragedModel
    took 240 ms)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.averaged = list(self.module.parameters())
        self.live = list(model.parameters())
        self.buffers = list(zip(self.module.buffers(), model.buffers(), strict=True))

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.averaged, self.live, 1.0 - self.decay)
        for averaged, live in self.buffers:
            averaged.copy_(live)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


def make_ema(model: nn.Module, decay: float) -> WeightAverage | None:
    """The weights' moving average, or None when decay is 0."""
    return WeightAverage(model, decay) if decay else None


def crop_warning(crop_size: tuple[int, int], frame_size: tuple[int, int]) -> str | None:
    """Why a fine-tune should crop the frame the model runs at, or None when it does.

    RTFormer's global parts see the whole input: the cross-resolution attention pools
    the 1/32 map (12x15 for a 360x480 frame, 9x12 for a 288x384 crop) to 12x12 tokens,
    and the GPU-friendly attention and DAPPM's pools normalise over every position. A
    crop of another size trains another token grid. From scratch that is the official
    recipe (Cityscapes: 1024x512 crops of 2048x1024 frames); a fine-tune of weights
    trained at the frame's size is what it erodes. Measured (200 steps of
    cross-entropy on CamVid train from the CamVid-only Slim): 288x384 crops at scale
    0.75-1.5 took CamVid train, its own training frames, from 72.82 to 69.81 mIoU and
    test from 52.51 to 50.07; 360x480 crops at 0.5-2.0 held them (72.86, 52.65). The grid
    the app runs at counts too: when it rounded frames to multiples of 32 (352x480), a
    360x480 distillation gained 0.17 at 360x480 and lost 1.14 at 352x480; so it
    keeps CamVid frames at 360x480 (engine/runtime/preprocess.py).
    """
    if tuple(crop_size) == tuple(frame_size):
        return None
    return (
        f"warning: crops of {crop_size[0]}x{crop_size[1]} of {frame_size[0]}x{frame_size[1]} "
        "frames: RTFormer's attention sees the whole input, and "
        "fine-tunes on other crops have eroded what the weights knew (weights/README.md); "
        f"crop_size = [{frame_size[0]}, {frame_size[1]}] keeps it"
    )


def freeze_bn_statistics(model: torch.nn.Module) -> int:
    """Every BatchNorm normalises with its running statistics and keeps them as they are,
    also while the model trains (its affine scale and shift still learn). Returns how many."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.register_forward_pre_hook(_run_in_eval_mode)
    return len(layers)


def _run_in_eval_mode(module: torch.nn.Module, _inputs) -> None:
    if module.training:
        module.train(False)


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
        self.rank, self.world_size = distributed_setup()
        self.device = pick_device(config.device, self.rank)
        self.output = Path(config.output)
        self.is_main = self.rank == 0
        torch.manual_seed(config.seed)
        self.open_data()
        self.model = self.build_model()
        self.loop = self.build_loop()
        if config.pretrained_backbone:
            copied = load_backbone(self.model, config.pretrained_backbone)
            self.say(f"initialised {len(copied)} tensors from {config.pretrained_backbone}")
            warning = crop_warning(config.crop_size, self.input_size)
            if warning:
                self.say(warning)
        self.ema = make_ema(self.model, config.ema_decay)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # crops have one size: autotune once, then reuse
        self.step = 0
        self.best_miou = -1.0
        if config.resume:
            self.load_state()
        # After the model: the teacher is built under its own RNG, the model's initial
        # weights come from the seed alone.
        self.setup_distillation()
        self.stream = EpochStream(self.train_set, make_transform(config, self.classes), self.cached_targets)
        self.network = self.wrap_for_ranks()

    def open_data(self) -> None:
        """The training set (labelled, plus unlabelled folders) and the validation set."""
        config = self.config
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

    def build_model(self) -> RTFormer:
        config = self.config
        model_config = variant_config(
            config.variant, num_classes=self.classes.num_classes, **config.model_overrides
        )
        model = RTFormer(model_config).to(self.device)
        if config.frozen_bn and not (config.pretrained_backbone or config.resume):
            raise ValueError("frozen_bn keeps what was loaded: give pretrained_backbone (or resume)")
        if config.frozen_bn:
            freeze_bn_statistics(model)
        return model

    def build_loop(self) -> TrainingLoop:
        """The optimizer with the official lr multiplier on DAPPM and the heads, in the shared loop."""
        config = self.config
        optimizer = make_optimizer(config, self.model.parameter_groups(config.lr_multiplier))
        return TrainingLoop(
            self.model,
            optimizer,
            self.device,
            self.output,
            state_file=STATE_FILE,
            amp=config.amp,
            amp_dtype_name=config.amp_dtype,
            rank=self.rank,
            world_size=self.world_size,
        )

    def wrap_for_ranks(self) -> torch.nn.Module:
        """The model as each step runs it: DistributedDataParallel over several ranks."""
        if self.world_size == 1:
            return self.model
        network: torch.nn.Module = self.model
        if self.device.type == "cuda":
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(network, device_ids=device_ids)

    def setup_distillation(self) -> None:
        """The teacher (online) or its cached answers, and the per-class weights."""
        config = self.config
        self.teacher, self.cached_targets, self.class_weights = None, None, None
        self.dark_classes = class_indices(
            self.classes.names, config.distill_dark_distrust, "distill_dark_distrust"
        )
        if self.dark_classes and not config.teacher:
            raise ValueError("distill_dark_distrust drops a teacher's answers: it needs --teacher")
        if not config.teacher:
            return
        if self.classes.names != CAMVID.names:
            raise ValueError("the ESPNetv2 teacher speaks CamVid's 11 classes; the training data has others")
        self.class_weights = class_weight_vector(self.classes.names, config.distill_class_weights)
        if config.teacher_targets == "online" and is_committee(config.teacher):
            raise ValueError("a committee's targets are cached (--teacher-targets cached)")
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
            self.loop.set_learning_rate(lr)
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
            if every(config.log_interval, self.step) or self.step == until:
                speed = window_images / max(time.monotonic() - window_start, 1e-9)
                mean_loss = float(np.mean(window_loss))
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                self.log({"step": self.step, "loss": mean_loss, "lr": lr, "images_per_s": speed})
                window_start, window_images, window_loss = time.monotonic(), 0, []
            if self.val_set is not None and every(config.eval_interval, self.step):
                self.validate()
            if every(config.checkpoint_interval, self.step):
                self.save_state()
            if config.max_minutes and time.monotonic() - started > config.max_minutes * 60:
                self.say(f"time limit reached at step {self.step}; continue with --resume")
                break
        bar.close()
        self.save_state()
        finished = self.step >= config.iters
        validated_now = every(config.eval_interval, self.step)
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
        self.loop.zero_grad()
        total = 0.0
        for micro in range(self.config.grad_accum):
            batch = [tensor.to(self.device, non_blocking=True) for tensor in next(loader)]
            images, labels, *extras = batch
            dark = extras.pop() if self.dark_classes else None  # the crops' dark pixels come last
            targets = extras[0] if extras else None
            if self.teacher is not None:
                with torch.no_grad():
                    targets = self.teacher.probabilities(images)
            if dark is not None:
                targets = distrust_dark_answers(targets, dark, self.dark_classes)
            last = micro == self.config.grad_accum - 1
            sync = self.network.no_sync() if (self.world_size > 1 and not last) else nullcontext()
            with sync, self.loop.autocast():
                outputs = self.network(images)
                loss, _ = segmentation_loss(outputs, labels, self.config.aux_weight)
                if targets is not None:
                    loss = loss + self.config.distill_weight * self.distill(outputs, labels, targets)
                self.loop.backward(loss, self.config.grad_accum)
            total += loss.item() / self.config.grad_accum
        self.loop.optimizer_step(total, self.step)
        if self.ema is not None:
            self.ema.update()
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
            report = evaluate(self.kept_model, self.val_set, self.device, progress=False)
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
        save_checkpoint(self.output / name, self.kept_model, info)

    @property
    def kept_model(self) -> RTFormer:
        """What is validated and saved: the weights' moving average when there is one."""
        return self.model if self.ema is None else self.ema.module

    def save_state(self) -> None:
        self.loop.save_state(
            step=self.step,
            iters=self.config.iters,  # may have been fitted to a time budget
            best_miou=self.best_miou,
            torch_rng=torch.get_rng_state(),
            config=json.dumps(dataclasses.asdict(self.config)),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        )

    def load_state(self) -> None:
        state = self.loop.load_state()
        if state is None:
            self.say(f"nothing to resume in {self.output}; starting from step 0")
            return
        self.step, self.best_miou = state["step"], state["best_miou"]
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.config.budget_minutes and self.step >= BUDGET_PROBE[1]:
            self.config = self.config.replace(iters=state["iters"])  # the schedule already fitted
        torch.set_rng_state(state["torch_rng"])
        self.say(f"resumed from {self.loop.state_path} at step {self.step}")

    def log(self, entry: dict) -> None:
        self.loop.log(entry)

    def say(self, message: str) -> None:
        self.loop.say(message)

    def barrier(self) -> None:
        self.loop.barrier()


# ---------------------------------------------------------------- helpers


def every(interval: int, step: int) -> bool:
    """Whether `step` is one of every `interval` steps; an interval of 0 means never
    (the end of the run still logs, validates and saves)."""
    return interval > 0 and step % interval == 0


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
        dark_level=config.distill_dark_level if config.distill_dark_distrust else None,
    )


def _quiet_worker(worker_id: int) -> None:
    # One thread per loader worker: the cores belong to the model.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def training_command() -> str:
    return "rtformer " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]) if sys.argv else ""


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
