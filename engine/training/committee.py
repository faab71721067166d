"""Teachers that speak CamVid's classes, and a committee of them weighted per member,
per class and per kind of footage.

Used for training and evaluation only. Every teacher here is an `nn.Module` taking the
project's ImageNet-normalised (N, 3, H, W) RGB and giving CamVid class probabilities
(N, 11, H, W) from `probabilities()` and their log from `forward()`, so `evaluate()`,
the probe and the distillation cache take any of them:

- "espnetv2": ESPNetv2 trained on Cityscapes, the frame squashed to its own 1024x512
  (`engine.training.espnetv2`), soft targets.
- "cgnet": CGNet trained on CamVid train+val (`engine.training.cgnet`), soft targets.
- "deeplab": EdgeTPU-DeepLab-slim trained on Cityscapes, INT8 TFLite, window votes
  (`engine.training.edgetpu_deeplab`; needs the `training` extra).
- "rtformer": one of our own CamVid checkpoints (.safetensors), e.g. the shipped Base
  as Slim's tutor on CamVid frames, where it gives soft targets on every pixel.

The committee's answer for a pixel is sum over members m of w[m, c] p_m(c), renormalised
over the classes c. The weights of one class sum to 1 over the members speaking, so they
choose whom to believe about a class without favouring the class itself. They depend on
the kind of footage: "camvid" (CamVid-like frames no member trained on), "camvid-trained"
(CamVid train and val, which CGNet memorised: it is silent there) and "other" (anything
else, e.g. a sunny highway, where CGNet calls a blue sky Building).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.model.checkpoint import load_checkpoint
from engine.model.classes import CAMVID
from engine.training.cgnet import CGNetTeacher, load_cgnet
from engine.training.espnetv2 import OWN_SIZE, load_teacher

TEACHER_KINDS = ("espnetv2", "cgnet", "deeplab", "rtformer")
FOOTAGE_KINDS = ("camvid", "camvid-trained", "other")


def teacher_kind(path: str | Path) -> str:
    """Which teacher a file holds: a .tflite is DeepLab; a .safetensors is one of our
    RTFormer checkpoints; a .pth with CGNet's layer names (plain or under "model") is
    CGNet; another .pth is ESPNetv2."""
    path = Path(path)
    if path.suffix == ".tflite":
        return "deeplab"
    if path.suffix == ".safetensors":
        return "rtformer"
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    return "cgnet" if "level1_0.conv.weight" in state else "espnetv2"


def load_camvid_teacher(path: str | Path, kind: str | None = None) -> nn.Module:
    """The teacher in `path` (its kind found from the file unless given), in eval mode."""
    kind = kind or teacher_kind(path)
    if kind == "espnetv2":
        return load_teacher(path, size=OWN_SIZE)
    if kind == "cgnet":
        return CGNetTeacher(load_cgnet(path)).eval()
    if kind == "deeplab":
        from engine.training.edgetpu_deeplab import EdgeTPUDeepLabTeacher

        return EdgeTPUDeepLabTeacher(path).eval()
    if kind == "rtformer":
        return RTFormerTeacher(path).eval()
    raise ValueError(f"unknown teacher kind {kind!r}; kinds are {TEACHER_KINDS}")


class RTFormerTeacher(nn.Module):
    """One of our CamVid checkpoints as a teacher: (N, 3, H, W) ImageNet-normalised RGB,
    H and W multiples of 8 (CamVid's 360x480 is) -> (N, 11, H, W) CamVid log-probabilities.
    The checkpoint must speak CamVid's classes in CamVid's order."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.network, info = load_checkpoint(path)
        if list(info.class_names) != list(CAMVID.names):
            raise ValueError(f"{path} speaks {info.class_names}, not CamVid's classes {list(CAMVID.names)}")

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image).float().softmax(dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image).float().log_softmax(dim=1)


@dataclass
class CommitteeSpec:
    """The members' files and weights: `weights[footage][member]` holds one weight per
    CamVid class (a member absent from a footage's table, or all zeros, is silent there)."""

    members: dict[str, str]
    weights: dict[str, dict[str, list[float]]]
    notes: dict[str, str] = field(default_factory=dict)  # how the weights were measured

    def __post_init__(self) -> None:
        unknown = set(self.members) - set(TEACHER_KINDS)
        if unknown:
            raise ValueError(f"unknown committee members {sorted(unknown)}; kinds are {TEACHER_KINDS}")
        for footage, table in self.weights.items():
            if footage not in FOOTAGE_KINDS:
                raise ValueError(f"unknown footage kind {footage!r}; kinds are {FOOTAGE_KINDS}")
            missing = set(table) - set(self.members)
            if missing:
                raise ValueError(f"weights for {sorted(missing)}, which are not members")

    @classmethod
    def from_file(cls, path: str | Path) -> CommitteeSpec:
        """Read a committee JSON. Member paths are as written: relative ones are taken from
        where the command runs, like `data_root`."""
        data = json.loads(Path(path).read_text())
        return cls(data["members"], data["weights"], data.get("notes", {}))

    def to_file(self, path: str | Path) -> None:
        data = {"members": self.members, "weights": self.weights, "notes": self.notes}
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    def speakers(self, footage: str) -> list[str]:
        return [kind for kind, weights in self.weights.get(footage, {}).items() if max(weights) > 0]


def class_weights_from_iou(ious: Mapping[str, Sequence[float]], power: float = 2.0) -> dict[str, list[float]]:
    """Per-class member weights from each member's per-class IoU (0-100): IoU**power,
    normalised so that each class's weights sum to 1 over the members (equal where all are 0)."""
    kinds = list(ious)
    table = torch.tensor([list(ious[kind]) for kind in kinds], dtype=torch.float64).clamp_min(0) / 100
    raised = table**power
    total = raised.sum(dim=0, keepdim=True)
    shares = torch.where(total > 0, raised / total.clamp_min(1e-12), 1.0 / len(kinds))
    return {kind: [round(float(w), 4) for w in shares[i]] for i, kind in enumerate(kinds)}


class Committee(nn.Module):
    """The members' CamVid probabilities mixed per class for one kind of footage:
    (N, 3, H, W) normalised -> (N, 11, H, W). Members load when first needed, so a
    footage where DeepLab is silent never needs its runtime."""

    def __init__(self, spec: CommitteeSpec, footage: str = "camvid") -> None:
        super().__init__()
        self.spec, self.footage = spec, footage
        self.members = nn.ModuleDict()

    def member(self, kind: str) -> nn.Module:
        if kind not in self.members:
            self.members[kind] = load_camvid_teacher(self.spec.members[kind], kind)
        return self.members[kind]

    def probabilities(self, image: torch.Tensor, footage: str | None = None) -> torch.Tensor:
        footage = footage or self.footage
        speakers = self.spec.speakers(footage)
        if not speakers:
            raise ValueError(f"no committee member speaks on {footage!r} footage")
        total = None
        for kind in speakers:
            weights = torch.tensor(self.spec.weights[footage][kind], dtype=image.dtype, device=image.device)
            share = self.member(kind).probabilities(image) * weights.view(1, -1, 1, 1)
            total = share if total is None else total + share
        return total / total.sum(dim=1, keepdim=True).clamp_min(1e-8)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.probabilities(image).clamp_min(1e-8).log()
