"""CENet's boundary loss (huixiancheng/CENet `modules/losses/boundary_loss.py`), after Bokhovkin et al. 2019,
"Boundary Loss for Remote Sensing Imagery Semantic Segmentation".

On softmax probabilities p [B,C,H,W] and the one-hot target g [B,C,H,W] (every class, label 0 included):
    boundary(m) = maxpool_k(1 - m) - (1 - m)      (k = theta0, stride 1, padding (k-1)/2: 1 on a class's border)
    P_bc = sum(pb * gb) / (sum(pb) + 1e-7),  R_bc = sum(pb * gb) / (sum(gb) + 1e-7)   (sums over pixels)
    loss = mean_{b,c} (1 - 2 P R / (P + R + 1e-7))
CENet's network returns softmax probabilities and its loss takes them as they are; ours takes logits and applies
the softmax first, so `BoundaryLoss()(logits, y)` equals the reference's `BoundaryLoss()(softmax(logits), y)`.
The reference's constructor also takes `theta=5`, which its forward never uses (the extended-boundary step of
Bokhovkin et al. is not in CENet's code), so it is not an option here.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .subclassified import _as_image, check_target_range

__all__ = ["BoundaryLoss", "boundary_map"]


def boundary_map(m: torch.Tensor, theta0: int) -> torch.Tensor:
    """maxpool(1 - m) - (1 - m) over theta0 x theta0 windows (stride 1, max-pool padding): [B,C,H,W] -> same."""
    inv = 1.0 - m
    return F.max_pool2d(inv, kernel_size=theta0, stride=1, padding=(theta0 - 1) // 2) - inv


class BoundaryLoss(nn.Module):
    """forward(logits [B,C,H,W] or [B,C,N], target [B,H,W] or [B,N]) -> mean over images and classes of 1 - BF1.
    theta0: odd window size of the boundary max-pool (published 3). No class is ignored, as in CENet."""

    name = "boundary"

    def __init__(self, theta0: int = 3):
        super().__init__()
        if isinstance(theta0, bool) or not isinstance(theta0, int) or theta0 < 1 or theta0 % 2 == 0:
            raise ValueError(f"theta0 must be an odd integer >= 1, got {theta0!r}")
        self.theta0 = theta0
        self.last_terms: dict = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y, _ = _as_image(logits, target)
        n, c = x.shape[:2]
        check_target_range(y, c, None)
        pred = torch.softmax(x.float(), dim=1)
        gt = F.one_hot(y, c).permute(0, 3, 1, 2).to(pred.dtype)
        pb = boundary_map(pred, self.theta0).reshape(n, c, -1)
        gb = boundary_map(gt, self.theta0).reshape(n, c, -1)
        inter = (pb * gb).sum(2)
        precision = inter / (pb.sum(2) + 1e-7)
        recall = inter / (gb.sum(2) + 1e-7)
        bf1 = 2 * precision * recall / (precision + recall + 1e-7)
        loss = (1.0 - bf1).mean()
        self.last_terms = {self.name: loss.detach()}
        return loss

    def extra_repr(self) -> str:
        return f"theta0={self.theta0}"
