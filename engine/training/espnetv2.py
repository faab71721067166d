"""ESPNetv2 (Mehta et al., CVPR 2019), the segmentation network at width s = 2.0:
the Cityscapes-trained teacher for distillation and for judging generalization.

Used for training and evaluation only; the app and the runtime never import it.
Written from the paper's description and checked against the released weights
(`teachers/espnetv2-cityscapes/`): `state_dict()` has the file's 526
tensor names and shapes, and it loads strictly.

Encoder (EESPNet without its level 5 and classifier), for an (N, 3, H, W) input:
level1 (H/2, 32) -> level2_0 (H/4, 128) -> level3 (H/8, 256) -> level4 (H/16, 512).
Decoder: efficient pyramid pooling at H/16, then three steps of x2 upsampling, each
adding an encoder level through an efficient point-wise projection, to 20 channels
at H/2; the output is upsampled to the input size. H and W must be multiples of 16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Cityscapes train id (0-18) -> CamVid class (shared/data/README.md order). Channel 19,
# the teacher's background/ignore output, maps to no CamVid class.
CITYSCAPES_TO_CAMVID = (3, 4, 1, 1, 7, 2, 6, 6, 5, 5, 0, 9, 10, 8, 8, 8, 8, 10, 10)
TEACHER_CHANNELS = 20
# (H, W) the released weights were trained at. A frame squashed to it scores 60.2 mIoU on
# CamVid test, against 54.0 at twice CamVid's size (teachers/espnetv2-cityscapes).
OWN_SIZE = (512, 1024)


@dataclass(frozen=True)
class ESPNetv2Config:
    channels: tuple[int, ...] = (32, 128, 256, 512)  # levels 1-4 at s = 2.0
    repeats: tuple[int, int] = (3, 7)  # EESP units after the down-samplers of levels 3 and 4
    receptive_limits: tuple[int, ...] = (13, 11, 9, 7)  # largest 3x3-dilated field per stage
    branches: int = 4  # parallel dilated branches in an EESP unit
    reinforcement_channels: int = 3  # the input image fed again to each down-sampler
    decoder_planes: int = 16  # Cityscapes' decoder width
    num_classes: int = TEACHER_CHANNELS


# ---------------------------------------------------------------- building blocks


class ConvBN(nn.Module):
    """conv -> BN (-> PReLU with `act`), padding keeping the size; tensor names conv/bn/act."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
    ):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        if act:
            self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if hasattr(self, "act") else x


class BNAct(nn.Module):
    """BN -> PReLU; tensor names bn/act."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class DilatedDepthwise(nn.Module):
    def __init__(self, channels: int, stride: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride, dilation, dilation, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class EESP(nn.Module):
    """Extremely Efficient Spatial Pyramid unit: grouped 1x1 reduction, `branches` depth-wise
    3x3 convolutions of growing dilation fused hierarchically (each adds the previous),
    grouped 1x1 expansion; a residual and PReLU unless it is a down-sampling branch."""

    def __init__(self, c_in: int, c_out: int, stride: int, branches: int, receptive_limit: int):
        super().__init__()
        width = c_out // branches
        self.stride = stride
        self.proj_1x1 = ConvBN(c_in, width, 1, groups=branches)
        # Kernel fields 3, 5, 7, ... up to the limit (beyond it: 3 again), sorted: dilation (field - 1) / 2.
        fields = sorted(3 + 2 * i if 3 + 2 * i <= receptive_limit else 3 for i in range(branches))
        self.spp_dw = nn.ModuleList(DilatedDepthwise(width, stride, (field - 1) // 2) for field in fields)
        self.conv_1x1_exp = ConvBN(c_out, c_out, 1, groups=branches, act=False)
        self.br_after_cat = BNAct(c_out)
        self.module_act = nn.PReLU(c_out)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.proj_1x1(x)
        outputs = [self.spp_dw[0](reduced)]
        for branch in self.spp_dw[1:]:
            outputs.append(branch(reduced) + outputs[-1])
        return self.conv_1x1_exp(self.br_after_cat(torch.cat(outputs, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expanded = self.expand(x)
        if expanded.shape == x.shape:
            expanded = expanded + x
        return self.module_act(expanded)


class DownSampler(nn.Module):
    """Strided EESP concatenated with 3x3 average pooling, plus the input image pooled to
    the same size and projected (input reinforcement), then PReLU."""

    def __init__(self, c_in: int, c_out: int, branches: int, receptive_limit: int, reinforcement: int):
        super().__init__()
        self.eesp = EESP(c_in, c_out - c_in, 2, branches, receptive_limit)
        self.inp_reinf = nn.Sequential(
            ConvBN(reinforcement, reinforcement, 3), ConvBN(reinforcement, c_out, 1, act=False)
        )
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 3, 2, 1)
        output = torch.cat([pooled, self.eesp.expand(x)], 1)
        while image.shape[2] != pooled.shape[2]:
            image = F.avg_pool2d(image, 3, 2, 1)
        return self.act(output + self.inp_reinf(image))


class DecoderConvBN(nn.Module):
    """conv -> BN -> PReLU with the tensor names cbr.0/1/2 (the decoder's layers)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int = 1):
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.PReLU(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbr(x)


class DecoderBNAct(nn.Module):
    """BN -> PReLU with the tensor names br.0/1."""

    def __init__(self, channels: int):
        super().__init__()
        self.br = nn.Sequential(nn.BatchNorm2d(channels), nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.br(x)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class EfficientPyramidPool(nn.Module):
    """Project to `proj` channels; a depth-wise 3x3 at scales 2, 1.5, 1, 0.5 and 0.1 of the
    map (at least 5x5), each brought back to its size; merged by BN, PReLU, shuffle, a
    grouped 3x3 and a 1x1 to `c_out` (then BN and PReLU unless it is the last layer)."""

    SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)

    def __init__(self, c_in: int, proj: int, c_out: int, last: bool = False):
        super().__init__()
        count = len(self.SCALES)
        self.projection_layer = DecoderConvBN(c_in, proj, 1)
        self.stages = nn.ModuleList(
            nn.Conv2d(proj, proj, 3, 1, 1, groups=proj, bias=False) for _ in self.SCALES
        )
        self.merge_layer = nn.Sequential(
            DecoderBNAct(proj * count),
            ChannelShuffle(count),
            DecoderConvBN(proj * count, proj, 3, groups=proj),
            nn.Conv2d(proj, c_out, 1, bias=last),
        )
        self.last = last
        if not last:
            self.br = DecoderBNAct(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_layer(x)
        height, width = x.shape[2:]
        levels = []
        for scale, stage in zip(self.SCALES, self.stages, strict=True):
            size = (max(5, math.ceil(height * scale)), max(5, math.ceil(width * scale)))
            if scale < 1.0:
                level = stage(F.adaptive_avg_pool2d(x, size))
                level = F.interpolate(level, (height, width), mode="bilinear", align_corners=True)
            elif scale > 1.0:
                level = stage(F.interpolate(x, size, mode="bilinear", align_corners=True))
                level = F.adaptive_avg_pool2d(level, (height, width))
            else:
                level = stage(x)
            levels.append(level)
        out = self.merge_layer(torch.cat(levels, 1))
        return out if self.last else self.br(out)


class EfficientPointwise(nn.Module):
    """A grouped 3x3 projection of an encoder level, weighted per channel by a sigmoid of
    its global average (tensor names wt_layer.1, expansion_layer)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.wt_layer = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c_out, 1, bias=False), nn.Sigmoid()
        )
        self.expansion_layer = DecoderConvBN(c_in, c_out, 3, groups=math.gcd(c_in, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


# ---------------------------------------------------------------- the network


class EESPNetEncoder(nn.Module):
    def __init__(self, config: ESPNetv2Config):
        super().__init__()
        c, limits, k, reinf = (
            config.channels,
            config.receptive_limits,
            config.branches,
            config.reinforcement_channels,
        )
        self.level1 = ConvBN(3, c[0], 3, stride=2)
        self.level2_0 = DownSampler(c[0], c[1], k, limits[0], reinf)
        self.level3_0 = DownSampler(c[1], c[2], k, limits[1], reinf)
        self.level3 = nn.ModuleList(EESP(c[2], c[2], 1, k, limits[2]) for _ in range(config.repeats[0]))
        self.level4_0 = DownSampler(c[2], c[3], k, limits[2], reinf)
        self.level4 = nn.ModuleList(EESP(c[3], c[3], 1, k, limits[3]) for _ in range(config.repeats[1]))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image (N, 3, H, W) -> the four levels at H/2, H/4, H/8, H/16."""
        level1 = self.level1(image)
        level2 = self.level2_0(level1, image)
        level3 = self.level3_0(level2, image)
        for unit in self.level3:
            level3 = unit(level3)
        level4 = self.level4_0(level3, image)
        for unit in self.level4:
            level4 = unit(level4)
        return level1, level2, level3, level4


class ESPNetv2Segmentation(nn.Module):
    """(N, 3, H, W) ImageNet-normalised RGB -> (N, num_classes, H, W) logits."""

    def __init__(self, config: ESPNetv2Config | None = None):
        super().__init__()
        self.config = config = config or ESPNetv2Config()
        c, d = config.channels, config.decoder_planes
        planes = (4 * d, 3 * d, 2 * d)
        proj = min(config.num_classes // 2, d)
        self.base_net = EESPNetEncoder(config)
        self.bu_dec_l1 = EfficientPyramidPool(c[3], proj, planes[0])
        self.bu_dec_l2 = EfficientPyramidPool(planes[0], proj, planes[1])
        self.bu_dec_l3 = EfficientPyramidPool(planes[1], proj, planes[2])
        self.bu_dec_l4 = EfficientPyramidPool(planes[2], proj, config.num_classes, last=True)
        self.merge_enc_dec_l2 = EfficientPointwise(c[2], planes[0])
        self.merge_enc_dec_l3 = EfficientPointwise(c[1], planes[1])
        self.merge_enc_dec_l4 = EfficientPointwise(c[0], planes[2])
        self.bu_br_l2 = nn.Sequential(nn.BatchNorm2d(planes[0]), nn.PReLU(planes[0]))
        self.bu_br_l3 = nn.Sequential(nn.BatchNorm2d(planes[1]), nn.PReLU(planes[1]))
        self.bu_br_l4 = nn.Sequential(nn.BatchNorm2d(planes[2]), nn.PReLU(planes[2]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[2] % 16 or image.shape[3] % 16:
            raise ValueError(f"ESPNetv2 needs sides that are multiples of 16, got {tuple(image.shape[2:])}")
        level1, level2, level3, level4 = self.base_net(image)
        out = self.bu_dec_l1(level4)
        steps = (
            (level3, self.merge_enc_dec_l2, self.bu_br_l2, self.bu_dec_l2),
            (level2, self.merge_enc_dec_l3, self.bu_br_l3, self.bu_dec_l3),
            (level1, self.merge_enc_dec_l4, self.bu_br_l4, self.bu_dec_l4),
        )
        for skip, project, norm, decode in steps:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
            out = decode(norm(project(skip) + out))
        return F.interpolate(out, size=image.shape[2:], mode="bilinear", align_corners=True)


def load_espnetv2(path: str | Path) -> ESPNetv2Segmentation:
    """The released weights, loaded strictly (`weights_only=True`), in eval mode."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = ESPNetv2Segmentation()
    model.load_state_dict(state, strict=True)
    return model.eval()


class CamVidTeacher(nn.Module):
    """The Cityscapes teacher speaking CamVid: input resized by `scale` (sides rounded to
    multiples of 32), or squashed to `size` (H, W) when given (OWN_SIZE scores best),
    softmax over its 20 channels, probabilities summed per CamVid class;
    returns their log (N, 11, H, W) at the input size. The background channel's share is
    dropped, so where the teacher says background the classes share what is left.
    """

    def __init__(
        self, network: ESPNetv2Segmentation, scale: float = 2.0, size: tuple[int, int] | None = None
    ):
        super().__init__()
        self.network, self.scale, self.size = network, scale, size
        merge = torch.zeros(max(CITYSCAPES_TO_CAMVID) + 1, TEACHER_CHANNELS)
        for cityscapes, camvid in enumerate(CITYSCAPES_TO_CAMVID):
            merge[camvid, cityscapes] = 1.0
        self.register_buffer("merge", merge, persistent=False)

    def scaled_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The network's 20-channel logits on `image` resized by `scale` (sides to multiples
        of 32) or to `size`."""
        height, width = image.shape[2:]
        size = self.size or (round(height * self.scale / 32) * 32, round(width * self.scale / 32) * 32)
        return self.network(F.interpolate(image, size=size, mode="bilinear", align_corners=False))

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, 11, H, W) CamVid class probabilities (summing to <= 1)."""
        height, width = image.shape[2:]
        teacher = self.scaled_logits(image).softmax(dim=1)
        merged = torch.einsum("kc,nchw->nkhw", self.merge, teacher)
        return F.interpolate(merged, size=(height, width), mode="bilinear", align_corners=False)

    def labels(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, H, W) uint8 CamVid labels from the argmax over all
        20 channels; 255 where the teacher's answer is its background channel."""
        height, width = image.shape[2:]
        logits = F.interpolate(
            self.scaled_logits(image), size=(height, width), mode="bilinear", align_corners=False
        )
        table = torch.tensor([*CITYSCAPES_TO_CAMVID, 255], dtype=torch.uint8, device=image.device)
        return table[logits.argmax(dim=1)]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.probabilities(image).clamp_min(1e-8).log()


def load_teacher(path: str | Path, scale: float = 2.0, size: tuple[int, int] | None = None) -> CamVidTeacher:
    """The teacher in eval mode (input resized by `scale`, or squashed to `size`). Building
    it draws initial weights: the global RNG is left as it was, so whether a cache had to
    be filled never changes the training run."""
    with torch.random.fork_rng(devices=[]):
        return CamVidTeacher(load_espnetv2(path), scale=scale, size=size).eval()
