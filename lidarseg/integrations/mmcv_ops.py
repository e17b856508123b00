"""A pure-torch stand-in for `mmcv.ops`, for mmcv-lite (mmcv without compiled ops).

mmsegmentation 1.x imports `mmcv.ops` at import time in several modules (PointRend's point head, the focal loss,
mask-classification utilities), so with mmcv-lite `import mmseg.models` fails on the missing `mmcv._ext`. Of what
those modules import, only `point_sample` is used by the CPU code paths, and it is plain torch (`grid_sample` on
coordinates in [0, 1]); any other op raises the ModuleNotFoundError that mmseg's optional imports expect. `install()`
puts this module in `sys.modules["mmcv.ops"]`, and only when mmcv's compiled
extension is absent and `mmcv.ops` has not been imported already; a full mmcv is never touched.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import torch
import torch.nn.functional as F

__all__ = ["point_sample", "sigmoid_focal_loss", "install", "compiled_ops_available"]


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs) -> torch.Tensor:
    """Sample `input` [N,C,H,W] at `points` given in image-relative coordinates (x, y) in [0, 1]:
    [N,P,2] -> [N,C,P], or [N,Hg,Wg,2] -> [N,C,Hg,Wg]. Bilinear by default; `kwargs` go to `grid_sample`
    (mode="nearest" samples labels). Coordinates outside [0, 1] read zeros (grid_sample's zero padding)."""
    flat = points.dim() == 3
    grid = points.unsqueeze(2) if flat else points
    out = F.grid_sample(input, grid * 2.0 - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if flat else out


def sigmoid_focal_loss(*args, **kwargs):
    """Placeholder for the compiled CUDA focal loss: mmseg imports it but calls it only for CUDA tensors."""
    raise RuntimeError("mmcv.ops.sigmoid_focal_loss is a compiled op that mmcv-lite does not have (lidarseg's "
                       "mmcv.ops stand-in provides point_sample only); on CPU mmseg's FocalLoss uses its pure-torch "
                       "form, on CUDA install a full mmcv")


def _missing_op(name: str):
    """Any other op: the ModuleNotFoundError that mmcv-lite's own `mmcv.ops` raises, which mmseg's optional
    imports (`try: from mmcv.ops import X except ModuleNotFoundError`) expect."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise ModuleNotFoundError(f"mmcv.ops.{name} needs mmcv's compiled ops (No module named 'mmcv._ext'); lidarseg's "
                              f"mmcv.ops stand-in for mmcv-lite provides only point_sample", name="mmcv._ext")


def compiled_ops_available() -> bool:
    """True when mmcv is installed with its compiled extension `mmcv._ext` (full mmcv, not mmcv-lite)."""
    if importlib.util.find_spec("mmcv") is None:
        return False
    return importlib.util.find_spec("mmcv._ext") is not None


def install() -> bool:
    """Register this module as `mmcv.ops` when mmcv is importable without its compiled ops and `mmcv.ops` is not
    loaded yet. Returns True when the stand-in is (now or already) in place, False when nothing was done."""
    current = sys.modules.get("mmcv.ops")
    if current is not None:
        return getattr(current, "__lidarseg_stand_in__", False)
    if importlib.util.find_spec("mmcv") is None or compiled_ops_available():
        return False
    import mmcv

    ops = types.ModuleType("mmcv.ops", __doc__)
    ops.__lidarseg_stand_in__ = True
    ops.point_sample = point_sample
    ops.sigmoid_focal_loss = sigmoid_focal_loss
    ops.__all__ = ["point_sample", "sigmoid_focal_loss"]
    ops.__getattr__ = _missing_op
    sys.modules["mmcv.ops"] = ops
    mmcv.ops = ops
    return True
