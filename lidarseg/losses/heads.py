"""Losses of networks with several output heads (CENet's auxiliary heads).

`MultiHeadLoss(loss, head_weights)(outputs, target)`: `outputs` is one logit map or a list of them (main head
first, every map [B,C,H,W] at the target's resolution); the result is sum_h head_weights[h] * loss(outputs[h],
target), with head_weights None meaning 1 for every head (CENet's recipe, lamda = 1). `last_terms` holds the main
head's terms under their own names (as a single-head loss) and the others' as `aux<h>_<term>`, unweighted, plus
`aux<h>` (the head's whole loss).
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn

from ..errors import ConfigError

__all__ = ["MultiHeadLoss", "check_head_weights"]


def check_head_weights(head_weights, num_heads: int | None = None, where: str = "train.head_weights"):
    """None, or a list of finite numbers (one per head when num_heads is given); raises ConfigError otherwise."""
    if head_weights is None:
        return None
    if not isinstance(head_weights, (list, tuple)) or not head_weights or not all(
            isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(w) for w in head_weights):
        raise ConfigError(f"{where}: expected null or a list of finite numbers (main head first), got "
                         f"{head_weights!r}")
    if num_heads is not None and len(head_weights) != num_heads:
        raise ConfigError(f"{where} has {len(head_weights)} entries but the model has {num_heads} output head(s) "
                         "(main head first)")
    return [float(w) for w in head_weights]


class MultiHeadLoss(nn.Module):
    """Weighted sum of one loss over the heads of a multi-head output (a single tensor passes straight through)."""

    def __init__(self, loss: nn.Module, head_weights=None, num_heads: int | None = None):
        """num_heads (the model's, when it declares one) checks the length of head_weights at start-up."""
        super().__init__()
        self.loss = loss
        self.head_weights = check_head_weights(head_weights, num_heads)
        self.last_terms: dict = {}

    def _terms(self, value: torch.Tensor) -> dict:
        terms = getattr(self.loss, "last_terms", None) or {}
        return dict(terms) if terms else {getattr(self.loss, "name", "loss"): value.detach()}

    def forward(self, outputs, target):
        if isinstance(outputs, torch.Tensor):
            if self.head_weights is None:
                value = self.loss(outputs, target)
                self.last_terms = self._terms(value)
                return value
            outputs = [outputs]
        outputs = list(outputs)
        weights = check_head_weights(self.head_weights, len(outputs)) or [1.0] * len(outputs)
        total, terms = None, {}
        for h, (w, out) in enumerate(zip(weights, outputs)):
            value = self.loss(out, target)
            head_terms = self._terms(value)
            if h == 0:
                terms.update(head_terms)
            else:
                terms[f"aux{h}"] = value.detach()
                terms.update({f"aux{h}_{k}": v for k, v in head_terms.items()})
            total = w * value if total is None else total + w * value
        self.last_terms = terms
        return total
