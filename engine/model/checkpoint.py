"""The one checkpoint format: safetensors weights plus metadata.

Metadata (string values, JSON-encoded) carries everything needed to run the
model without guessing: the variant and full config, class names, palette,
normalisation, input size, dataset and metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.model.classes import ClassSet
from engine.model.rtformer import RTFormer, RTFormerConfig

FORMAT = "rtformer-studio/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on 0..1 pixel values
IMAGENET_STD = (0.229, 0.224, 0.225)
# Buffers that carry no information for inference; not stored, not required.
SKIPPED_BUFFERS = ("num_batches_tracked",)


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class CheckpointInfo:
    """Everything about a checkpoint but its tensors."""

    config: RTFormerConfig
    class_names: list[str]
    palette: list[list[int]]
    dataset: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] | None = None  # (H, W) the model was trained or evaluated at
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # e.g. training command, source file

    @property
    def variant(self) -> str:
        return self.config.name

    @classmethod
    def for_classes(cls, config: RTFormerConfig, classes: ClassSet, **values) -> CheckpointInfo:
        return cls(
            config=config,
            class_names=list(classes.names),
            palette=[list(colour) for colour in classes.palette],
            dataset=classes.dataset,
            **values,
        )

    def to_metadata(self) -> dict[str, str]:
        values = {
            "format": FORMAT,
            "variant": self.variant,
            "config": self.config.to_dict(),
            "num_classes": self.config.num_classes,
            "class_names": self.class_names,
            "palette": self.palette,
            "dataset": self.dataset,
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.input_size) if self.input_size else None,
            "metrics": self.metrics,
            "extra": self.extra,
        }
        return {key: json.dumps(value) for key, value in values.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str) -> CheckpointInfo:
        if metadata.get("format") != json.dumps(FORMAT):
            raise CheckpointError(
                f"{source} is a safetensors file but not an RTFormer Studio checkpoint "
                f"(no '{FORMAT}' format tag); convert official weights with "
                "`rtformer convert-paddle`"
            )
        try:
            values = {key: json.loads(value) for key, value in metadata.items()}
            config = RTFormerConfig.from_dict(values["config"])
            input_size = values.get("input_size")
            info = cls(
                config=config,
                class_names=list(values["class_names"]),
                palette=[list(colour) for colour in values["palette"]],
                dataset=values.get("dataset", ""),
                mean=tuple(values["mean"]),
                std=tuple(values["std"]),
                input_size=tuple(input_size) if input_size else None,
                metrics=values.get("metrics", {}),
                extra=values.get("extra", {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source} has broken metadata: {error}") from None
        if len(info.class_names) != config.num_classes or len(info.palette) != config.num_classes:
            raise CheckpointError(
                f"{source}: {config.num_classes} classes in the config but "
                f"{len(info.class_names)} names and {len(info.palette)} colours"
            )
        return info


def save_checkpoint(path: str | Path, model: RTFormer, info: CheckpointInfo, half: bool = False) -> Path:
    """Write the model's weights and `info` as one safetensors file; `half` stores the
    floating-point tensors as float16 (half the size; loading restores float32)."""
    if info.config != model.config:
        raise ValueError("CheckpointInfo.config differs from the model's config")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
        if not name.endswith(SKIPPED_BUFFERS)
    }
    if half:
        tensors = {name: t.half() if t.is_floating_point() else t for name, t in tensors.items()}
    save_file(tensors, str(path), metadata=info.to_metadata())
    return path


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read only the metadata (fast: the tensors are not loaded)."""
    with _open(path) as reader:
        return CheckpointInfo.from_metadata(reader.metadata() or {}, str(path))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[RTFormer, CheckpointInfo]:
    """Build the model the checkpoint describes and load its weights (eval mode)."""
    with _open(path) as reader:
        info = CheckpointInfo.from_metadata(reader.metadata() or {}, str(path))
        try:
            state = {name: reader.get_tensor(name) for name in reader.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: cannot read tensors ({error})") from None
    model = RTFormer(info.config)
    load_weights(model, state, source=str(path))
    return model.to(device).eval(), info


def load_weights(model: RTFormer, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` strictly; a mismatch raises CheckpointError naming every bad tensor."""
    expected = {
        name: tensor for name, tensor in model.state_dict().items() if not name.endswith(SKIPPED_BUFFERS)
    }
    state = {name: tensor for name, tensor in state.items() if not name.endswith(SKIPPED_BUFFERS)}
    problems = [f"missing: {name}" for name in expected if name not in state]
    problems += [f"unexpected: {name}" for name in state if name not in expected]
    problems += [
        f"shape of {name}: checkpoint {tuple(state[name].shape)}, model {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    if problems:
        listed = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointError(
            f"{source} does not fit RTFormer-{model.config.name} "
            f"({model.config.num_classes} classes): {len(problems)} tensor(s) differ\n  {listed}{more}"
        )
    model.load_state_dict(state, strict=False)


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({error})") from None
