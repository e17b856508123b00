"""TensorBoard logging (torch.utils.tensorboard, rank 0 only) and the range-image panels shown at validation.

Tags: train/loss, train/loss_<term>, train/lr, train/grad_norm, train/scans_per_s; val/miou_pixel, val/miou_point,
val/miou_point_knn, val/acc_point(_knn), val/iou_point(_knn)/<class>, val/iou_pixel/<class>; images
val/range, val/prediction, val/ground_truth, val/weight_map (HWC, uint8).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# 9 anchor colours of matplotlib's viridis; enough for a smooth ramp by linear interpolation.
_VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
                     [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]], np.float64)


def colormap(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Float [H,W] -> RGB uint8 [H,W,3] on a viridis ramp, min-max scaled over `mask`; black outside it."""
    v = np.asarray(values, dtype=np.float64)
    m = np.ones(v.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.any():
        lo, hi = v[m].min(), v[m].max()
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    v = np.clip(v, 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(v.astype(int), len(_VIRIDIS) - 2)
    f = (v - i)[..., None]
    rgb = _VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f
    rgb[~m] = 0
    return rgb.round().astype(np.uint8)


def panels(label_map, input_range: np.ndarray, mask: np.ndarray, pred: np.ndarray, gt: np.ndarray,
           weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """RGB uint8 [H,W,3] images of one scan: the range channel, prediction and ground truth in SemanticKITTI
    colours (black where no point), and the loss weight map when given."""
    mask = np.asarray(mask, bool)
    out = {
        "range": colormap(input_range, mask),
        "prediction": label_map.colorize(np.where(mask, pred, 0)),
        "ground_truth": label_map.colorize(np.where(mask, gt, 0)),
    }
    if weights is not None:
        out["weight_map"] = colormap(weights, mask)
    return out


class Logger:
    """A SummaryWriter on rank 0; on other ranks every call is a no-op."""

    def __init__(self, log_dir, enabled: bool = True):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: dict, step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                v = v.item()
            self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def images(self, images: dict[str, np.ndarray], step: int, prefix: str = "val/") -> None:
        if self.writer is None:
            return
        for k, img in images.items():
            self.writer.add_image(f"{prefix}{k}", np.ascontiguousarray(img), step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
