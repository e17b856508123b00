"""CENet (Cheng et al., ICME 2022): the ResNet-34 range-image network of huixiancheng/CENet (`ResNet_34`).

Structure, as the reference's `modules/network/ResNet.py` with the activation its trainer swaps in:

- stem `conv1`, `conv2`, `conv3`: 3x3 conv (no bias) + BN + activation, in->64->128->128
- `layer1`..`layer4`: torchvision-style BasicBlocks (3x3 conv, BN, act, 3x3 conv, BN, + identity, act), [3, 4, 6, 3]
  blocks of 128 channels; layer2..4 start with stride 2 and a 1x1 conv + BN downsample
- the outputs of layer2..4 are resized to the stem's H x W (bilinear, align_corners=True) and concatenated with the
  stem and layer1 outputs (5 x 128 = 640 channels)
- head: `conv_1` 3x3 640->256 and `conv_2` 3x3 256->128 (conv + BN + act), `semantic_output` 1x1 128->C (bias)
- auxiliary heads `aux_head1..3`: 1x1 128->C (bias) on the resized layer2, layer3, layer4 outputs

The reference builds LeakyReLU (slope 0.01) everywhere and its trainer replaces every LeakyReLU by `nn.Hardswish`
or `nn.SiLU` when `train.act` says so (the senet-*.yml configs use Hardswish). `act` selects the same here.
Parameter counts for 20 classes and 5 input channels: 6,781,968 with the auxiliary heads, 6,774,228 without.
BatchNorm uses PyTorch's defaults (momentum 0.1, eps 1e-5), as the reference.

Differences from the reference, deliberate:
- **logits** instead of softmax probabilities (the reference applies `softmax(dim=1)` to every head).
- the auxiliary heads are training-only: in training mode (with `aux_heads=True`) the model returns the list
  `[main, aux1, aux2, aux3]` as the reference; in eval mode it returns the main logits only (the reference returns
  the list in both modes and its evaluation uses the first entry).
- `in_channels` is a parameter (the reference fixes 5); `width` scales the channel counts and `layers` the number of
  blocks per stage, for small CPU variants; the defaults are the published sizes.

State-dict keys are the reference's (`conv1.conv.weight`, `layer2.0.downsample.1.running_var`,
`semantic_output.bias`, `aux_head3.weight`, ...), so its released checkpoints load with
`models.load_state_dict_strict` (which strips DataParallel's `module.` prefix).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lidarseg.errors import ConfigError

from . import register_model

__all__ = ["CENet", "cenet", "ACTIVATIONS", "CENET_LAYERS"]

CENET_LAYERS = (3, 4, 6, 3)
#: `act` option -> activation module factory (the reference's LeakyReLU has PyTorch's default slope 0.01)
ACTIVATIONS = {"hardswish": nn.Hardswish, "leakyrelu": nn.LeakyReLU, "silu": nn.SiLU}


def _act(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class ConvBNAct(nn.Module):
    """kxk conv (no bias) + BN + activation; the reference's `BasicConv2d` (keys `conv.*`, `bn.*`)."""

    def __init__(self, cin: int, cout: int, act: str, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: act(BN(conv3x3(act(BN(conv3x3(x))))) + shortcut(x)), shortcut = 1x1 conv + BN when the
    stride or width changes. [B,cin,H,W] -> [B,cout,H/stride,W/stride]."""

    def __init__(self, cin: int, cout: int, act: str, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = _act(act)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class CENet(nn.Module):
    """CENet's ResNet-34 pipeline. forward(x [B,C_in,H,W]) -> logits [B,C,H,W] (eval, or `aux_heads=False`) or the
    list of 4 logit maps [main, aux1, aux2, aux3], each [B,C,H,W] (training with `aux_heads=True`)."""

    input_mode = "range"

    def __init__(self, num_classes: int = 20, in_channels: int = 5, aux_heads: bool = True, act: str = "hardswish",
                 width: float = 1.0, layers: Sequence[int] = CENET_LAYERS):
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ConfigError(f"num_classes={num_classes}, in_channels={in_channels}: both must be >= 1")
        if not isinstance(act, str) or act.lower() not in ACTIVATIONS:
            raise ConfigError(f"model option act={act!r}: expected one of {sorted(ACTIVATIONS)}")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ConfigError(f"model option width={width!r}: expected a positive multiplier")
        layers = list(layers)
        if len(layers) != 4 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layers):
            raise ConfigError(f"model option layers={layers!r}: expected 4 integers >= 1 (blocks per stage)")
        act = act.lower()
        self.aux_heads, self.act, self.in_channels = bool(aux_heads), act, in_channels
        self.num_heads = 4 if self.aux_heads else 1   # logit maps returned in training mode
        c0, c, ch = (max(1, round(n * width)) for n in (64, 128, 256))
        self.conv1 = ConvBNAct(in_channels, c0, act)
        self.conv2 = ConvBNAct(c0, c, act)
        self.conv3 = ConvBNAct(c, c, act)
        self.layer1 = self._stage(c, c, layers[0], 1, act)
        self.layer2 = self._stage(c, c, layers[1], 2, act)
        self.layer3 = self._stage(c, c, layers[2], 2, act)
        self.layer4 = self._stage(c, c, layers[3], 2, act)
        self.conv_1 = ConvBNAct(5 * c, ch, act)
        self.conv_2 = ConvBNAct(ch, c, act)
        self.semantic_output = nn.Conv2d(c, num_classes, 1)
        if self.aux_heads:
            self.aux_head1 = nn.Conv2d(c, num_classes, 1)
            self.aux_head2 = nn.Conv2d(c, num_classes, 1)
            self.aux_head3 = nn.Conv2d(c, num_classes, 1)

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, stride: int, act: str) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, act, stride),
                             *[BasicBlock(cout, cout, act) for _ in range(blocks - 1)])

    def forward(self, x: torch.Tensor):
        x = self.conv3(self.conv2(self.conv1(x)))
        x1 = self.layer1(x)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        size = x.shape[2:]
        r2, r3, r4 = (F.interpolate(t, size=size, mode="bilinear", align_corners=True) for t in (x2, x3, x4))
        out = self.conv_2(self.conv_1(torch.cat([x, x1, r2, r3, r4], dim=1)))
        logits = self.semantic_output(out)
        if self.aux_heads and self.training:
            return [logits, self.aux_head1(r2), self.aux_head2(r3), self.aux_head3(r4)]
        return logits


@register_model("cenet", model_class=CENet)
def cenet(num_classes: int = 20, in_channels: int = 5, **options) -> CENet:
    """CENet (ResNet-34 pipeline); options: aux_heads, act, width, layers."""
    return CENet(num_classes, in_channels, **options)
