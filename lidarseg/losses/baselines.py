"""Baseline losses with the SubclassifiedLoss interface: forward(logits, target) -> scalar, `last_terms` after each
forward, logits [B,C,H,W] + target [B,H,W] or point logits [B,C,N] + target [B,N].

- CrossEntropyLoss: plain or class-weighted CE (RangeNet++ trains with w_c = 1/(content_c + 0.001), w_0 = 0). With a
  class weight the mean is sum_i w[y_i] CE_i / sum_i w[y_i] (torch / RangeNet++ semantics).
- LovaszSoftmaxLoss: the Lovasz extension of the Jaccard loss on softmax probabilities (Berman et al. 2018), over
  the classes present in the batch (the whole batch flattened, as SalsaNext trains it), ignored pixels removed.
- FocalLoss: -(1 - p_t)^gamma log p_t (Lin et al. 2017), optional class weights (alpha), mean over valid pixels.
- OhemCrossEntropy: KPRNet's OHEM CE (HRNet variant): keep the valid points whose true-class probability is below
  max(thresh, p_(min_kept)), the (min_kept+1)-th smallest true-class probability; the loss is their mean CE.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .subclassified import _as_image, check_ignore_index, check_target_range, class_weight_tensor

__all__ = ["CrossEntropyLoss", "LovaszSoftmaxLoss", "FocalLoss", "OhemCrossEntropy", "lovasz_grad"]


class _PixelLoss(nn.Module):
    """Common input checks, class weights and ignore_index handling."""

    name = "loss"

    def __init__(self, class_weight=None, ignore_index=0):
        super().__init__()
        check_ignore_index(ignore_index)
        self.ignore_index = ignore_index
        self.register_buffer("class_weight", class_weight_tensor(class_weight))
        self.last_terms: dict = {}

    def _prepare(self, logits, target):
        x, y, _ = _as_image(logits, target)
        C = x.shape[1]
        if self.class_weight is not None and self.class_weight.numel() != C:
            raise ValueError(f"class_weight has {self.class_weight.numel()} entries but logits have C={C} classes")
        check_target_range(y, C, self.ignore_index)
        valid = torch.ones_like(y, dtype=torch.bool) if self.ignore_index is None else y != self.ignore_index
        return x, y, valid

    @property
    def _ii(self):
        return -100 if self.ignore_index is None else self.ignore_index

    def _cw(self, x):
        return None if self.class_weight is None else self.class_weight.to(device=x.device)

    def _done(self, loss):
        self.last_terms = {self.name: loss.detach()}
        return loss


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, 0 where den == 0 (then num is 0 too): an empty batch gives loss 0 and a zero gradient."""
    return num / den.clamp(min=torch.finfo(num.dtype).tiny)


class CrossEntropyLoss(_PixelLoss):
    """Softmax cross-entropy, optionally class-weighted: sum_i w[y_i] CE_i / sum_i w[y_i] over valid pixels."""

    name = "ce"

    def forward(self, logits, target):
        x, y, valid = self._prepare(logits, target)
        cw = self._cw(x)
        ce = F.cross_entropy(x, y, weight=cw, ignore_index=self._ii, reduction="sum")
        den = valid.sum().to(ce.dtype) if cw is None else cw[y[valid]].sum().to(ce.dtype)
        return self._done(_safe_div(ce, den))


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. errors sorted in decreasing order.
    gt_sorted: [P, K] float ground-truth indicators in that order (one column per class)."""
    n_fg = gt_sorted.sum(0, keepdim=True)
    inter = n_fg - gt_sorted.cumsum(0)
    union = n_fg + (1.0 - gt_sorted).cumsum(0)
    jac = 1.0 - inter / union
    return torch.cat([jac[:1], jac[1:] - jac[:-1]], 0)


class LovaszSoftmaxLoss(_PixelLoss):
    """Lovasz-softmax (Berman et al.), batch flattened, ignored pixels removed.
    classes: "present" (classes with at least one valid pixel in the batch; default, as SalsaNext) or "all"."""

    name = "lovasz"

    def __init__(self, classes: str = "present", ignore_index=0):
        super().__init__(None, ignore_index)
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
        self.classes = classes

    def forward(self, logits, target):
        x, y, valid = self._prepare(logits, target)
        C = x.shape[1]
        probs = torch.softmax(x.float(), dim=1).movedim(1, -1)[valid]          # [P, C]
        labels = y[valid]
        if labels.numel() == 0:
            return self._done(probs.sum() * 0.0 + x.sum() * 0.0)
        fg = F.one_hot(labels, C).float()                                      # [P, C]
        if self.classes == "present":
            cls = (fg.sum(0) > 0).nonzero().squeeze(1)
        else:
            cls = torch.arange(C, device=x.device)
        fg, probs = fg[:, cls], probs[:, cls]
        errors = (fg - probs).abs()
        errors_sorted, order = torch.sort(errors, dim=0, descending=True)
        grad = lovasz_grad(torch.gather(fg, 0, order))
        per_class = (errors_sorted * grad).sum(0)
        return self._done(per_class.mean())


class FocalLoss(_PixelLoss):
    """Focal loss -alpha_y (1 - p_t)^gamma log p_t, mean over valid pixels (alpha = class_weight, default 1).
    gamma = 0 without class weights is plain CE."""

    name = "focal"

    def __init__(self, gamma: float = 2.0, class_weight=None, ignore_index=0):
        super().__init__(class_weight, ignore_index)
        if not float(gamma) >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits, target):
        x, y, valid = self._prepare(logits, target)
        logp = torch.log_softmax(x.float(), dim=1)
        logpt = torch.gather(logp, 1, y.clamp(min=0, max=x.shape[1] - 1)[:, None])[:, 0]
        focal = -((1.0 - logpt.exp()).clamp(min=0) ** self.gamma) * logpt
        cw = self._cw(x)
        if cw is not None:
            focal = focal * cw[y.clamp(min=0, max=x.shape[1] - 1)]
        focal = torch.where(valid, focal, torch.zeros_like(focal))
        return self._done(_safe_div(focal.sum(), valid.sum().to(focal.dtype)))


class OhemCrossEntropy(_PixelLoss):
    """Online hard example mining CE as in KPRNet (`utils/ohem.py`): with p_i the softmax probability of the true
    class of valid point i, keep the points with p_i < max(thresh, p_sorted[min(min_kept, n_valid - 1)]) and
    average their CE (class_weight, if given, multiplies the per-point CE as torch's weight= with reduction none).
    Differences from the original: no crash on a batch without valid points (loss 0), an empty kept set gives 0
    instead of NaN, and valid points with a non-finite logit are always kept, so NaN/inf input gives a non-finite
    loss (the original drops them, as NaN < threshold is false, and can return a finite loss)."""

    name = "ohem"

    def __init__(self, thresh: float = 0.9, min_kept: int = 10000, class_weight=None, ignore_index=0):
        super().__init__(class_weight, ignore_index)
        if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 0:
            raise ValueError(f"min_kept must be an integer >= 0, got {min_kept!r}")
        self.thresh, self.min_kept = float(thresh), max(1, min_kept)

    def forward(self, logits, target):
        x, y, valid = self._prepare(logits, target)
        ce = F.cross_entropy(x, y, weight=self._cw(x), ignore_index=self._ii, reduction="none").float()
        with torch.no_grad():
            prob = torch.softmax(x.detach().float(), dim=1)
            pt = torch.gather(prob, 1, y.clamp(min=0, max=x.shape[1] - 1)[:, None])[:, 0]
            pv = pt[valid]
            n = pv.numel()
            if n == 0:
                keep = valid
            else:
                k = min(self.min_kept, n - 1)
                min_value = torch.kthvalue(pv, k + 1).values
                threshold = torch.clamp(min_value, min=self.thresh)
                keep = valid & (pt < threshold)
            # a non-finite logit on a valid point makes its probability NaN, which no threshold keeps: keep it,
            # so the loss becomes non-finite instead of silently 0 (the trainer's check then sees it)
            keep |= valid & ~torch.isfinite(x.detach()).all(dim=1)
        kept = keep.sum().to(ce.dtype)
        return self._done(_safe_div(torch.where(keep, ce, torch.zeros_like(ce)).sum(), kept))
