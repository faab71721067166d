"""The training loop's machinery, shared by segmentation training (`train.Trainer`)
and backbone pre-training (`pretrain.pretrain`).

`TrainingLoop` owns what both need around their own forward pass and loss: the
device, mixed precision (autocast and the grad scaler), one optimizer step with
optional gradient accumulation and a finite-loss check, the learning rate per
parameter group, the resumable state file (model, optimizer, scaler and the
caller's own fields, written atomically), the JSON-lines log (cut back to the saved
state on resume) and printing from rank 0 only.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import AbstractContextManager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

LOG_FILE = "log.jsonl"


class TrainingLoop:
    """One model and optimizer trained on one device, rank `rank` of `world_size`.

    `state_file` and the log live in `output`; only rank 0 writes them. `progress_key`
    is the log field that counts progress ("step" or "epoch"): resuming drops log
    entries written after the saved state."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        output: str | Path,
        *,
        state_file: str,
        amp: bool = True,
        amp_dtype_name: str = "bfloat16",
        progress_key: str = "step",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.output = Path(output)
        self.state_path = self.output / state_file
        self.log_path = self.output / LOG_FILE
        self.progress_key = progress_key
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.use_amp = amp and device.type == "cuda"
        self.amp_dtype = amp_dtype(amp_dtype_name) if self.use_amp else torch.float32
        # bfloat16 has float32's range: only float16 needs its loss scaled against underflow.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # ------------------------------------------------------------ one step

    def set_learning_rate(self, lr: float) -> None:
        """`lr` times each parameter group's `lr_multiplier` (1 where it has none)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_multiplier", 1.0)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, accumulate: int = 1) -> None:
        """Gradients of `loss`, one of `accumulate` micro-batches of a step."""
        self.scaler.scale(loss / accumulate).backward()

    def optimizer_step(self, loss_value: float, step: int) -> None:
        """Apply the accumulated gradients; a loss that became inf or NaN stops training."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at {self.progress_key} {step}")

    # ------------------------------------------------------------ state and log

    def save_state(self, **fields) -> None:
        """Model, optimizer, scaler and `fields`, atomically (rank 0), then every rank waits."""
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                **fields,
            }
            save_atomically(state, self.state_path)
        self.barrier()

    def load_state(self) -> dict | None:
        """Restore model, optimizer and scaler from the state file and return the caller's
        fields; None (and nothing changed) when there is no state file."""
        if not self.state_path.is_file():
            return None
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state.pop("model"))
        self.optimizer.load_state_dict(state.pop("optimizer"))
        self.scaler.load_state_dict(state.pop("scaler"))
        if self.is_main:
            truncate_log(self.log_path, self.progress_key, state[self.progress_key])
        return state

    def log(self, entry: dict) -> None:
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as log:
                log.write(json.dumps({**entry, "time": time.time()}) + "\n")

    def say(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


# ---------------------------------------------------------------- helpers


def save_atomically(state: dict, path: Path) -> None:
    """torch.save through a temporary file: a crash never leaves half a file at `path`."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def truncate_log(path: Path, key: str, last: int) -> None:
    """Drop log entries whose `key` is past `last` (written after the last saved state)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)[key] <= last]
    path.write_text("".join(line + "\n" for line in kept))


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def amp_dtype(name: str) -> torch.dtype:
    if name not in ("bfloat16", "float16"):
        raise ValueError(f"amp_dtype must be bfloat16 or float16, not {name!r}")
    if name == "bfloat16" and not torch.cuda.is_bf16_supported():
        return torch.float16  # GPUs before Ampere
    return getattr(torch, name)


def pick_device(name: str, rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device(name)


def distributed_setup() -> tuple[int, int]:
    """(rank, world size): joins the process group torchrun describes, or (0, 1) alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()
