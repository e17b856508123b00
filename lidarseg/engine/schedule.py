"""Learning-rate schedules stepped once per optimizer step: linear warm-up, then exponential or cosine decay.

With base lr L, U warm-up steps, S steps per epoch and T steps in total, the lr used at step t (0-based) is
  warm-up   t < U : L * (w0 + (1 - w0) * (t + 1) / U)        (w0 = warmup_start; RangeNet++: 0)
  exponential     : L * decay ** ((t - U) / S)               (`decay` per epoch, as RangeNet++'s lr_decay)
  cosine          : m + (L - m) * (1 + cos(pi * (t - U) / (T - U))) / 2      (m = min_lr, KPRNet: 1e-5)
  constant        : L
This matches RangeNet++ under torch >= 2 (lr*(t+1)/U, then lr at t = U) and KPRNet's warm-up + cosine.

`cosine_restarts` is CENet's CosineAnnealingWarmUpRestarts (its `consine` schedule), see `CosineRestarts`.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError


class WarmupDecay:
    """Multiplicative factor of the base lr at step t; a picklable callable for LambdaLR."""

    def __init__(self, name: str, base_lr: float, warmup_steps: int, steps_per_epoch: int, total_steps: int,
                 decay: float = 0.99, min_lr: float = 0.0, warmup_start: float = 0.0):
        if name not in ("exponential", "cosine", "constant"):
            raise ConfigError(f"schedule.name {name!r} is not one of ['exponential', 'cosine', 'constant']")
        if base_lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {base_lr}")
        self.name, self.base_lr = name, float(base_lr)
        self.warmup = max(0, int(warmup_steps))
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.total = max(self.warmup + 1, int(total_steps))
        self.decay, self.min_lr, self.warmup_start = float(decay), float(min_lr), float(warmup_start)

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.warmup_start + (1.0 - self.warmup_start) * (t + 1) / self.warmup
        k = t - self.warmup
        if self.name == "exponential":
            return self.decay ** (k / self.steps_per_epoch)
        if self.name == "cosine":
            frac = min(1.0, k / max(1, self.total - self.warmup))
            lo = self.min_lr / self.base_lr
            return lo + (1.0 - lo) * (1.0 + math.cos(math.pi * frac)) / 2.0
        return 1.0


class CosineRestarts:
    """CENet's `CosineAnnealingWarmUpRestarts` as a factor of the base lr L (= its max_lr), stepped per optimizer
    step. Cycle i has T_i steps (T_0 = `cycle_steps`, then T_(i+1) = (T_i - U) * mult + U) and peak
    L * gamma**i; within a cycle, at step c (0-based):
      c < U : m + (peak - m) * c / U                                   (warm-up from min_lr m, every cycle)
      else  : m + (peak - m) * (1 + cos(pi * (c - U) / (T_i - U))) / 2
    CENet: SGD lr = min_lr, eta_max = max_lr, T_0 = first_cycle * steps/epoch, T_mult = cycle, T_up = wup_epochs *
    steps/epoch, gamma; `scheduler.step()` after every batch."""

    def __init__(self, base_lr: float, cycle_steps: int, warmup_steps: int, mult: int = 1, gamma: float = 1.0,
                 min_lr: float = 0.0):
        if base_lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {base_lr}")
        if int(cycle_steps) <= int(warmup_steps) or int(cycle_steps) < 1:
            raise ConfigError(f"schedule: the first cycle ({cycle_steps} steps) must be longer than the warm-up "
                              f"({warmup_steps} steps)")
        if isinstance(mult, bool) or int(mult) != mult or mult < 1:
            raise ConfigError(f"schedule.cycle_mult must be an integer >= 1, got {mult!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ConfigError(f"schedule.gamma must be a number > 0, got {gamma!r}")
        self.base_lr, self.t0, self.up = float(base_lr), int(cycle_steps), int(warmup_steps)
        self.mult, self.gamma, self.min_lr = int(mult), float(gamma), float(min_lr)

    def __call__(self, t: int) -> float:
        t_i, c, cycle = self.t0, int(t), 0
        while c >= t_i:
            c, t_i, cycle = c - t_i, (t_i - self.up) * self.mult + self.up, cycle + 1
        peak, m = self.base_lr * self.gamma ** cycle, self.min_lr
        if c < self.up:
            lr = m + (peak - m) * c / self.up
        else:
            lr = m + (peak - m) * (1.0 + math.cos(math.pi * (c - self.up) / (t_i - self.up))) / 2.0
        return lr / self.base_lr


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict, base_lr: float, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """`cfg` is the config's `schedule` section; steps are optimizer steps (after gradient accumulation)."""
    if cfg.get("name") == "cosine_restarts":
        warmup = cfg.get("warmup_steps")
        if warmup is None:
            warmup = int(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch)
        cycle = cfg.get("cycle_epochs")
        if cycle is not None and (isinstance(cycle, bool) or not isinstance(cycle, (int, float)) or not cycle > 0):
            raise ConfigError(f"schedule.cycle_epochs must be a positive number of epochs or null, got {cycle!r}")
        cycle_steps = int(float(cycle) * steps_per_epoch) if cycle else steps_per_epoch * epochs
        fn = CosineRestarts(base_lr, cycle_steps, warmup, mult=cfg.get("cycle_mult", 1),
                            gamma=cfg.get("gamma", 1.0), min_lr=cfg.get("min_lr", 0.0))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    warmup = cfg.get("warmup_steps")
    if warmup is None:
        warmup = int(round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch))
        if cfg.get("warmup_epochs", 0) > 0:
            warmup = max(1, warmup)
    fn = WarmupDecay(cfg.get("name", "constant"), base_lr, warmup, steps_per_epoch, steps_per_epoch * epochs,
                     decay=cfg.get("decay", 0.99), min_lr=cfg.get("min_lr", 0.0),
                     warmup_start=cfg.get("warmup_start", 0.0))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    """`cfg` is the config's `optim` section: name sgd|adam|adamw, lr, weight_decay, momentum, nesterov, betas."""
    name, lr, wd = cfg["name"], float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum", 0.9)), weight_decay=wd,
                               nesterov=bool(cfg.get("nesterov", False)))
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
    raise ConfigError(f"optim.name {name!r} is not one of ['sgd', 'adam', 'adamw']")
