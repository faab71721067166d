"""RTFormer: efficient design for real-time semantic segmentation with transformer.

Wang et al., NeurIPS 2022 (arXiv 2210.07124). A dual-resolution network: a
ResNet-style stem and stages down to 1/16, then two RTFormer blocks that keep a
high-resolution branch at 1/8 and a low-resolution branch at 1/16 -> 1/32.
The low-resolution branch uses GPU-friendly attention (external attention with
grouped double normalisation, no multi-head split of the features); the
high-resolution branch uses cross-resolution attention, whose keys and values
are pooled from the low-resolution branch. DAPPM adds context, a small head
predicts classes at 1/8 and logits are resized to the input.

Layer shapes, initialisation and numerics follow the official PaddleSeg model
(`paddleseg/models/rtformer.py`); `tests/test_parity.py` proves the logits equal.

Shapes in docstrings: N batch, C channels, H x W input size, c base channels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionKind = Literal["gfa", "mhsa", "mhea", "linformer"]
ATTENTION_KINDS: tuple[str, ...] = ("gfa", "mhsa", "mhea", "linformer")

# Smallest input side the network accepts: at 64 the 1/32 map is 2x2, which
# the DAPPM pools and the cross-resolution KV pooling still handle.
MIN_INPUT_SIZE = 64

# Paddle's BatchNorm momentum 0.1 weighs the *old* running statistics by 0.1;
# PyTorch's momentum weighs the *new* batch, so the same update is 0.9 here.
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class RTFormerConfig:
    """Hyper-parameters of one RTFormer variant (official names in comments)."""

    name: str
    base_channels: int  # c: stage widths are c, 2c, 4c, 8c
    head_channels: int  # seghead uses 2x this, the aux head 1x
    spp_channels: int = 128  # DAPPM inner width
    num_groups: int = 8  # num_heads: groups of the double normalisation in GFA
    cross_size: int = 12  # KV pooled to cross_size x cross_size tokens
    use_injection: tuple[bool, bool] = (True, True)  # layer4, layer5
    drop_rate: float = 0.0  # dropout inside the FFNs
    drop_path_rate: float = 0.2
    num_classes: int = 19
    use_aux_head: bool = True
    in_channels: int = 3
    stage_depths: tuple[int, int, int] = (2, 2, 2)  # layer_nums of layer1..3
    attention: AttentionKind = "gfa"  # low-resolution attention (paper Table 3)
    mhea_ratio: float = 0.25  # r of multi-head external attention
    linformer_tokens: int = 64  # projected sequence length of Linformer

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RTFormerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown RTFormer config keys: {sorted(unknown)}")
        values = dict(values)
        for key in ("use_injection", "stage_depths"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


# Official Cityscapes configs (configs/rtformer/*.yml). ADE20K differs only in
# drop path, and for Slim in cross_size 8 and no injection in layer5.
VARIANTS: dict[str, RTFormerConfig] = {
    "slim": RTFormerConfig(name="slim", base_channels=32, head_channels=64),
    "base": RTFormerConfig(name="base", base_channels=64, head_channels=128, use_injection=(True, False)),
}
DATASET_OVERRIDES: dict[tuple[str, str], dict] = {
    ("slim", "ade20k"): {"cross_size": 8, "use_injection": (True, False), "drop_path_rate": 0.1},
    ("base", "ade20k"): {"drop_path_rate": 0.1},
}


def variant_config(variant: str, dataset: str | None = None, **overrides) -> RTFormerConfig:
    """The official config of `variant` ("slim" | "base"), adjusted for `dataset`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown RTFormer variant {variant!r}; choose from {sorted(VARIANTS)}")
    values = dict(DATASET_OVERRIDES.get((variant, dataset or ""), {}))
    values.update(overrides)
    return dataclasses.replace(VARIANTS[variant], **values)


def build_model(variant: str = "slim", num_classes: int = 19, **overrides) -> RTFormer:
    """Build RTFormer-Slim or -Base with fresh (official) initialisation.

    `overrides` are `RTFormerConfig` fields, e.g. `attention="mhsa"`, `dataset="ade20k"`.
    """
    dataset = overrides.pop("dataset", None)
    config = variant_config(variant, dataset, num_classes=num_classes, **overrides)
    return RTFormer(config)


# ---------------------------------------------------------------- building blocks


def batch_norm(channels: int, eps: float = 1e-5) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=BN_MOMENTUM)


def norm_act_conv(
    in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1
) -> nn.Sequential:
    """BN -> ReLU -> conv (no bias), the pre-activation unit used throughout."""
    return nn.Sequential(
        batch_norm(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
    )


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU unless `no_relu`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, no_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = batch_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                batch_norm(out_channels),
            )
        self.no_relu = no_relu

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        out = out + shortcut
        return out if self.no_relu else F.relu(out)


def make_stage(in_channels: int, out_channels: int, depth: int, stride: int = 1) -> nn.Sequential:
    """`depth` BasicBlocks; the last of several ends without ReLU (official layout)."""
    blocks = [BasicBlock(in_channels, out_channels, stride)]
    for index in range(1, depth):
        blocks.append(BasicBlock(out_channels, out_channels, no_relu=index == depth - 1))
    return nn.Sequential(*blocks)


class FFN(nn.Module):
    """Convolutional feed-forward ("MLP" in the official code): BN-conv3x3-GELU-conv3x3."""

    def __init__(self, channels: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.norm = batch_norm(channels, eps=1e-6)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(F.gelu(self.conv1(self.norm(x))))
        return self.drop(self.conv2(x))


def adaptive_max_pool(x: Tensor, size: int) -> Tensor:
    """Adaptive max pooling to `size` x `size` for any input size, ONNX-exportable.

    Same bins as `F.adaptive_max_pool2d` (bin i covers [floor(i*L/S), ceil((i+1)*L/S))),
    but built from masks over the dynamic height and width, because the exporter
    refuses adaptive pooling whose output does not divide the input (12 from 15).
    Eager PyTorch (inference and training) takes its native kernel; the masks are
    what gets exported.
    x: (N, C, H, W) -> (N, C, size, size)
    """
    if not (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()):
        return F.adaptive_max_pool2d(x, size)
    return masked_adaptive_max_pool(x, size)


def masked_adaptive_max_pool(x: Tensor, size: int) -> Tensor:
    """The exportable form of `adaptive_max_pool`: (N, C, H, W) -> (N, C, size, size)."""
    x = _max_over_bins(x, size, dim=2)  # (N, C, size, W)
    return _max_over_bins(x, size, dim=3)  # (N, C, size, size)


def _max_over_bins(x: Tensor, size: int, dim: int) -> Tensor:
    length = x.shape[dim]
    bins = torch.arange(size, device=x.device)
    start = torch.div(bins * length, size, rounding_mode="floor")
    end = torch.div((bins + 1) * length + size - 1, size, rounding_mode="floor")
    position = torch.arange(length, device=x.device)
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])  # (S, L)
    # An additive mask (0 inside the bin, -inf outside): a broadcast Add is several times
    # faster than a broadcast Where (masked_fill) in ONNX Runtime, and gives the same maxima.
    outside = torch.zeros(inside.shape, dtype=x.dtype, device=x.device).masked_fill(~inside, float("-inf"))
    if dim == 2:
        # (N, C, 1, H, W) + (S, H, 1): max over H
        return (x.unsqueeze(2) + outside[:, :, None]).amax(dim=3)
    # (N, C, S, 1, W) + (S, W): max over W
    return (x.unsqueeze(3) + outside).amax(dim=4)


# ---------------------------------------------------------------- attentions


class GFAttention(nn.Module):
    """GPU-friendly attention: external attention with grouped double normalisation.

    x = BN(x); A = K * x (1x1, stride 2 when the width grows); softmax over space,
    then each group's channels are normalised to sum one; out = V * A.
    K: (P, C_in, 1, 1), V: (C_out, P, 1, 1), P = C_out external parameters shared
    by all groups (no multi-head split, the paper's point).
    x: (N, C_in, h, w) -> (N, C_out, h', w')
    """

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 8) -> None:
        super().__init__()
        if out_channels % num_groups:
            raise ValueError(f"{out_channels} channels do not split into {num_groups} groups")
        self.num_groups = num_groups
        self.stride = 1 if in_channels == out_channels else 2
        self.norm = batch_norm(in_channels)
        self.k = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.v = nn.Parameter(torch.empty(out_channels, out_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        attention = F.conv2d(self.norm(x), self.k, stride=self.stride)
        n, params, h, w = attention.shape
        attention = attention.reshape(n, self.num_groups, params // self.num_groups, -1)
        attention = attention.softmax(dim=3)
        attention = attention / (attention.sum(dim=2, keepdim=True) + 1e-6)
        return F.conv2d(attention.reshape(n, params, h, w), self.v)


class MultiHeadSelfAttention(nn.Module):
    """Ablation (paper Table 3): standard multi-head self-attention over the low-res tokens.

    x: (N, C_in, h, w) -> (N, C_out, h', w'); Q, K, V from one 1x1 conv (stride 2 when
    the width grows), 8 heads, scaled dot product, a 1x1 output projection.
    """

    def __init__(self, in_channels: int, out_channels: int, num_heads: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = batch_norm(in_channels)
        stride = 1 if in_channels == out_channels else 2
        self.qkv = nn.Conv2d(in_channels, 3 * out_channels, 1, stride, bias=False)
        self.proj = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        qkv = self.qkv(self.norm(x))
        n, _, h, w = qkv.shape
        q, k, v = qkv.reshape(n, 3, self.num_heads, -1, h * w).unbind(1)  # (N, heads, d, L)
        scale = q.shape[2] ** -0.5
        attention = (q.transpose(2, 3) @ k * scale).softmax(dim=-1)  # (N, heads, L, L)
        out = v @ attention.transpose(2, 3)  # (N, heads, d, L)
        return self.proj(out.reshape(n, -1, h, w))


class MultiHeadExternalAttention(nn.Module):
    """Ablation: multi-head external attention (Guo et al.), memories shared by heads.

    The features are split into 8 heads of d channels; every head attends to the
    same S = r * C_out external key/value memories (double normalisation as in
    external attention). r scales the number of external parameters.
    x: (N, C_in, h, w) -> (N, C_out, h', w')
    """

    def __init__(self, in_channels: int, out_channels: int, ratio: float, num_heads: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = out_channels // num_heads
        memories = max(1, round(ratio * out_channels))
        self.norm = batch_norm(in_channels)
        stride = 1 if in_channels == out_channels else 2
        self.query = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        self.memory_k = nn.Parameter(torch.empty(memories, head_dim))
        self.memory_v = nn.Parameter(torch.empty(head_dim, memories))
        self.proj = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        q = self.query(self.norm(x))
        n, _, h, w = q.shape
        q = q.reshape(n, self.num_heads, -1, h * w)  # (N, heads, d, L)
        attention = (self.memory_k @ q).softmax(dim=-1)  # (N, heads, S, L)
        attention = attention / (attention.sum(dim=2, keepdim=True) + 1e-6)
        out = self.memory_v @ attention  # (N, heads, d, L)
        return self.proj(out.reshape(n, -1, h, w))


class LinformerAttention(nn.Module):
    """Ablation: Linformer (Wang et al. 2020), keys and values projected to k tokens.

    Linformer's sequence projection needs a fixed length, but our inputs vary in
    size, so K and V are first resized bilinearly to a fixed 16x16 grid, then a
    learnable linear map takes the 256 positions to `tokens`.
    x: (N, C_in, h, w) -> (N, C_out, h', w')
    """

    GRID = 16

    def __init__(self, in_channels: int, out_channels: int, tokens: int = 64, num_heads: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = batch_norm(in_channels)
        stride = 1 if in_channels == out_channels else 2
        self.qkv = nn.Conv2d(in_channels, 3 * out_channels, 1, stride, bias=False)
        self.project_tokens = nn.Linear(self.GRID * self.GRID, tokens, bias=False)
        self.proj = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)
        n, channels, h, w = q.shape
        kv = F.interpolate(torch.cat([k, v], 1), (self.GRID, self.GRID), mode="bilinear", align_corners=False)
        kv = self.project_tokens(kv.flatten(2))  # (N, 2C, tokens)
        k, v = kv.reshape(n, 2, self.num_heads, channels // self.num_heads, -1).unbind(1)
        q = q.reshape(n, self.num_heads, -1, h * w)  # (N, heads, d, L)
        attention = (q.transpose(2, 3) @ k * q.shape[2] ** -0.5).softmax(dim=-1)  # (N, h, L, T)
        out = v @ attention.transpose(2, 3)  # (N, heads, d, L)
        return self.proj(out.reshape(n, channels, h, w))


def low_resolution_attention(config: RTFormerConfig, in_channels: int, out_channels: int) -> nn.Module:
    if config.attention == "gfa":
        return GFAttention(in_channels, out_channels, config.num_groups)
    if config.attention == "mhsa":
        return MultiHeadSelfAttention(in_channels, out_channels, config.num_groups)
    if config.attention == "mhea":
        return MultiHeadExternalAttention(in_channels, out_channels, config.mhea_ratio, config.num_groups)
    if config.attention == "linformer":
        return LinformerAttention(in_channels, out_channels, config.linformer_tokens, config.num_groups)
    raise ValueError(f"unknown attention {config.attention!r}; choose from {ATTENTION_KINDS}")


class CrossResolutionAttention(nn.Module):
    """Cross-resolution attention of the high-resolution branch.

    The normalised high-res features are the queries (no projection); keys and
    values are T = cross_size^2 tokens pooled from the low-res branch. Logits are
    scaled by T^-0.5 (the token count), softmax over tokens, no output projection.
    Written as batched matmuls (not the official grouped conv with groups = N), so
    any batch size works and the ONNX graph stays plain.
    x: (N, C, H, W), key/value: (N, C, T) -> (N, C, H, W)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = batch_norm(channels)

    def forward(self, x: Tensor, key: Tensor, value: Tensor) -> Tensor:
        n, channels, h, w = x.shape
        query = self.norm(x).reshape(n, channels, -1)  # (N, C, HW)
        logits = key.transpose(1, 2) @ query * key.shape[2] ** -0.5  # (N, T, HW)
        attention = logits.softmax(dim=1)
        return (value @ attention).reshape(n, channels, h, w)


# ---------------------------------------------------------------- RTFormer block


class RTFormerBlock(nn.Module):
    """Dual-resolution RTFormer block ("EABlock" in the official code).

    x_h: (N, C_h, H/8, W/8), x_l: (N, C_l_in, h, w)
    -> x_h: (N, C_h, H/8, W/8), x_l: (N, C_l, h', w') with h' = h/2 when C_l_in != C_l.
    """

    def __init__(
        self,
        config: RTFormerConfig,
        high_channels: int,
        low_in_channels: int,
        low_channels: int,
        use_injection: bool,
    ) -> None:
        super().__init__()
        self.cross_size = config.cross_size
        self.low_shortcut: nn.Module | None = None
        if low_in_channels != low_channels:
            self.low_shortcut = nn.Sequential(
                batch_norm(low_in_channels),
                nn.Conv2d(low_in_channels, low_channels, 1, 2, bias=False),
            )
        self.low_attention = low_resolution_attention(config, low_in_channels, low_channels)
        self.low_ffn = FFN(low_channels, config.drop_rate)
        self.drop_path = DropPath(config.drop_path_rate)
        self.compression = norm_act_conv(low_channels, high_channels)
        self.cross_kv = nn.Sequential(
            batch_norm(low_channels),
            nn.Identity(),  # the official adaptive max pool sits here (index 1)
            nn.Conv2d(low_channels, 2 * high_channels, 1, bias=False),
        )
        self.cross_attention = CrossResolutionAttention(high_channels)
        self.high_ffn = FFN(high_channels, config.drop_rate)
        self.injection: nn.Module | None = None
        if use_injection:
            self.injection = nn.Sequential(
                *norm_act_conv(high_channels, low_channels // 2, 3, 2),
                *norm_act_conv(low_channels // 2, low_channels, 3, 2),
            )

    def forward(self, x_h: Tensor, x_l: Tensor) -> tuple[Tensor, Tensor]:
        shortcut = x_l if self.low_shortcut is None else self.low_shortcut(x_l)
        x_l = shortcut + self.drop_path(self.low_attention(x_l))
        x_l = x_l + self.drop_path(self.low_ffn(x_l))

        x_h = x_h + resize(self.compression(x_l), x_h)
        key, value = self.cross_key_value(x_l)
        x_h = x_h + self.drop_path(self.cross_attention(x_h, key, value))
        x_h = x_h + self.drop_path(self.high_ffn(x_h))

        if self.injection is not None:
            x_l = x_l + self.injection(x_h)
        return x_h, x_l

    def cross_key_value(self, x_l: Tensor) -> tuple[Tensor, Tensor]:
        """x_l: (N, C_l, h, w) -> key, value: (N, C_h, cross_size^2) each."""
        norm, _, conv = self.cross_kv
        kv = conv(adaptive_max_pool(norm(x_l), self.cross_size)).flatten(2)
        return kv.chunk(2, dim=1)


def resize(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of x to the spatial size of `like` (half-pixel centres)."""
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- DAPPM and head


class DAPPM(nn.Module):
    """Deep aggregation pyramid pooling module (from DDRNet).

    Average pools (5,2,2), (9,4,4), (17,8,8) with the padding counted in the
    average, plus a global average; each scale is added to the previous one and
    refined by a 3x3 conv; the five maps are fused by a 1x1 conv plus a shortcut.
    x: (N, C_in, h, w) -> (N, C_out, h, w)
    """

    POOLS = ((5, 2, 2), (9, 4, 4), (17, 8, 8))

    def __init__(self, in_channels: int, inner_channels: int, out_channels: int) -> None:
        super().__init__()
        self.scale0 = norm_act_conv(in_channels, inner_channels)
        for index, (kernel, stride, padding) in enumerate(self.POOLS, start=1):
            pool = nn.AvgPool2d(kernel, stride, padding, count_include_pad=True)
            self.add_module(f"scale{index}", nn.Sequential(pool, *norm_act_conv(in_channels, inner_channels)))
        self.scale4 = nn.Sequential(nn.AdaptiveAvgPool2d(1), *norm_act_conv(in_channels, inner_channels))
        for index in range(1, 5):
            self.add_module(f"process{index}", norm_act_conv(inner_channels, inner_channels, 3))
        self.compression = norm_act_conv(5 * inner_channels, out_channels)
        self.shortcut = norm_act_conv(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        levels = [self.scale0(x)]
        for index in range(1, 5):
            scale = getattr(self, f"scale{index}")
            process = getattr(self, f"process{index}")
            levels.append(process(resize(scale(x), x) + levels[-1]))
        return self.compression(torch.cat(levels, dim=1)) + self.shortcut(x)


class SegHead(nn.Module):
    """BN-ReLU-conv3x3 -> BN-ReLU-conv1x1 (with bias) to class logits."""

    def __init__(self, in_channels: int, inner_channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn1 = batch_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, inner_channels, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(inner_channels)
        self.conv2 = nn.Conv2d(inner_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(x)))


# ---------------------------------------------------------------- the network


class RTFormer(nn.Module):
    """RTFormer segmentation network.

    forward(x: (N, in_channels, H, W)) -> logits (N, num_classes, H, W) in eval mode;
    in training mode with the aux head, (logits, aux_logits), both at H x W.
    """

    def __init__(self, config: RTFormerConfig) -> None:
        super().__init__()
        self.config = config
        c = config.base_channels
        depth1, depth2, depth3 = config.stage_depths
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c, 3, 2, 1),
            batch_norm(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, 2, 1),
            batch_norm(c),
            nn.ReLU(),
        )
        self.layer1 = make_stage(c, c, depth1)  # 1/4
        self.layer2 = make_stage(c, 2 * c, depth2, stride=2)  # 1/8
        self.layer3 = make_stage(2 * c, 4 * c, depth3, stride=2)  # 1/16
        self.compression3 = norm_act_conv(4 * c, 2 * c)
        self.layer3_high = make_stage(2 * c, 2 * c, 1)  # high-res branch, 1/8
        inject4, inject5 = config.use_injection
        self.block4 = RTFormerBlock(config, 2 * c, 4 * c, 8 * c, inject4)  # low -> 1/32
        self.block5 = RTFormerBlock(config, 2 * c, 8 * c, 8 * c, inject5)
        self.dappm = DAPPM(8 * c, config.spp_channels, 2 * c)
        self.head = SegHead(4 * c, 2 * config.head_channels, config.num_classes)
        self.aux_head = (
            SegHead(2 * c, config.head_channels, config.num_classes) if config.use_aux_head else None
        )
        self.reset_parameters()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The backbone: x (N, in_channels, H, W) -> (fused (N, 4c, H/8, W/8): the high-resolution
        branch with the DAPPM context, x3_high (N, 2c, H/8, W/8): what the aux head sees)."""
        self.check_input(x)
        x1 = self.layer1(self.stem(x))
        x2 = self.layer2(F.relu(x1))
        x3 = self.layer3(F.relu(x2))
        x3_high = self.layer3_high(F.relu(x2 + resize(self.compression3(x3), x2)))

        x4_high, x4 = self.block4(F.relu(x3_high), F.relu(x3))
        x5_high, x5 = self.block5(F.relu(x4_high), F.relu(x4))

        context = resize(self.dappm(x5), x5_high)
        return torch.cat([x5_high, context], dim=1), x3_high

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        fused, x3_high = self.encode(x)
        logits = self.head(fused)
        logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
        if self.training and self.aux_head is not None:
            aux_logits = F.interpolate(
                self.aux_head(x3_high), size=x.shape[2:], mode="bilinear", align_corners=False
            )
            return logits, aux_logits
        return logits

    def check_input(self, x: Tensor) -> None:
        """Clear errors for inputs the network cannot take (skipped while exporting)."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return
        if x.dim() != 4:
            raise ValueError(f"RTFormer expects a 4-D batch (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"RTFormer expects {self.config.in_channels} input channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        if min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"input {x.shape[2]}x{x.shape[3]} is too small: RTFormer needs at least "
                f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}"
            )

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal (fan_in) convs, BN 1/0, zero biases;
        cross-KV conv truncated normal 0.02; external K/V normal 0.001."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
        for block in (self.block4, self.block5):
            nn.init.trunc_normal_(block.cross_kv[2].weight, std=0.02)
            attention = block.low_attention
            if isinstance(attention, GFAttention):
                nn.init.normal_(attention.k, std=0.001)
                nn.init.normal_(attention.v, std=0.001)
            elif isinstance(attention, MultiHeadExternalAttention):
                nn.init.normal_(attention.memory_k, std=0.001)
                nn.init.normal_(attention.memory_v, std=0.001)

    def parameter_groups(self, lr_multiplier: float = 10.0) -> list[dict]:
        """Optimizer groups: DAPPM and heads learn `lr_multiplier` times faster (official).
        Frozen parameters (requires_grad False) are left out."""
        fast_prefixes = ("dappm.", "head.", "aux_head.")
        fast, regular = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            (fast if name.startswith(fast_prefixes) else regular).append(parameter)
        return [
            {"params": regular, "lr_multiplier": 1.0},
            {"params": fast, "lr_multiplier": lr_multiplier},
        ]


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


__all__ = [
    "ATTENTION_KINDS",
    "MIN_INPUT_SIZE",
    "VARIANTS",
    "RTFormer",
    "RTFormerConfig",
    "build_model",
    "count_parameters",
    "variant_config",
]
