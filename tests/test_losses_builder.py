"""build_loss: config forms, validation errors, weighted sums, last_terms, find_subclassified."""
import math

import pytest
import torch
import torch.nn.functional as F

from lidarseg.data.labels import LabelMap
from lidarseg.errors import ConfigError
from lidarseg.losses import (LOSSES, CrossEntropyLoss, LovaszSoftmaxLoss, SubclassifiedLoss, WeightedSumLoss,
                             build_loss, find_subclassified)

C = 20


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (2, 16, 64), generator=g)
    return torch.randn(2, C, 16, 64, generator=g), y


def test_single_forms():
    s, y = inputs()
    assert isinstance(build_loss("ce"), CrossEntropyLoss)
    loss = build_loss({"name": "subclassified", "threshold": 0.9, "normalize": "official", "ignore_index": 0})
    assert isinstance(loss, SubclassifiedLoss) and loss.threshold == 0.9 and loss.normalize == "official"
    assert find_subclassified(loss) is loss
    assert find_subclassified(build_loss("ce")) is None
    ninf = build_loss({"name": "subclassified", "threshold": "-inf"})
    assert ninf.threshold == -math.inf
    v = loss(s, y)
    assert set(loss.last_terms) == {"subclassified"}


def test_wce_uses_label_map_content_weights():
    lm = LabelMap.from_yaml()
    s, y = inputs(1)
    loss = build_loss({"name": "wce"}, label_map=lm)
    w = torch.tensor(lm.class_weights(), dtype=torch.float32)
    torch.testing.assert_close(loss.class_weight, w)
    torch.testing.assert_close(loss(s, y), F.cross_entropy(s, y, weight=w, ignore_index=0))
    assert list(loss.last_terms) == ["wce"]
    explicit = build_loss({"name": "ce", "class_weight": [1.0] * C})
    torch.testing.assert_close(explicit(s, y), F.cross_entropy(s, y, ignore_index=0))
    sub = build_loss({"name": "subclassified", "class_weight": "content"}, label_map=lm)
    torch.testing.assert_close(sub.class_weight, w)


def test_weighted_sum_of_terms():
    s, y = inputs(2)
    cfg = [{"name": "subclassified", "weight": 1.0, "threshold": 0.95},
           {"name": "lovasz", "weight": 0.5},
           {"name": "lovasz", "weight": 2.0}]
    loss = build_loss(cfg)
    assert isinstance(loss, WeightedSumLoss)
    x = s.clone().requires_grad_()
    total = loss(x, y)
    total.backward()
    sub = SubclassifiedLoss(threshold=0.95)(s, y)
    lov = LovaszSoftmaxLoss()(s, y)
    torch.testing.assert_close(total, sub + 2.5 * lov)
    assert list(loss.last_terms) == ["subclassified", "lovasz", "lovasz_2"]
    torch.testing.assert_close(loss.last_terms["subclassified"], sub)
    torch.testing.assert_close(loss.last_terms["lovasz_2"], lov)
    assert all(not v.requires_grad for v in loss.last_terms.values())
    assert find_subclassified(loss) is loss.terms[0]
    assert find_subclassified(loss).last_weight_map.shape == y.shape
    single = build_loss({"name": "ce", "weight": 2.0})
    torch.testing.assert_close(single(s, y), 2 * F.cross_entropy(s, y, ignore_index=0))


@pytest.mark.parametrize("cfg,match", [
    ({"name": "dice"}, r"unknown loss name 'dice'; valid names: \['boundary', 'ce', 'focal', 'lovasz', 'ohem', "
                       r"'subclassified', 'wce'\]"),
    ({"name": "subclassified", "treshold": 0.9}, r"unknown key\(s\) \['treshold'\].*valid keys: .*'threshold'"),
    ({"name": "lovasz", "gamma": 2}, r"unknown key\(s\) \['gamma'\].*valid keys: \['classes', 'ignore_index', "
                                     r"'name', 'weight'\]"),
    ({"threshold": 0.9}, r"missing 'name'; valid names"),
    ([{"name": "ce"}, {"name": "foo"}], r"loss\[1\]: unknown loss name 'foo'"),
    ({"name": "subclassified", "normalize": "mean"}, r"\(subclassified\): normalize must be"),
    ({"name": "subclassified", "ref_stride": 2.5}, r"ref_stride must be an integer"),
    ({"name": "focal", "gamma": "two"}, r"gamma must be a number"),
    ({"name": "wce", "class_weight": "inverse"}, r"class_weight must be null, 'content' or a list"),
    ({"name": "ce", "weight": "x"}, r"weight must be a finite number"),
    ([], r"empty list"),
    (3, r"expected a name, a mapping or a list"),
])
def test_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(cfg)


def test_class_weight_length_checked_against_label_map():
    with pytest.raises(ConfigError, match="class_weight has 3 entries, the label config has 20"):
        build_loss({"name": "ce", "class_weight": [1, 2, 3]}, label_map=LabelMap.from_yaml())


def test_every_registered_loss_builds_and_runs_on_points():
    s, y = inputs(3)
    for name in LOSSES:
        loss = build_loss(name)
        v = loss(s[:, :, 0], y[:, 0])
        assert torch.isfinite(v) and list(loss.last_terms) == [name]


def test_options_come_from_the_constructors_and_ignore_from_the_label_map():
    import inspect

    from lidarseg.losses.builder import loss_options
    for name, (cls, overrides) in LOSSES.items():
        params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                  if k != "self" and p.default is not p.empty}
        assert {k: v[0] for k, v in loss_options(name).items()} == {**params, **overrides}
    assert loss_options("wce")["class_weight"][0] == "content"
    lm = LabelMap({"labels": {0: "a", 1: "b", 2: "c"}, "color_map": {0: [0, 0, 0]}, "content": {0: 1.0},
                   "learning_map": {0: 0, 1: 1, 2: 2}, "learning_map_inv": {0: 0, 1: 1, 2: 2},
                   "learning_ignore": {0: False, 1: False, 2: True}})
    assert build_loss("ce", label_map=lm).ignore_index == 2
    assert build_loss({"name": "ce", "ignore_index": 0}, label_map=lm).ignore_index == 0
    assert build_loss("ce").ignore_index == 0
    with pytest.raises(ConfigError, match="theta0 must be an integer"):
        build_loss({"name": "boundary", "theta0": 2.5})
