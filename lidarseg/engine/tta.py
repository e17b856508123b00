"""Test-time augmentation of range-image networks: the softmax averaged over horizontal flips and azimuth shifts.

`TTA.parse("flip,shift:4")`: the votes are every combination of {no flip, flip} (with `flip`) and n azimuth shifts
of 0, W/n, 2W/n, ... columns (with `shift:n`); "flip,shift:4" is 8 votes, "flip" 2 (FRNet's flip votes),
"none" (or "") 1, i.e. plain single-pass inference.

Each vote transforms the normalised input image [B,5,H,W] (range, x, y, z, remission) the way the scene would be
transformed, so the network sees the range image of a mirrored or rotated scan:
- flip: columns reversed (yaw -> -yaw, i.e. y -> -y) and the y channel mirrored: y_n -> -y_n - 2 mean_y / std_y;
- shift by s columns: columns rolled by s (yaw + 2 pi s / W, i.e. a rotation of the scene by -2 pi s / W about z)
  and the (x, y) channels rotated by the same angle;
empty pixels stay 0. The vote's softmax is transformed back to the scan's pixels (roll by -s, flip) and the votes
are averaged; the argmax of the mean then goes through the usual back-projection (RangeNet++'s KNN or each point's
pixel). Rolling by whole columns is exact, so no re-projection is needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class TTA:
    flip: bool = False
    shifts: int = 1

    @classmethod
    def parse(cls, spec) -> "TTA":
        if spec is None or isinstance(spec, TTA):
            return spec or cls()
        text = str(spec).strip()
        if text in ("", "none", "off"):
            return cls()
        flip, shifts = False, 1
        for part in text.split(","):
            part = part.strip()
            if part == "flip" and not flip:
                flip = True
            elif part.startswith("shift:") and shifts == 1:
                value = part[len("shift:"):]
                if not value.isdigit() or not 1 <= int(value) <= 64:
                    raise ConfigError(f"--tta: shift:N needs an integer N in 1..64, got {part!r}")
                shifts = int(value)
            else:
                raise ConfigError(f"--tta: expected a comma-separated list of 'flip' and 'shift:N' (each at most "
                                  f"once) or 'none', got {spec!r}")
        return cls(flip, shifts)

    @property
    def votes(self) -> int:
        return self.shifts * (2 if self.flip else 1)

    @property
    def active(self) -> bool:
        return self.votes > 1

    def describe(self) -> str:
        if not self.active:
            return "off (one pass)"
        parts = (["horizontal flip"] if self.flip else []) + ([f"{self.shifts} azimuth shifts"] if self.shifts > 1
                                                              else [])
        return f"{self.votes} votes ({' x '.join(parts)})"

    def to_dict(self) -> dict:
        return {"votes": self.votes, "flip": self.flip, "shifts": self.shifts}

    def transforms(self, width: int) -> list[tuple[bool, int]]:
        """(flip, shift in columns) of every vote; the first is the identity."""
        shifts = [round(k * width / self.shifts) for k in range(self.shifts)]
        return [(f, s) for f in ([False, True] if self.flip else [False]) for s in shifts]


def transform_input(x: torch.Tensor, mask: torch.Tensor, mean, std, flip: bool, shift: int) -> torch.Tensor:
    """The normalised image x [B,5,H,W] (pixels holding a point: mask bool [B,H,W]) of the scan mirrored (y -> -y)
    and/or rotated so that its columns move by `shift`; `mean`, `std`: the 5 normalisation values."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    mask = mask.to(x.device)[:, None]
    raw_x = x[:, 1] * std[1] + mean[1]
    raw_y = x[:, 2] * std[2] + mean[2]
    if flip:
        raw_y = -raw_y
    if shift:
        a = -2.0 * math.pi * shift / x.shape[-1]
        c, s = math.cos(a), math.sin(a)
        raw_x, raw_y = raw_x * c - raw_y * s, raw_x * s + raw_y * c
    out = x.clone()
    out[:, 1] = (raw_x - mean[1]) / std[1]
    out[:, 2] = (raw_y - mean[2]) / std[2]
    out = torch.where(mask, out, torch.zeros_like(out))
    if flip:
        out = torch.flip(out, dims=[-1])
    if shift:
        out = torch.roll(out, shifts=shift, dims=-1)
    return out


def _undo(p: torch.Tensor, flip: bool, shift: int) -> torch.Tensor:
    if shift:
        p = torch.roll(p, shifts=-shift, dims=-1)
    if flip:
        p = torch.flip(p, dims=[-1])
    return p


@torch.no_grad()
def tta_probs(model, x: torch.Tensor, mask: torch.Tensor, mean, std, tta: TTA) -> torch.Tensor:
    """Mean softmax [B,C,H,W] of the main head over the votes of `tta` (the plain softmax for one vote);
    x [B,5,H,W] normalised input, mask bool [B,H,W]."""
    from ..models import main_logits
    total = None
    for flip, shift in tta.transforms(x.shape[-1]):
        p = torch.softmax(main_logits(model(transform_input(x, mask, mean, std, flip, shift) if (flip or shift) else x))
                          .float(), dim=1)
        p = _undo(p, flip, shift)
        total = p if total is None else total + p
    return total / tta.votes
