"""MC-dropout uncertainty at inference (Gal & Ghahramani 2016; SalsaNext's `infer.py` reports it): N stochastic
forward passes with only the dropout modules in training mode (BatchNorm keeps its running statistics).

    mean, variance = mc_dropout_probs(model, x, samples=30)    # [B,C,H,W] mean softmax, [B,H,W] variance

`variance` is the variance over the N passes of the softmax probabilities, averaged over the classes, per pixel
(unbiased, as SalsaNext's `proj_output_r.var(dim=0).mean(dim=1)`); the prediction is `mean.argmax(1)`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["DROPOUT_TYPES", "has_dropout", "check_mc_samples", "mc_dropout_probs"]

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, DROPOUT_TYPES) and m.p > 0 for m in model.modules())


def check_mc_samples(model: nn.Module, samples) -> None:
    """ConfigError unless `samples` is an integer >= 2 and the model has a dropout layer with p > 0."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ConfigError(f"--mc-samples must be an integer >= 2, got {samples!r}")
    if not has_dropout(model):
        raise ConfigError(f"MC-dropout needs a network with dropout; {type(model).__name__} has no dropout layer "
                          "with p > 0")


@torch.no_grad()
def mc_dropout_probs(model: nn.Module, x: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean softmax [B,C,H,W], variance [B,H,W]) over `samples` >= 2 passes of `x` with dropout active. The model's
    modes are restored afterwards. ConfigError if the model has no dropout with p > 0 (every pass would agree)."""
    check_mc_samples(model, samples)
    from ..models import main_logits
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, DROPOUT_TYPES):
                m.train()
        total = total_sq = None
        for _ in range(samples):
            p = torch.softmax(main_logits(model(x)).float(), dim=1)
            total = p if total is None else total + p
            total_sq = p * p if total_sq is None else total_sq + p * p
    finally:
        for m, mode in modes.items():
            m.training = mode
    mean = total / samples
    var = ((total_sq - samples * mean * mean) / (samples - 1)).clamp(min=0)
    return mean, var.mean(1)
