"""`build_loss(cfg, label_map=None)`: a loss module from the `loss:` section of a config.

Forms accepted:
    "ce"                                                   a name alone
    {name: subclassified, threshold: 0.98, ...}            one loss with its options
    [{name: subclassified, weight: 1.0}, {name: lovasz, weight: 1.0}]   a weighted sum of terms
Every loss: forward(logits, target) -> scalar, `last_terms` {term: detached value} after each forward.
Unknown names or keys raise ConfigError listing the valid ones.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn

from ..errors import ConfigError
from .baselines import CrossEntropyLoss, FocalLoss, LovaszSoftmaxLoss, OhemCrossEntropy
from .boundary import BoundaryLoss
from .subclassified import SubclassifiedLoss

__all__ = ["build_loss", "WeightedSumLoss", "find_subclassified", "LOSSES", "loss_options"]

_CW = "class_weight"
#: name -> (class, {option: value} where the name's default differs from the class constructor's). Every other
#: option, its default and its type come from the constructor (`loss_options`). class_weight accepts null,
#: "content" (RangeNet++ weights from the label config) or a list of C numbers.
LOSSES = {
    "ce": (CrossEntropyLoss, {}),
    "wce": (CrossEntropyLoss, {_CW: "content"}),
    "lovasz": (LovaszSoftmaxLoss, {}),
    "focal": (FocalLoss, {}),
    "ohem": (OhemCrossEntropy, {}),
    "boundary": (BoundaryLoss, {}),
    "subclassified": (SubclassifiedLoss, {}),
}


def loss_options(name: str) -> dict:
    """{option: (default, type, nullable)} of loss `name`, read from its class constructor: the keyword arguments
    and their defaults (with the name's overrides), the type a configured value must have from the annotation
    (`float`: any real number, `int`: an integer; others unchecked here, the constructor checks them) or, for an
    unannotated argument, from its default, which then also accepts null."""
    import inspect
    cls, overrides = LOSSES[name]
    out = {}
    for key, p in inspect.signature(cls.__init__).parameters.items():
        if key == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            continue
        default = overrides.get(key, p.default)
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        if p.annotation is p.empty:
            kind = (None if isinstance(p.default, bool) or p.default is None else
                    float if isinstance(p.default, float) else int if isinstance(p.default, int) else None)
            nullable = True
        else:
            parts = {t.strip() for t in str(ann).split("|")}
            kind = float if "float" in parts else int if "int" in parts else None
            nullable = "None" in parts
        out[key] = (default, kind, nullable)
    return out


class WeightedSumLoss(nn.Module):
    """sum_t weight_t * term_t(logits, target); `last_terms` holds each term's unweighted detached value."""

    name = "sum"

    def __init__(self, terms, weights, keys):
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.weights = [float(w) for w in weights]
        self.keys = list(keys)
        self.last_terms: dict = {}

    def forward(self, logits, target):
        total, values = None, {}
        for key, w, term in zip(self.keys, self.weights, self.terms):
            v = term(logits, target)
            values[key] = v.detach()
            total = w * v if total is None else total + w * v
        self.last_terms = values
        return total

    def extra_repr(self) -> str:
        return ", ".join(f"{k}*{w:g}" for k, w in zip(self.keys, self.weights))


def find_subclassified(loss: nn.Module):
    """The SubclassifiedLoss inside a built loss (itself, or a term of a weighted sum), or None: use it to log
    weight maps (`.last_weight_map` after a forward, or `.weights(logits, target)`)."""
    for m in loss.modules():
        if isinstance(m, SubclassifiedLoss):
            return m
    return None


def _class_weight(value, where, label_map, num_classes=None):
    if value is None:
        return None
    if isinstance(value, str):
        if value != "content":
            raise ConfigError(f"{where}: class_weight must be null, 'content' or a list of numbers, got {value!r}")
        if label_map is None:
            from ..data.labels import LabelMap
            label_map = LabelMap.from_yaml()
        return torch.tensor(label_map.class_weights(), dtype=torch.float32)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                         for v in value):
        if label_map is not None and len(value) != label_map.num_classes:
            raise ConfigError(f"{where}: class_weight has {len(value)} entries, the label config has "
                              f"{label_map.num_classes} classes")
        return [float(v) for v in value]
    raise ConfigError(f"{where}: class_weight must be null, 'content' or a list of numbers, got {value!r}")


def _check_value(key, value, where, kind, nullable):
    if value is None and nullable:
        return value
    if kind is float:
        if isinstance(value, str) and value.strip().lower() in ("-inf", "inf", "+inf", "-.inf", ".inf"):
            return float(value.replace(".", ""))
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        return int(value)
    return value


def _ignore_index(label_map, where: str):
    """The train id the label config ignores (learning_ignore), or None when it ignores none."""
    if len(label_map.ignore) > 1:
        raise ConfigError(f"{where}: the label config {label_map.source} ignores classes {label_map.ignore}; the "
                          "losses take one ignore_index: set it explicitly")
    return label_map.ignore[0] if label_map.ignore else None


def _build_one(cfg: dict, where: str, label_map, allow_weight: bool):
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {cfg!r}")
    if "name" not in cfg:
        raise ConfigError(f"{where}: missing 'name'; valid names: {sorted(LOSSES)}")
    name = cfg["name"]
    if name not in LOSSES:
        raise ConfigError(f"{where}: unknown loss name {name!r}; valid names: {sorted(LOSSES)}")
    cls = LOSSES[name][0]
    options = loss_options(name)
    extra = {"name", "weight"} if allow_weight else {"name"}
    unknown = sorted(set(cfg) - set(options) - extra)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for loss {name!r}; valid keys: "
                          f"{sorted(set(options) | extra)}")
    opts = {k: v[0] for k, v in options.items()}
    if "ignore_index" in options and "ignore_index" not in cfg and label_map is not None:
        opts["ignore_index"] = _ignore_index(label_map, f"{where} ({name})")
    opts.update({k: v for k, v in cfg.items() if k not in extra})
    opts = {k: _check_value(k, v, f"{where} ({name})", *options[k][1:]) for k, v in opts.items()}
    if _CW in opts:
        opts[_CW] = _class_weight(opts[_CW], f"{where} ({name})", label_map)
    weight = cfg.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ConfigError(f"{where} ({name}): weight must be a finite number, got {weight!r}")
    try:
        module = cls(**opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} ({name}): {exc}") from None
    module.name = name
    return name, float(weight), module


def build_loss(cfg, label_map=None) -> nn.Module:
    """Build a loss from a name, a mapping {name, ...options} or a list of {name, weight, ...options} terms.

    label_map (a lidarseg LabelMap) supplies `class_weight: content` (without it the default label config is read)
    and the default `ignore_index` (its ignored class; without it the constructors' 0).
    A single loss is returned as its module; a list as a WeightedSumLoss (also a list of one term)."""
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    if isinstance(cfg, dict):
        name, weight, module = _build_one(cfg, "loss", label_map, allow_weight=True)
        if weight != 1.0:
            return WeightedSumLoss([module], [weight], [name])
        return module
    if isinstance(cfg, (list, tuple)):
        if not cfg:
            raise ConfigError(f"loss: empty list of terms; valid names: {sorted(LOSSES)}")
        terms, weights, keys = [], [], []
        for i, item in enumerate(cfg):
            name, weight, module = _build_one(item, f"loss[{i}]", label_map, allow_weight=True)
            key, n = name, 2
            while key in keys:
                key, n = f"{name}_{n}", n + 1
            terms.append(module)
            weights.append(weight)
            keys.append(key)
        return WeightedSumLoss(terms, weights, keys)
    raise ConfigError(f"loss: expected a name, a mapping or a list of mappings, got {type(cfg).__name__}")
