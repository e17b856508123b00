"""RangeNet++ (Milioto et al., IROS 2019): the Darknet21 / Darknet53 encoder-decoder for range images.

Layer by layer as lidar-bonnetal's `backbones/darknet.py`, `decoders/darknet.py` and the segmentation head
(see the project's RangeNet++ spec, section 4):

- stem: 3x3 conv (no bias) in->32, BN, LeakyReLU(0.1)
- encoder stages enc1..enc5, (c_in, c_out) = (32,64) ... (512,1024): 3x3 conv with stride (1,2) (width only),
  BN, LeakyReLU, then `blocks[i]` BasicBlocks(c_out, [c_in, c_out]); Dropout2d after every stage
- decoder stages dec5..dec1: ConvTranspose2d kernel (1,4), stride (1,2), padding (0,1) with bias, BN, LeakyReLU,
  one BasicBlock(c_out, [c_in, c_out]); after each stage that doubled the width, the encoder skip of that
  resolution is added; Dropout2d after dec1
- head: Dropout2d, 3x3 conv 32->C with bias

BatchNorm momentum is 0.01 (PyTorch convention) everywhere, PyTorch default initialisation everywhere.
Parameter counts for 20 classes and 5 input channels: rangenet21 24,712,980, rangenet53 50,377,364.

Differences from the reference, all deliberate:
- the network returns **logits**; RangeNet++ returns softmax probabilities (use `softmax(dim=1)` to compare).
- skips are detached (`detach_skips=True`, the reference behaviour: no gradient flows through them; every
  parameter still receives gradient through the main path). `detach_skips=False` lets gradient through.
- the input width must be divisible by the total width stride (32 at output stride 32). The reference crashes
  with a size mismatch; we raise a `ConfigError` naming the width, or, with `pad_width=True`, pad the width on the
  right with zeros up to the next multiple and crop the output back.
- `channels_last=True` (default) keeps weights and activations in channels-last memory format, measured faster on
  this CPU (docs/bench/model.md); outputs are returned contiguous. `channels_last=False` is the plain layout.
- small variants: `width` multiplies every channel count (rounded, at least 1), or `channels` gives the six counts
  (stem, enc1..enc5; the decoder mirrors them), and `blocks` sets the number of BasicBlocks per encoder stage
  (5 entries). The defaults are the faithful sizes.

State-dict keys are `backbone.*`, `decoder.*`, `head.*` with the reference's names below each prefix, so
RangeNet++'s released files `backbone`, `segmentation_decoder`, `segmentation_head` load with
`models.load_rangenet_checkpoint` (prefixing only).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lidarseg.errors import ConfigError

from . import register_model

__all__ = ["BasicBlock", "DarknetEncoder", "DarknetDecoder", "RangeNet", "rangenet21", "rangenet53",
           "MODEL_BLOCKS", "BASE_CHANNELS"]

MODEL_BLOCKS = {21: (1, 1, 2, 2, 1), 53: (1, 2, 8, 8, 4)}
BASE_CHANNELS = (32, 64, 128, 256, 512, 1024)
BN_MOMENTUM = 0.01
LEAKY_SLOPE = 0.1
DEFAULT_DROPOUT = 0.01  # darknet21.yaml / darknet53.yaml (0.05 in the 512px and 1024px yamls)


class BasicBlock(nn.Module):
    """Darknet residual block: 1x1 conv inplanes->planes[0], BN, LReLU, 3x3 conv planes[0]->planes[1], BN, LReLU,
    plus the input (no activation after the addition). [B,inplanes,H,W] -> [B,planes[1],H,W], planes[1] == inplanes.
    """

    def __init__(self, inplanes: int, planes: Sequence[int], bn_momentum: float = BN_MOMENTUM):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes[0], 1, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0], momentum=bn_momentum)
        self.relu1 = nn.LeakyReLU(LEAKY_SLOPE)
        self.conv2 = nn.Conv2d(planes[0], planes[1], 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes[1], momentum=bn_momentum)
        self.relu2 = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return out + x


def _strides(output_stride: int) -> list[int]:
    """Width strides of the five encoder stages: 2 until the output stride is reached, then 1."""
    valid = (1, 2, 4, 8, 16, 32)
    if output_stride not in valid:
        raise ConfigError(f"model option output_stride={output_stride!r}: expected one of {list(valid)}")
    n = output_stride.bit_length() - 1
    return [2] * n + [1] * (5 - n)


class DarknetEncoder(nn.Module):
    """Darknet backbone. forward(x [B,in,H,W]) -> (features [B,ch[5],H,W/os], skips {1: [B,ch[0],H,W], 2: ..., })."""

    def __init__(self, in_channels: int = 5, channels: Sequence[int] = BASE_CHANNELS,
                 blocks: Sequence[int] = MODEL_BLOCKS[53], dropout: float = DEFAULT_DROPOUT,
                 output_stride: int = 32, detach_skips: bool = True, bn_momentum: float = BN_MOMENTUM):
        super().__init__()
        self.detach_skips = detach_skips
        self.strides = _strides(output_stride)
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0], momentum=bn_momentum)
        self.relu1 = nn.LeakyReLU(LEAKY_SLOPE)
        for i in range(5):
            c_in, c_out = channels[i], channels[i + 1]
            layers = [("conv", nn.Conv2d(c_in, c_out, 3, stride=(1, self.strides[i]), padding=1, bias=False)),
                      ("bn", nn.BatchNorm2d(c_out, momentum=bn_momentum)),
                      ("relu", nn.LeakyReLU(LEAKY_SLOPE))]
            layers += [(f"residual_{j}", BasicBlock(c_out, [c_in, c_out], bn_momentum)) for j in range(blocks[i])]
            self.add_module(f"enc{i + 1}", nn.Sequential(OrderedDict(layers)))
        self.dropout = nn.Dropout2d(p=dropout)

    def forward(self, x: torch.Tensor):
        skips: dict[int, torch.Tensor] = {}
        os = 1
        x = self.relu1(self.bn1(self.conv1(x)))
        for i in range(5):
            y = getattr(self, f"enc{i + 1}")(x)
            if y.shape[-1] < x.shape[-1]:
                skips[os] = x.detach() if self.detach_skips else x
                os *= 2
            x = self.dropout(y)
        return x, skips


class DarknetDecoder(nn.Module):
    """Darknet decoder. forward(x [B,ch[5],H,W/os], skips) -> [B,ch[0],H,W] (after its Dropout2d)."""

    def __init__(self, channels: Sequence[int] = BASE_CHANNELS, dropout: float = DEFAULT_DROPOUT,
                 output_stride: int = 32, detach_skips: bool = True, bn_momentum: float = BN_MOMENTUM):
        super().__init__()
        self.detach_skips = detach_skips
        strides = _strides(output_stride)
        for i in reversed(range(5)):  # dec5 .. dec1
            c_in, c_out = channels[i + 1], channels[i]
            if strides[i] == 2:
                up = ("upconv", nn.ConvTranspose2d(c_in, c_out, kernel_size=(1, 4), stride=(1, 2), padding=(0, 1)))
            else:
                up = ("conv", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
            layers = [up, ("bn", nn.BatchNorm2d(c_out, momentum=bn_momentum)), ("relu", nn.LeakyReLU(LEAKY_SLOPE)),
                      ("residual", BasicBlock(c_out, [c_in, c_out], bn_momentum))]
            self.add_module(f"dec{i + 1}", nn.Sequential(OrderedDict(layers)))
        self.dropout = nn.Dropout2d(p=dropout)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor, skips: dict) -> torch.Tensor:
        os = self.output_stride
        for i in reversed(range(5)):
            y = getattr(self, f"dec{i + 1}")(x)
            if y.shape[-1] > x.shape[-1]:
                os //= 2
                skip = skips[os]
                y = y + (skip.detach() if self.detach_skips else skip)
            x = y
        return self.dropout(x)


class RangeNet(nn.Module):
    """RangeNet++ Darknet encoder-decoder with a 3x3 head.

    forward(x [B,in_channels,H,W], return_features=False) -> logits [B,num_classes,H,W]
    (or `(logits, features [B,channels[0],H,W])`, the decoder output the head sees). H is free; W must be a multiple
    of `width_stride` (32 by default) unless `pad_width=True`.
    """

    input_mode = "range"

    def __init__(self, num_classes: int = 20, in_channels: int = 5, depth: int = 53, *,
                 blocks: Sequence[int] | None = None, width: float = 1.0, channels: Sequence[int] | None = None,
                 dropout: float = DEFAULT_DROPOUT,
                 detach_skips: bool = True, output_stride: int = 32, pad_width: bool = False,
                 bn_momentum: float = BN_MOMENTUM, channels_last: bool = True):
        super().__init__()
        if blocks is None:
            if depth not in MODEL_BLOCKS:
                raise ConfigError(f"model option depth={depth!r}: expected one of {sorted(MODEL_BLOCKS)}")
            blocks = MODEL_BLOCKS[depth]
        blocks = [int(b) for b in blocks]
        if len(blocks) != 5 or min(blocks) < 0:
            raise ConfigError(f"model option blocks={blocks!r}: expected 5 non-negative integers (one per stage)")
        if not width > 0:
            raise ConfigError(f"model option width={width!r}: expected a positive multiplier")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model option dropout={dropout!r}: expected 0 <= p < 1")
        if num_classes < 1 or in_channels < 1:
            raise ConfigError(f"num_classes={num_classes}, in_channels={in_channels}: both must be >= 1")
        if channels is None:
            channels = [max(1, int(round(c * width))) for c in BASE_CHANNELS]
        else:
            if width != 1.0:
                raise ConfigError(f"model options width={width!r} and channels={list(channels)!r}: give one of them")
            if len(channels) != 6 or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                                             for c in channels):
                raise ConfigError(f"model option channels={list(channels)!r}: expected 6 positive integers (stem, "
                                  "then the output of each encoder stage; the decoder mirrors them)")
            channels = list(channels)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.channels, self.blocks = channels, blocks
        self.detach_skips, self.pad_width = detach_skips, pad_width
        self.width_stride = output_stride
        self.backbone = DarknetEncoder(in_channels, channels, blocks, dropout, output_stride, detach_skips, bn_momentum)
        self.decoder = DarknetDecoder(channels, dropout, output_stride, detach_skips, bn_momentum)
        self.head = nn.Sequential(nn.Dropout2d(p=dropout), nn.Conv2d(channels[0], num_classes, 3, padding=1))
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"RangeNet expects input [B,{self.in_channels},H,W], got {list(x.shape)}")
        W = x.shape[-1]
        pad = (-W) % self.width_stride
        if pad:
            if not self.pad_width:
                raise ConfigError(
                    f"input width {W} is not divisible by {self.width_stride}, the network's total width stride "
                    f"(RangeNet++ cannot take it); use a width such as {W + pad} or build the model with "
                    f"pad_width=True to zero-pad on the right and crop the output")
            x = F.pad(x, (0, pad))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats, skips = self.backbone(x)
        feats = self.decoder(feats, skips)
        logits = self.head(feats)
        if pad:
            logits, feats = logits[..., :W], feats[..., :W]
        logits = logits.contiguous()
        return (logits, feats.contiguous()) if return_features else logits


@register_model("rangenet21", model_class=RangeNet)
def rangenet21(num_classes: int = 20, in_channels: int = 5, **options) -> RangeNet:
    """RangeNet21 (Darknet21 blocks [1,1,2,2,1]); 24,712,980 parameters for 20 classes, 5 channels."""
    return RangeNet(num_classes, in_channels, depth=21, **options)


@register_model("rangenet53", model_class=RangeNet)
def rangenet53(num_classes: int = 20, in_channels: int = 5, **options) -> RangeNet:
    """RangeNet53 (Darknet53 blocks [1,2,8,8,4]); 50,377,364 parameters for 20 classes, 5 channels."""
    return RangeNet(num_classes, in_channels, depth=53, **options)
