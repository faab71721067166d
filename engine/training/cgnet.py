"""CGNet, the Context Guided Network (Wu et al., "CGNet: A Light-weight Context Guided
Network for Semantic Segmentation", IEEE TIP 2020), at M = 3, N = 21: the CamVid teacher.

Used for training and evaluation only; the app and the runtime never import it.
Written from the paper and checked against the released CamVid weights
(`teachers/cgnet-camvid/`): `state_dict()` has the file's 498 tensor names
and shapes, and it loads strictly.

For an (N, 3, H, W) input (the frame minus a per-channel mean, no std):
stage 1: three 3x3 conv-BN-PReLU (the first with stride 2) -> (N, 32, H/2, W/2), joined
with the input average-pooled to H/2 -> 35 channels;
stage 2: a down-sampling context guided (CG) block -> (N, 64, H/4), M - 1 CG blocks,
joined with the down-sampler's output and the input pooled to H/4 -> 131 channels;
stage 3: a down-sampling CG block -> (N, 128, H/8), N - 1 CG blocks, joined with the
down-sampler's output -> 256 channels; a 1x1 classifier, upsampled x8 to (N, K, H, W).
A CG block joins a local 3x3 depthwise feature with a dilated one (its surroundings)
and reweights the channels by the global context (a squeeze-and-excitation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD

# Subtracted from the RGB frame, no std. The reference computed these means over OpenCV's
# BGR images but subtracts them after flipping to RGB (its dataset/camvid.py), and the
# weights learnt that: as listed 65.85 mIoU on every 8th CamVid test image, reversed
# to true RGB order 55.86.
CAMVID_MEAN = (105.65775, 103.329834, 99.625404)
BN_EPS = 1e-3  # the reference's BatchNorm epsilon everywhere


@dataclass(frozen=True)
class CGNetConfig:
    num_classes: int = 11
    blocks_stage2: int = 3  # M: the down-sampler plus M - 1 CG blocks
    blocks_stage3: int = 21  # N: the down-sampler plus N - 1 CG blocks
    channels: tuple[int, int, int] = (32, 64, 128)  # stages 1-3
    dilations: tuple[int, int] = (2, 4)  # surroundings of stages 2 and 3
    reductions: tuple[int, int] = (8, 16)  # global-context squeeze of stages 2 and 3


class ConvBNPReLU(nn.Module):
    """conv (no bias, padding keeping the size / stride) -> BN -> PReLU; names conv/bn/act."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class BNPReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class Depthwise(nn.Module):
    """3x3 depthwise conv, dilated by `dilation` (size kept); the tensor is `conv`."""

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class GlobalContext(nn.Module):
    """f_glo: channels reweighted by a two-layer gate on their global mean (N, C, H, W) -> same."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]


class ContextGuidedDown(nn.Module):
    """The down-sampling CG block: (N, c_in, H, W) -> (N, c_out, H/2, W/2). A 3x3 stride-2
    conv to c_out, local and surrounding features (2 c_out), BN-PReLU, a 1x1 reduction
    back to c_out, then the global context."""

    def __init__(self, c_in: int, c_out: int, dilation: int, reduction: int):
        super().__init__()
        self.conv1x1 = ConvBNPReLU(c_in, c_out, 3, 2)  # the reference's name for this 3x3 conv
        self.F_loc = Depthwise(c_out)
        self.F_sur = Depthwise(c_out, dilation)
        self.bn = nn.BatchNorm2d(2 * c_out, eps=BN_EPS)
        self.act = nn.PReLU(2 * c_out)
        self.reduce = nn.Module()
        self.reduce.conv = nn.Conv2d(2 * c_out, c_out, 1, bias=False)
        self.F_glo = GlobalContext(c_out, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1x1(x)
        joint = self.act(self.bn(torch.cat([self.F_loc(x), self.F_sur(x)], dim=1)))
        return self.F_glo(self.reduce.conv(joint))


class ContextGuided(nn.Module):
    """The CG block with a residual: (N, C, H, W) -> same. A 1x1 conv to C/2, local and
    surrounding features (C), BN-PReLU, the global context, plus the input."""

    def __init__(self, channels: int, dilation: int, reduction: int):
        super().__init__()
        half = channels // 2
        self.conv1x1 = ConvBNPReLU(channels, half, 1)
        self.F_loc = Depthwise(half)
        self.F_sur = Depthwise(half, dilation)
        self.bn_prelu = BNPReLU(channels)
        self.F_glo = GlobalContext(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x)
        joint = self.bn_prelu(torch.cat([self.F_loc(y), self.F_sur(y)], dim=1))
        return x + self.F_glo(joint)


class CGNet(nn.Module):
    """(N, 3, H, W) mean-subtracted RGB -> (N, num_classes, H, W) logits; tensor names
    as in the reference (level1_0 ... classifier.0.conv)."""

    def __init__(self, config: CGNetConfig | None = None):
        super().__init__()
        self.config = config = config or CGNetConfig()
        c1, c2, c3 = config.channels
        (d2, d3), (r2, r3) = config.dilations, config.reductions
        self.level1_0 = ConvBNPReLU(3, c1, 3, 2)
        self.level1_1 = ConvBNPReLU(c1, c1, 3)
        self.level1_2 = ConvBNPReLU(c1, c1, 3)
        self.b1 = BNPReLU(c1 + 3)
        self.level2_0 = ContextGuidedDown(c1 + 3, c2, d2, r2)
        self.level2 = nn.ModuleList(ContextGuided(c2, d2, r2) for _ in range(config.blocks_stage2 - 1))
        self.bn_prelu_2 = BNPReLU(2 * c2 + 3)
        self.level3_0 = ContextGuidedDown(2 * c2 + 3, c3, d3, r3)
        self.level3 = nn.ModuleList(ContextGuided(c3, d3, r3) for _ in range(config.blocks_stage3 - 1))
        self.bn_prelu_3 = BNPReLU(2 * c3)
        head = nn.Module()
        head.conv = nn.Conv2d(2 * c3, config.num_classes, 1, bias=False)
        self.classifier = nn.Sequential(head)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Input injection: the image average-pooled (3x3, stride 2, pad 1) to each stage's size.
        half = F.avg_pool2d(image, 3, 2, 1)
        quarter = F.avg_pool2d(half, 3, 2, 1)
        x = self.level1_2(self.level1_1(self.level1_0(image)))
        x = self.b1(torch.cat([x, half], dim=1))
        down2 = self.level2_0(x)
        x = down2
        for block in self.level2:
            x = block(x)
        x = self.bn_prelu_2(torch.cat([x, down2, quarter], dim=1))
        down3 = self.level3_0(x)
        x = down3
        for block in self.level3:
            x = block(x)
        x = self.bn_prelu_3(torch.cat([down3, x], dim=1))
        logits = self.classifier[0].conv(x)
        return F.interpolate(logits, size=image.shape[2:], mode="bilinear", align_corners=False)


def load_cgnet(path: str | Path) -> CGNet:
    """The released CamVid weights (`{"epoch", "model"}`), loaded strictly with
    `weights_only=True`, in eval mode."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = CGNet()
    model.load_state_dict(state.get("model", state), strict=True)
    flush_subnormal_weights(model)
    return model.eval()


@torch.no_grad()
def flush_subnormal_weights(model: nn.Module) -> int:
    """Set subnormal floats (below float32's smallest normal) to zero; returns how many.
    Why: 40,122 of the released CGNet's weights are subnormal, which x86 handles in
    microcode: 2.4 s a 360x480 frame on 2 cores, 0.11 s without them, the logits equal."""
    tiny = torch.finfo(torch.float32).tiny
    count = 0
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            subnormal = (tensor.abs() < tiny) & (tensor != 0)
            count += int(subnormal.sum())
            tensor[subnormal] = 0
    return count


class CGNetTeacher(nn.Module):
    """CGNet on the project's normalised input: (N, 3, H, W) ImageNet-normalised RGB ->
    (N, 11, H, W) CamVid log-probabilities (its classes are CamVid's, in our order).
    The frame is seen as is (CamVid's 360x480 is what it was trained on)."""

    def __init__(self, network: CGNet):
        super().__init__()
        self.network = network
        imagenet_mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        imagenet_std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("to_pixels_scale", 255.0 * imagenet_std, persistent=False)
        own_mean = torch.tensor(CAMVID_MEAN).view(1, 3, 1, 1)
        self.register_buffer("to_pixels_shift", 255.0 * imagenet_mean - own_mean, persistent=False)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image * self.to_pixels_scale + self.to_pixels_shift)

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image).softmax(dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image).log_softmax(dim=1)
