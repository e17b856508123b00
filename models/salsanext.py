"""SalsaNext (Cortinhal et al., ISVC 2020): the range-image encoder-decoder of TiagoCortinhal/SalsaNext
(`train/tasks/semantic/modules/SalsaNext.py`).

Structure (base width b = 32, every activation LeakyReLU(0.01), BN after each activation, PyTorch default init):

- context blocks `downCntx`, `downCntx2`, `downCntx3` (in->b->b->b): 1x1 conv + act (the shortcut), then 3x3 conv
  + act + BN, 3x3 conv dilation 2 + act + BN; output = shortcut + last
- encoder `resBlock1..5` (b->2b->4b->8b->8b->8b): shortcut 1x1 conv + act; three convs on the input (3x3; 3x3
  dilation 2; 2x2 dilation 2, padding 1), each + act + BN; their concatenation -> 1x1 conv + act + BN; + shortcut;
  then Dropout2d(0.2) (not in resBlock1) and, in blocks 1-4, AvgPool2d(3, stride 2, padding 1). Blocks 1-4 return
  (pooled, pre-pool) and the pre-pool output is the skip of the matching decoder block.
- decoder `upBlock1..4` (8b->4b->4b->2b->b): PixelShuffle(2), Dropout2d, concatenation with the skip, Dropout2d, the
  same three-conv pattern (3x3; 3x3 dilation 2; 2x2 dilation 2) + 1x1 fusion, Dropout2d (no dropout in upBlock4)
- `logits`: 1x1 conv b->C with bias.

6,711,572 parameters for 20 classes and 5 input channels.

Differences from the reference, deliberate:
- **logits** instead of softmax probabilities.
- `in_channels` is a parameter (the reference fixes 5); `width` scales b (rounded to an even number >= 2, since
  PixelShuffle(2) divides 2b by 4) and `dropout` sets every Dropout2d's p (published: 0.2).
- the input height and width must be multiples of 16 (four stride-2 poolings); the reference crashes with a size
  mismatch in the decoder, we raise `ConfigError` naming the size.

State-dict keys are the reference's (`downCntx.conv1.weight`, `resBlock3.bn4.running_mean`, `upBlock2.conv4.bias`,
`logits.weight`, ...), so its released checkpoint loads with `models.load_state_dict_strict` (which strips
DataParallel's `module.` prefix). MC-dropout sampling at inference: `lidarseg.engine.uncertainty.mc_dropout_probs`.
"""
from __future__ import annotations

import torch
from torch import nn

from lidarseg.errors import ConfigError

from . import register_model

__all__ = ["SalsaNext", "salsanext", "DEFAULT_DROPOUT"]

DEFAULT_DROPOUT = 0.2
STRIDE = 16


def _cba(cin: int, cout: int, kernel, dilation: int = 1, padding: int = 0) -> tuple[nn.Module, nn.Module]:
    return nn.Conv2d(cin, cout, kernel, dilation=dilation, padding=padding), nn.LeakyReLU()


class ResContextBlock(nn.Module):
    """shortcut = act(conv1x1(x)); out = shortcut + BN(act(conv3x3_d2(BN(act(conv3x3(shortcut))))))."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.act1 = _cba(cin, cout, 1)
        self.conv2, self.act2 = _cba(cout, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv3, self.act3 = _cba(cout, cout, 3, dilation=2, padding=2)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.act1(self.conv1(x))
        a = self.bn1(self.act2(self.conv2(shortcut)))
        return shortcut + self.bn2(self.act3(self.conv3(a)))


class _MultiDilation(nn.Module):
    """The three-conv pattern shared by ResBlock and UpBlock: a1 = BN(act(conv3x3(x))), a2 = BN(act(conv3x3_d2(a1))),
    a3 = BN(act(conv2x2_d2(a2))), out = BN(act(conv1x1(cat[a1, a2, a3]))). Attribute names are the reference's:
    convs 2..5 / bns 1..4 in ResBlock (`offset=1`), convs 1..4 / bns 1..4 in UpBlock (`offset=0`)."""

    def _build(self, cin: int, cout: int, offset: int) -> None:
        self._names = [f"conv{i + offset}" for i in range(1, 5)], [f"act{i + offset}" for i in range(1, 5)]
        specs = [(cin, cout, 3, 1, 1), (cout, cout, 3, 2, 2), (cout, cout, 2, 2, 1), (3 * cout, cout, 1, 1, 0)]
        for i, (a, b, k, d, p) in enumerate(specs):
            conv, act = _cba(a, b, k, dilation=d, padding=p)
            setattr(self, self._names[0][i], conv)
            setattr(self, self._names[1][i], act)
            setattr(self, f"bn{i + 1}", nn.BatchNorm2d(b))

    def _fuse(self, x: torch.Tensor) -> torch.Tensor:
        convs = [getattr(self, n) for n in self._names[0]]
        acts = [getattr(self, n) for n in self._names[1]]
        bns = [getattr(self, f"bn{i}") for i in range(1, 5)]
        a1 = bns[0](acts[0](convs[0](x)))
        a2 = bns[1](acts[1](convs[1](a1)))
        a3 = bns[2](acts[2](convs[2](a2)))
        return bns[3](acts[3](convs[3](torch.cat((a1, a2, a3), dim=1))))


class ResBlock(_MultiDilation):
    """Encoder block: act(conv1x1(x)) + fused(x), Dropout2d (if `drop_out`), AvgPool2d(3, 2, 1) (if `pooling`).
    Returns (pooled, pre-pool) with pooling, else the dropped-out output."""

    def __init__(self, cin: int, cout: int, dropout: float, pooling: bool = True, drop_out: bool = True):
        super().__init__()
        self.pooling, self.drop_out = pooling, drop_out
        self.conv1, self.act1 = _cba(cin, cout, 1)
        self._build(cin, cout, offset=1)
        self.dropout = nn.Dropout2d(p=dropout)
        if pooling:
            self.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor):
        res = self.act1(self.conv1(x)) + self._fuse(x)
        out = self.dropout(res) if self.drop_out else res
        if self.pooling:
            return self.pool(out), res
        return out


class UpBlock(_MultiDilation):
    """Decoder block: PixelShuffle(2)(x) [cin/4 channels], Dropout2d, cat with the skip [2*cout], Dropout2d,
    fused -> cout, Dropout2d (dropouts only if `drop_out`)."""

    def __init__(self, cin: int, cout: int, dropout: float, drop_out: bool = True):
        super().__init__()
        self.drop_out = drop_out
        self.dropout1 = nn.Dropout2d(p=dropout)
        self.dropout2 = nn.Dropout2d(p=dropout)
        self._build(cin // 4 + 2 * cout, cout, offset=0)
        self.dropout3 = nn.Dropout2d(p=dropout)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.shuffle(x)
        if self.drop_out:
            up = self.dropout1(up)
        up = torch.cat((up, skip), dim=1)
        if self.drop_out:
            up = self.dropout2(up)
        out = self._fuse(up)
        return self.dropout3(out) if self.drop_out else out


class SalsaNext(nn.Module):
    """SalsaNext. forward(x [B,C_in,H,W]) -> logits [B,C,H,W]; H and W multiples of 16."""

    input_mode = "range"
    width_stride = STRIDE   # the input width (and height) must be a multiple of this

    def __init__(self, num_classes: int = 20, in_channels: int = 5, width: float = 1.0,
                 dropout: float = DEFAULT_DROPOUT):
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ConfigError(f"num_classes={num_classes}, in_channels={in_channels}: both must be >= 1")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ConfigError(f"model option width={width!r}: expected a positive multiplier")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"model option dropout={dropout!r}: expected 0 <= p < 1")
        b = max(2, 2 * round(32 * width / 2))
        self.in_channels = in_channels
        p = float(dropout)
        self.downCntx = ResContextBlock(in_channels, b)
        self.downCntx2 = ResContextBlock(b, b)
        self.downCntx3 = ResContextBlock(b, b)
        self.resBlock1 = ResBlock(b, 2 * b, p, pooling=True, drop_out=False)
        self.resBlock2 = ResBlock(2 * b, 4 * b, p, pooling=True)
        self.resBlock3 = ResBlock(4 * b, 8 * b, p, pooling=True)
        self.resBlock4 = ResBlock(8 * b, 8 * b, p, pooling=True)
        self.resBlock5 = ResBlock(8 * b, 8 * b, p, pooling=False)
        self.upBlock1 = UpBlock(8 * b, 4 * b, p)
        self.upBlock2 = UpBlock(4 * b, 4 * b, p)
        self.upBlock3 = UpBlock(4 * b, 2 * b, p)
        self.upBlock4 = UpBlock(2 * b, b, p, drop_out=False)
        self.logits = nn.Conv2d(b, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H % STRIDE or W % STRIDE:
            raise ConfigError(f"SalsaNext input size {H}x{W}: height and width must be multiples of {STRIDE} "
                              "(four stride-2 poolings)")
        c = self.downCntx3(self.downCntx2(self.downCntx(x)))
        d0, s0 = self.resBlock1(c)
        d1, s1 = self.resBlock2(d0)
        d2, s2 = self.resBlock3(d1)
        d3, s3 = self.resBlock4(d2)
        d5 = self.resBlock5(d3)
        u = self.upBlock1(d5, s3)
        u = self.upBlock2(u, s2)
        u = self.upBlock3(u, s1)
        u = self.upBlock4(u, s0)
        return self.logits(u)


@register_model("salsanext", model_class=SalsaNext)
def salsanext(num_classes: int = 20, in_channels: int = 5, **options) -> SalsaNext:
    """SalsaNext; options: width, dropout."""
    return SalsaNext(num_classes, in_channels, **options)
