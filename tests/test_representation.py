"""lidarseg.data.representation: the registry and the range-image family's benchmark inputs (the KPRNet family's
are checked against real batches in test_kprnet_data.py)."""
import pytest
import torch

from lidarseg import models
from lidarseg.data.representation import get_representation, representation_of
from lidarseg.errors import ConfigError


def test_registry_and_model_lookup():
    class Point(torch.nn.Module):
        input_mode = "kprnet"

    model = models.build_model("rangenet21", 20, None, width=0.125, blocks=[1, 1, 1, 1, 1])
    assert representation_of(model) is get_representation("range")
    assert representation_of(torch.nn.Conv2d(5, 3, 1)).name == "range"      # a model that declares none
    assert representation_of(Point()).name == "kprnet" and not representation_of(Point()).image_output
    with pytest.raises(ConfigError, match=r"unknown input representation 'voxels'; registered: \['kprnet', 'range'\]"):
        get_representation("voxels")


def test_range_benchmark_inputs_feed_the_network_and_loss():
    torch.manual_seed(0)
    model = models.build_model("rangenet21", 20, None, width=0.125, blocks=[1, 1, 1, 1, 1]).eval()
    (x,), y, label = get_representation("range").example_inputs(2, (32, 128), 0, torch.device("cpu"), True)
    assert x.shape == (2, 5, 32, 128) and x.dtype == torch.float32 and label == "32x128"
    assert y.shape == (2, 32, 128) and y.dtype == torch.int64 and 1 <= int(y.min()) and int(y.max()) < 20
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 20, 32, 128)
    assert torch.isfinite(torch.nn.functional.cross_entropy(logits, y, ignore_index=0))
