"""`schedule.name: cosine_restarts` equals a transcription of CENet's CosineAnnealingWarmUpRestarts
(modules/scheduler/cosine.py) as its trainer uses it: SGD lr = min_lr, stepped after every batch."""
import math

import pytest
import torch

from lidarseg.engine.config import load_config
from lidarseg.engine.schedule import build_scheduler
from lidarseg.errors import ConfigError


def reference_lrs(n_steps, T_0, T_mult, eta_max, T_up, gamma, min_lr):
    """lr used by each of the first n_steps optimizer steps, following the reference's state machine."""
    base_lr, T_i, T_cur, cycle = min_lr, T_0, 0, 0   # the constructor's initial step: T_cur -1 -> 0
    cur_max, out = eta_max, []

    def get_lr():
        if T_cur < T_up:
            return (cur_max - base_lr) * T_cur / T_up + base_lr
        return base_lr + (cur_max - base_lr) * (1 + math.cos(math.pi * (T_cur - T_up) / (T_i - T_up))) / 2

    lr = get_lr()
    for _ in range(n_steps):
        out.append(lr)
        T_cur += 1                                   # scheduler.step() after the optimizer step
        if T_cur >= T_i:
            cycle += 1
            T_cur -= T_i
            T_i = (T_i - T_up) * T_mult + T_up
        cur_max = eta_max * gamma ** cycle
        lr = get_lr()
    return out


def our_lrs(n_steps, steps_per_epoch, epochs, schedule, lr):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = build_scheduler(opt, schedule, lr, steps_per_epoch, epochs)
    out = []
    for _ in range(n_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("first_cycle, mult, gamma, epochs", [(5, 1, 1.0, 10), (3, 2, 0.5, 12), (10, 1, 1.0, 10)])
def test_cosine_restarts_equals_cenet(first_cycle, mult, gamma, epochs):
    spe, wup = 7, 1
    schedule = {"name": "cosine_restarts", "warmup_epochs": wup, "cycle_epochs": first_cycle, "cycle_mult": mult,
                "gamma": gamma, "min_lr": 1e-4}
    ours = our_lrs(spe * epochs, spe, epochs, schedule, 0.01)
    ref = reference_lrs(spe * epochs, first_cycle * spe, mult, 0.01, wup * spe, gamma, 1e-4)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert ours[0] == pytest.approx(1e-4) and max(ours) == pytest.approx(0.01)


def test_config_accepts_cosine_restarts_and_checks_it():
    cfg = load_config(None, ["schedule.name=cosine_restarts", "schedule.cycle_epochs=50", "schedule.min_lr=1e-4"])
    assert cfg["schedule"]["cycle_epochs"] == 50 and cfg["schedule"]["cycle_mult"] == 1
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    with pytest.raises(ConfigError, match="cycle_epochs"):
        build_scheduler(opt, {"name": "cosine_restarts", "cycle_epochs": "x"}, 0.01, 10, 5)
    with pytest.raises(ConfigError, match="longer than the warm-up"):
        build_scheduler(opt, {"name": "cosine_restarts", "cycle_epochs": 1, "warmup_epochs": 1}, 0.01, 10, 5)
    with pytest.raises(ConfigError, match="gamma"):
        build_scheduler(opt, {"name": "cosine_restarts", "gamma": -1.0}, 0.01, 10, 5)
    with pytest.raises(ConfigError, match="cycle_mult"):
        build_scheduler(opt, {"name": "cosine_restarts", "cycle_mult": 0}, 0.01, 10, 5)
