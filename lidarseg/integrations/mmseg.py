"""The subclassified loss as an mmsegmentation 1.x loss: `type='SubclassifiedCrossEntropyLoss'` in `loss_decode`.

Importing this module (e.g. through a config's `custom_imports`) does three things, in this order:
1. installs a pure-torch `mmcv.ops` stand-in when mmcv has no compiled ops (mmcv-lite; see `mmcv_ops`), before
   mmseg imports its models;
2. allows mmengine's checkpoint contents in `torch.load(weights_only=True)` (the torch >= 2.6 default), so that
   `resume=True` / `load_from` work without environment variables (`allow_mmengine_checkpoints`);
3. registers `SubclassifiedCrossEntropyLoss` in `mmseg.registry.MODELS`.

Two lines in an mmseg config:

    custom_imports = dict(imports=['lidarseg.integrations.mmseg'], allow_failed_imports=False)
    model = dict(decode_head=dict(loss_decode=dict(type='SubclassifiedCrossEntropyLoss', loss_weight=1.0)))

Conventions follow mmseg's `CrossEntropyLoss` (see docs/loss.md, "In mmsegmentation"): `ignore_index` 255,
`avg_non_ignore=False` -> the published normalisation (mean over all pixels), `True` -> mean over non-ignored
pixels; `weight` (a pixel sampler's per-pixel weights, e.g. OHEM) multiplies the per-pixel loss exactly as in the
published code and mmseg's CE.
"""
from __future__ import annotations

import inspect
import math
import pickle

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import mmcv_ops

try:
    import mmengine  # noqa: F401
    import mmseg  # noqa: F401
except ImportError as exc:                                    # pragma: no cover - depends on the environment
    raise ImportError(f"lidarseg.integrations.mmseg needs mmsegmentation 1.x ({exc}); install the tested set with "
                      f"pip install -e \".[mmseg]\" (mmengine 0.10.7, mmcv-lite 2.1.0, mmsegmentation 1.2.2)") from exc

mmcv_ops.install()                                            # before anything imports mmseg.models

from mmseg.registry import MODELS  # noqa: E402

from ..losses.subclassified import SubclassifiedLoss  # noqa: E402

__all__ = ["SubclassifiedCrossEntropyLoss", "allow_mmengine_checkpoints", "MMENGINE_CHECKPOINT_GLOBALS"]

# SubclassifiedLoss options that the mmseg loss passes through; its normalize and ignore_index are set from
# mmseg's avg_non_ignore and ignore_index, class_weight is loaded the mmseg way.
_OWN = ("normalize", "ignore_index", "class_weight")
_OPTIONS = tuple(p for p in inspect.signature(SubclassifiedLoss.__init__).parameters if p not in ("self", *_OWN))
_POINT_MODES = ("ce", "subclassified")
_REDUCTIONS = ("mean", "sum", "none")


def _history_buffer_method(obj, name):
    """Stands in for `builtins.getattr` while torch unpickles with weights_only=True: mmengine's HistoryBuffer pickles
    its statistics methods as `getattr(HistoryBuffer, "min")` (pickle protocol 2). Only those lookups are allowed
    (the four built-in statistics and any registered with `HistoryBuffer.register_statistics`); allowing getattr
    itself would let a checkpoint reach any attribute of any allowed object."""
    from mmengine.logging.history_buffer import HistoryBuffer
    statistics = {"min", "max", "mean", "current", *getattr(HistoryBuffer, "_statistics_methods", {})}
    if obj is HistoryBuffer and isinstance(name, str) and name in statistics:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"weights-only load: getattr({obj!r}, {name!r}) is not allowed (only "
                                 f"HistoryBuffer statistics methods, as mmengine checkpoints hold)")


def _mmengine_checkpoint_globals() -> list:
    """What an mmengine 0.10 checkpoint holds besides tensors and builtin containers: the message hub's
    HistoryBuffer (and the getattr it pickles its statistics methods with), the numpy arrays and scalars it logs."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)]
    return [HistoryBuffer, np.ndarray, np.dtype, *dtypes, core.multiarray._reconstruct, core.multiarray.scalar,
            (_history_buffer_method, "builtins.getattr")]


MMENGINE_CHECKPOINT_GLOBALS: list = []


def allow_mmengine_checkpoints() -> list:
    """Add mmengine's checkpoint contents to torch's weights-only allow-list (torch >= 2.6 loads with
    weights_only=True by default and mmengine 0.10.7 calls plain `torch.load`, so `resume=True` would fail on
    HistoryBuffer). Idempotent; returns the entries (a type, or a (function, "module.name") pair). A no-op on a
    torch without `add_safe_globals`."""
    add = getattr(getattr(torch, "serialization", None), "add_safe_globals", None)
    if add is None:
        return []
    if not MMENGINE_CHECKPOINT_GLOBALS:
        MMENGINE_CHECKPOINT_GLOBALS.extend(_mmengine_checkpoint_globals())
        add(list(MMENGINE_CHECKPOINT_GLOBALS))
    return MMENGINE_CHECKPOINT_GLOBALS


allow_mmengine_checkpoints()


def _load_class_weight(class_weight):
    """mmseg's class_weight: None, a list of numbers, or a file (.npy, or json/yaml/pkl read by mmengine)."""
    if isinstance(class_weight, str):
        from mmseg.models.losses.utils import get_class_weight
        try:
            class_weight = get_class_weight(class_weight)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"SubclassifiedCrossEntropyLoss: cannot read class_weight file {class_weight!r}: "
                             f"{exc}") from exc
    if class_weight is None:
        return None
    if hasattr(class_weight, "tolist"):
        class_weight = class_weight.tolist()
    return list(class_weight)


@MODELS.register_module()
class SubclassifiedCrossEntropyLoss(nn.Module):
    """The subclassified loss in mmseg's loss interface: `forward(cls_score, label, weight=None, avg_factor=None,
    reduction_override=None, ignore_index=None)` -> `loss_weight * loss`.

    Image logits [B,C,H,W] with labels [B,H,W]: `SubclassifiedLoss` (lidarseg/losses/subclassified.py) with
    `normalize='official'` when `avg_non_ignore=False` (mmseg's default; as published: mean over all B*H*W pixels,
    ignored pixels counted with CE 0) or `normalize='valid'` when True (mean over non-ignored pixels; ignored pixels
    take no part in the subclass counts either). `weight` [B,H,W] multiplies the per-pixel loss before the mean and
    does not change its denominator (as in the published code and mmseg's CE). `avg_factor` replaces the
    denominator (mmseg semantics). `class_weight` multiplies each pixel's CE; the mean is still over pixels, as
    published (mmseg's CE divides by the sum of the pixels' class weights instead).

    Point logits [B,C,P] (PointRend's point head) with `point_logits='ce'` (default): cross-entropy with the same
    weight, class-weight and denominator rules, i.e. uniform subclass weights -- the published code also falls back
    to the plain CE for non-4-D input, because the sampled points have no grid: the strides would average
    unrelated points. `point_logits='subclassified'`: the subclassified loss with ref_stride = query_stride = 1 over
    the points of each image (every point compared with every same-label point, a point matching itself).

    Other keyword options (threshold, eps, power, max_weight, ref_stride, query_stride, similarity_input, ...) go
    to `SubclassifiedLoss` unchanged. `ignore_index` given to forward (mmseg's heads always pass theirs) must equal
    the configured one: a mismatch is an error rather than a silent choice.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = "loss_subcls", class_weight=None,
                 ignore_index: int = 255, avg_non_ignore: bool = False, reduction: str = "mean",
                 point_logits: str = "ce", use_sigmoid: bool = False, use_mask: bool = False, **options):
        super().__init__()
        name = type(self).__name__
        if not isinstance(loss_name, str) or not loss_name.startswith("loss_"):
            raise ValueError(f"{name}: loss_name must start with 'loss_' (mmengine back-propagates only log keys "
                             f"containing 'loss'; without the prefix the loss would be logged but never trained), "
                             f"got {loss_name!r}")
        if use_sigmoid or use_mask:
            raise ValueError(f"{name}: use_sigmoid / use_mask are not supported (the subclassified loss is a "
                             f"softmax cross-entropy); got use_sigmoid={use_sigmoid}, use_mask={use_mask}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if point_logits not in _POINT_MODES:
            raise ValueError(f"{name}: point_logits must be one of {_POINT_MODES}, got {point_logits!r}")
        if not isinstance(avg_non_ignore, bool):
            raise ValueError(f"{name}: avg_non_ignore must be True or False, got {avg_non_ignore!r}")
        if "normalize" in options:
            raise ValueError(f"{name}: set avg_non_ignore instead of normalize (False -> 'official', "
                             f"True -> 'valid')")
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {unknown}; valid: loss_weight, loss_name, class_weight, "
                             f"ignore_index, avg_non_ignore, reduction, point_logits, {', '.join(_OPTIONS)}")
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        self.avg_non_ignore = avg_non_ignore
        self.reduction = reduction
        self.point_logits = point_logits
        normalize = "valid" if avg_non_ignore else "official"
        cw = _load_class_weight(class_weight)
        self.criterion = SubclassifiedLoss(normalize=normalize, class_weight=cw, ignore_index=ignore_index,
                                           **options)
        # point logits: uniform subclass weights (threshold +inf: every subclass empty -> plain CE) or every point
        # compared with every same-label point (strides 1)
        point_options = {**options, "ref_stride": 1, "query_stride": 1}
        if point_logits == "ce":
            point_options["threshold"] = math.inf
        self.point_criterion = SubclassifiedLoss(normalize=normalize, class_weight=cw, ignore_index=ignore_index,
                                                 **point_options)

    @property
    def ignore_index(self):
        return self.criterion.ignore_index

    @property
    def loss_name(self) -> str:
        """The log key (mmseg reads it); it starts with 'loss_' so that mmengine back-propagates it."""
        return self._loss_name

    @property
    def last_weight_map(self):
        """The detached per-pixel weight map of the last image forward ([B,H,W]), for logging."""
        return self.criterion.last_weight_map

    def extra_repr(self) -> str:
        return (f"loss_name={self._loss_name!r}, loss_weight={self.loss_weight}, "
                f"avg_non_ignore={self.avg_non_ignore}, point_logits={self.point_logits!r}")

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, weight=None, avg_factor=None,
                reduction_override=None, ignore_index=None, **kwargs) -> torch.Tensor:
        name = type(self).__name__
        if kwargs:
            raise TypeError(f"{name}.forward got unsupported argument(s) {sorted(kwargs)}")
        if ignore_index is not None and ignore_index != self.ignore_index:
            raise ValueError(f"{name}: the head passes ignore_index={ignore_index} but the loss was configured "
                             f"with ignore_index={self.ignore_index}; set the loss's ignore_index to the head's")
        reduction = reduction_override or self.reduction
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{name}: reduction_override must be one of {_REDUCTIONS}, got {reduction_override!r}")
        if weight is not None and tuple(weight.shape) != tuple(label.shape):
            raise ValueError(f"{name}: weight shape {list(weight.shape)} must equal the label shape "
                             f"{list(label.shape)} (one weight per pixel, as mmseg's pixel samplers give)")
        points = cls_score.dim() == 3
        criterion = self.point_criterion if points else self.criterion
        if weight is None and avg_factor is None and reduction == "mean":
            return self.loss_weight * criterion(cls_score, label)
        return self.loss_weight * self._weighted(criterion, cls_score, label, weight, avg_factor, reduction)

    def _weighted(self, criterion, cls_score, label, weight, avg_factor, reduction):
        """The same loss with a per-pixel `weight`, an `avg_factor` or another reduction: per-pixel
        CE * subclass weight * weight, then mean (over all pixels, or the non-ignored ones), sum, or none."""
        base = self.criterion
        ii = -100 if base.ignore_index is None else base.ignore_index
        cw = None if base.class_weight is None else base.class_weight.to(cls_score.device)
        w = criterion.weights(cls_score, label)                        # checks shapes and label range too
        per = F.cross_entropy(cls_score, label.long(), weight=cw, ignore_index=ii, reduction="none").float() * w
        if weight is not None:
            per = per * weight.float()
        if reduction == "none":
            return per
        if reduction == "sum":
            return per.sum()
        if avg_factor is not None:
            return per.sum() / (avg_factor + torch.finfo(torch.float32).eps)
        if self.avg_non_ignore:
            n = per.numel() if base.ignore_index is None else int((label != base.ignore_index).sum())
            return per.sum() / max(n, 1)
        return per.sum() / max(per.numel(), 1)
