"""TensorBoard logging (torch.utils.tensorboard, rank 0 only) of scalars and the range-image panels shown at
validation (made by `lidarseg.visualize.panels`).

Tags: train/loss, train/loss_<term>, train/lr, train/grad_norm, train/scans_per_s; val/miou_pixel, val/miou_point,
val/miou_point_knn, val/acc_point(_knn), val/iou_point(_knn)/<class>, val/iou_pixel/<class>; images
val/range, val/prediction, val/ground_truth, val/weight_map (HWC, uint8).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# the images themselves are made in lidarseg.visualize; re-exported here for older imports
from ..visualize import colormap, panels  # noqa: F401


class Logger:
    """A SummaryWriter on rank 0; on other ranks every call is a no-op."""

    def __init__(self, log_dir, enabled: bool = True, purge_step: int | None = None):
        """`purge_step`: after a resume, TensorBoard hides events of earlier writers at this step or later (those a
        killed run logged after its last checkpoint)."""
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

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
