"""MC-dropout: mean and variance of the softmax over N passes with only dropout active, against a plain loop."""
import pytest
import torch

from lidarseg.engine.uncertainty import mc_dropout_probs
from lidarseg.errors import ConfigError
from models.salsanext import SalsaNext

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_equals_plain_loop_and_restores_modes():
    torch.manual_seed(0)
    m = SalsaNext(20, 5, width=0.25).eval()
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):
            b.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 5, 16, 64)
    torch.manual_seed(1)
    mean, var = mc_dropout_probs(m, x, samples=4)
    assert all(not mod.training for mod in m.modules())            # eval mode restored
    # plain loop: dropout in training mode, BatchNorm with running statistics, same random stream
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout2d):
            mod.train()
    torch.manual_seed(1)
    with torch.no_grad():
        probs = torch.stack([torch.softmax(m(x), 1) for _ in range(4)])
    torch.testing.assert_close(mean, probs.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var, probs.var(dim=0).mean(dim=1), rtol=1e-4, atol=1e-7)
    assert var.shape == (1, 16, 64) and float(var.max()) > 0        # dropout makes the passes differ


def test_needs_dropout_and_two_samples():
    m = SalsaNext(20, 5, width=0.25, dropout=0.0).eval()
    with pytest.raises(ConfigError, match="no dropout"):
        mc_dropout_probs(m, torch.zeros(1, 5, 16, 16), samples=3)
    with pytest.raises(ConfigError, match="mc-samples"):
        mc_dropout_probs(SalsaNext(20, 5, width=0.25), torch.zeros(1, 5, 16, 16), samples=1)
