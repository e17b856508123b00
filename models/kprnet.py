"""KPRNet (Kochanov et al., 2020): ResNeXt + DeepLab head on the unfolded range image, features sampled at every
point, one KPConv layer over the 7 nearest 3D neighbours, BN, ReLU and a 1x1 classifier (project spec kprnet.md
section 2).

- backbone: ResNeXt-101 32x16d (Bottleneck, layers [3,4,23,3], 32 groups, 16 channels per group) with a 7x7
  stride-4 stem from 2 channels, no max-pool, no avgpool/fc, layer4 dilated (stride 1, dilation 2; its first block
  dilation 1). Returns (layer1 [s4, 256ch], layer2 [s8, 512ch], layer4 [s16, 2048ch]).
- `DeepLabHead`: ASPP (1x1, 3x3 rates 12/24/36, image pooling; 256 each) -> 1x1 projection to 512, BN, ReLU (no
  dropout); level 2: lateral 1x1 512->128 on layer2, upsample, concat, 3x3 640->512; level 1: lateral 1x1 256->64
  on layer1, upsample, concat, 3x3 576->256, then Dropout(0.2). Output 256 channels at stride 4.
- `F.grid_sample(features, (px, py))` (bilinear, zeros padding, align_corners=False): one 256-vector per point.
- `KPClassifier`: KPConv (15 kernel points, radius 0.6 m, extent 1.2 m, linear influence, sum), BN, ReLU.
- `final`: 1x1 conv 256 -> num_classes with bias.

Total: 213,186,496 parameters for 19 classes and 2 input channels (213,186,451 trainable: the 45 kernel point
coordinates are a frozen parameter, as in the reference). State-dict keys follow the reference (`backbone.*`,
`classifier.*`, `kpclassifier.kpconv.weights`, `kpclassifier.kpconv.kernel_points`, `kpclassifier.bn.*`, `final.*`).

Differences from the reference:
- the output is [B,C,N] logits (the reference keeps a dummy axis: [B,C,1,N]).
- KPConv runs batched (gather over each sample's own neighbour indices) instead of a Python loop over samples.
- `point_mask` (optional, [B,N] bool): when given, padded points are left out of the point BatchNorm's batch
  statistics (the reference includes its zero-padded points in them) and their logits are set to 0. Without it the
  behaviour is the reference's.
- smaller variants: `backbone="resnext50_32x4d"` or any `layers=[...]`, `groups`, `width_per_group`, plus `width`
  (scales the stem/stage base widths) for CPU tests and demos. The head keeps its fixed channel counts unless
  `head_channels` is scaled too (`head_width`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lidarseg.errors import ConfigError

from . import register_model
from .kpconv import KPConv

__all__ = ["Bottleneck", "ResNeXt", "ASPP", "DeepLabHead", "KPClassifier", "KPRNet", "kprnet", "BACKBONES"]

BACKBONES = {
    "resnext101_32x16d": dict(layers=(3, 4, 23, 3), groups=32, width_per_group=16),
    "resnext101_32x8d": dict(layers=(3, 4, 23, 3), groups=32, width_per_group=8),
    "resnext50_32x4d": dict(layers=(3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext26_32x4d": dict(layers=(2, 2, 2, 2), groups=32, width_per_group=4),
}


class Bottleneck(nn.Module):
    """torchvision-style ResNeXt bottleneck: 1x1, grouped 3x3 (stride, dilation), 1x1 (x4), + shortcut, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNeXt(nn.Module):
    """KPRNet's ResNeXt: stem conv 7x7 stride 4 (in_channels -> base), BN, ReLU, no max-pool; layer4 dilated.

    forward(x [B,in,H,W]) -> (l1 [B,4p,H/4,W/4], l2 [B,8p,H/8,W/8], l4 [B,32p,H/16,W/16]) with p = base planes (64);
    sizes are ceil-divisions (4k+1 inputs line up exactly).
    """

    def __init__(self, in_channels: int = 2, layers: Sequence[int] = (3, 4, 23, 3), groups: int = 32,
                 width_per_group: int = 16, base_planes: int = 64,
                 replace_stride_with_dilation: Sequence[bool] = (False, False, True)):
        super().__init__()
        self.groups, self.base_width = groups, width_per_group
        self.inplanes, self.dilation = base_planes, 1
        self.conv1 = nn.Conv2d(in_channels, base_planes, 7, stride=4, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_planes)
        self.relu = nn.ReLU(inplace=True)
        p = base_planes
        self.layer1 = self._make_layer(p, layers[0])
        self.layer2 = self._make_layer(2 * p, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(4 * p, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(8 * p, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        self.out_channels = (p * 4, p * 8, p * 32)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                             previous_dilation)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                              dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor):
        x = self.relu(self.bn1(self.conv1(x)))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l4 = self.layer4(self.layer3(l2))
        return l1, l2, l4


def _cbr(cin: int, cout: int, k: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation if k == 3 else 0
    return [nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    """Global average pool, 1x1 conv, BN, ReLU, bilinear upsample back (align_corners=False)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_cbr(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """ASPP: [1x1, 3x3 r1, 3x3 r2, 3x3 r3, pooling] x `branch` channels -> concat -> 1x1 to `out`, BN, ReLU."""

    def __init__(self, cin: int, rates: Sequence[int] = (12, 24, 36), branch: int = 256, out: int = 512):
        super().__init__()
        mods = [nn.Sequential(*_cbr(cin, branch))]
        mods += [nn.Sequential(*_cbr(cin, branch, 3, r)) for r in rates]
        mods.append(ASPPPooling(cin, branch))
        self.convs = nn.ModuleList(mods)
        self.project = nn.Sequential(*_cbr(branch * len(mods), out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHead(nn.Module):
    """KPRNet's DeepLab head. forward((l1, l2, l4)) -> [B,c[3],H1,W1] at layer1's (stride-4) resolution.

    Channels c = (aspp branch 256, aspp out 512, lat2 128, lat1 64, out 256) scaled by `head_width`.
    """

    def __init__(self, in_channels: Sequence[int] = (256, 512, 2048), head_width: float = 1.0,
                 dropout: float = 0.2, rates: Sequence[int] = (12, 24, 36)):
        super().__init__()
        branch, mid, lat2, lat1, out = (max(1, int(round(c * head_width))) for c in (256, 512, 128, 64, 256))
        self.out_channels = out
        self.aspp = ASPP(in_channels[2], rates, branch, mid)
        self.lat_lv2 = nn.Sequential(*_cbr(in_channels[1], lat2))
        self.mix_lv2 = nn.Sequential(*_cbr(lat2 + mid, mid, 3))
        self.lat_lv1 = nn.Sequential(*_cbr(in_channels[0], lat1))
        self.mix_lv1 = nn.Sequential(*_cbr(lat1 + mid, out, 3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, feats) -> torch.Tensor:
        l1, l2, l4 = feats
        x = self.aspp(l4)
        lat = self.lat_lv2(l2)
        x = F.interpolate(x, size=lat.shape[-2:], mode="bilinear", align_corners=False)
        x = self.mix_lv2(torch.cat([lat, x], dim=1))
        lat = self.lat_lv1(l1)
        x = F.interpolate(x, size=lat.shape[-2:], mode="bilinear", align_corners=False)
        x = self.mix_lv1(torch.cat([lat, x], dim=1))
        return self.dropout(x)


def masked_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """BatchNorm over points. x [B,N,C]; statistics (training) over the points where mask [B,N] is True (all when
    mask is None). Masked-out entries are returned as 0."""
    B, N, C = x.shape
    if mask is None:
        return bn(x.reshape(B * N, C)).reshape(B, N, C)
    flat = x.reshape(B * N, C)
    sel = mask.reshape(B * N)
    out = torch.zeros_like(flat)
    out[sel] = bn(flat[sel])
    return out.reshape(B, N, C)


class KPClassifier(nn.Module):
    """grid_sample of 2D features at the points, KPConv, point BN, ReLU.

    forward(feat [B,C,h,w], px [B,N], py [B,N] in [-1,1], xyz [B,N,3], knn [B,N,M], point_mask [B,N] or None)
      -> [B,N,out]
    """

    def __init__(self, in_channels: int = 256, out_channels: int = 256, num_kernel_points: int = 15,
                 radius: float = 0.6, extent: float = 1.2, kernel_seed: int = 0):
        super().__init__()
        self.kpconv = KPConv(in_channels, out_channels, num_kernel_points, radius, extent, kernel_seed)
        # the reference uses BatchNorm2d on [B,256,1,N]; BatchNorm1d on [B*N,256] has the same state dict
        self.bn = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, feat, px, py, xyz, knn, point_mask=None):
        grid = torch.stack([px, py], dim=-1)[:, None].to(feat.dtype)                 # [B,1,N,2] (x, y)
        sampled = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled[:, :, 0].transpose(1, 2)                                   # [B,N,C]
        out = self.kpconv(xyz.to(sampled.dtype), knn, sampled)
        return self.relu(masked_batch_norm(self.bn, out, point_mask))


class KPRNet(nn.Module):
    """KPRNet. forward(image [B,in,H,W], px [B,N], py [B,N] (normalised to [-1,1], grid_sample x/y), xyz [B,N,3]
    (metres), knn [B,N,7] (indices into the sample's N points), point_mask [B,N] bool or None,
    return_features=False) -> logits [B,num_classes,N] (or `(logits, point_features [B,256,N])`).

    `input_mode = "kprnet"`: it consumes the batches of `lidarseg.data.kprnet`.
    """

    input_mode = "kprnet"

    def __init__(self, num_classes: int = 19, in_channels: int = 2, backbone: str = "resnext101_32x16d", *,
                 layers: Sequence[int] | None = None, groups: int | None = None,
                 width_per_group: int | None = None, width: float = 1.0, head_width: float = 1.0,
                 dropout: float = 0.2, num_kernel_points: int = 15, kp_radius: float = 0.6,
                 kp_extent: float = 1.2, kernel_seed: int = 0):
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"model option backbone={backbone!r}: expected one of {sorted(BACKBONES)}")
        spec = dict(BACKBONES[backbone])
        if layers is not None:
            layers = [int(n) for n in layers]
            if len(layers) != 4 or min(layers) < 1:
                raise ConfigError(f"model option layers={layers!r}: expected 4 positive integers")
            spec["layers"] = layers
        if groups is not None:
            spec["groups"] = int(groups)
        if width_per_group is not None:
            spec["width_per_group"] = int(width_per_group)
        if not (width > 0 and head_width > 0):
            raise ConfigError(f"model options width={width!r}, head_width={head_width!r}: expected positive numbers")
        base = max(1, int(round(64 * width)))
        self.num_classes, self.in_channels = num_classes, in_channels
        self.backbone = ResNeXt(in_channels, spec["layers"], spec["groups"], spec["width_per_group"], base)
        self.classifier = DeepLabHead(self.backbone.out_channels, head_width, dropout)
        c = self.classifier.out_channels
        self.kpclassifier = KPClassifier(c, c, num_kernel_points, kp_radius, kp_extent, kernel_seed)
        self.final = nn.Conv2d(c, num_classes, 1)

    def forward(self, image, px, py, xyz, knn, point_mask=None, return_features: bool = False):
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"KPRNet expects image [B,{self.in_channels},H,W], got {list(image.shape)}")
        B, N = px.shape
        if py.shape != (B, N) or xyz.shape[:2] != (B, N) or knn.shape[:2] != (B, N):
            raise ValueError(f"KPRNet: inconsistent point shapes px {list(px.shape)}, py {list(py.shape)}, "
                             f"xyz {list(xyz.shape)}, knn {list(knn.shape)}")
        feat = self.classifier(self.backbone(image))
        pts = self.kpclassifier(feat, px, py, xyz, knn, point_mask)                  # [B,N,C]
        pts = pts.transpose(1, 2)                                                     # [B,C,N]
        logits = self.final(pts[:, :, None, :])[:, :, 0]                              # [B,classes,N]
        if point_mask is not None:
            logits = logits * point_mask[:, None, :].to(logits.dtype)
        return (logits, pts) if return_features else logits


@register_model("kprnet", model_class=KPRNet)
def kprnet(num_classes: int = 19, in_channels: int = 2, **options) -> KPRNet:
    """KPRNet with ResNeXt-101 32x16d (213,186,496 parameters for 19 classes, 2 input channels).

    Small variant for CPUs: `kprnet(backbone="resnext26_32x4d", width=0.25, head_width=0.25)`.
    """
    return KPRNet(num_classes, in_channels, **options)
