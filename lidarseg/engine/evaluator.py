"""Validation metrics of a batch stream: pixel IoU on the range images and point IoU after back-projection, plain
(each point takes its pixel's label) and with RangeNet++'s KNN; summed across ranks.

Confusion matrices are int64 [C,C] tensors (rows = prediction, columns = ground truth), accumulated on the model's
device with bincount (no host sync per batch) and summed across ranks; the statistics are
`lidarseg.metrics.ConfusionMatrix`'s with the official evaluator's convention ("api": points whose ground truth is
ignored take no part; predicting 0 on a labelled point is a false negative).
"""
from __future__ import annotations

import numpy as np
import torch

from . import distributed


def confusion_add(conf: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor) -> None:
    """conf [C,C] (rows = prediction, columns = ground truth, as `ConfusionMatrix`) += counts, on conf's device."""
    c = conf.shape[0]
    conf += torch.bincount(pred.reshape(-1).long() * c + gt.reshape(-1).long(), minlength=c * c).view(c, c)


class Evaluator:
    def __init__(self, num_classes: int, ignore, device, pixel: bool = True, knn: bool = False):
        self.c, self.ignore = num_classes, list(ignore)
        z = lambda: torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)  # noqa: E731
        self.conf = {"point": z()}
        if pixel:
            self.conf["pixel"] = z()
        if knn:
            self.conf["point_knn"] = z()

    def add_batch(self, logits: torch.Tensor, batch: dict, mode: str, knn: dict | None = None) -> dict:
        """Accumulate one batch; returns the per-point predictions {"point": [tensors], "point_knn": [...]}."""
        out = {k: [] for k in self.conf if k != "pixel"}
        pred = logits.argmax(1)
        dev = pred.device
        if mode != "range":  # point logits [B,C,N]
            for b in range(pred.shape[0]):
                n = int(batch["num_points"][b])
                p, gt = pred[b, :n], batch["points_label"][b, :n].to(dev)
                if batch["has_labels"][b]:
                    confusion_add(self.conf["point"], p, gt)
                out["point"].append(p)
            return out
        mask = batch["mask"].to(dev)
        label = batch["label"].to(dev)
        if "pixel" in self.conf:
            confusion_add(self.conf["pixel"], pred[mask], label[mask])
        for b in range(pred.shape[0]):
            n = int(batch["num_points"][b])
            px, py = batch["px"][b, :n].to(dev), batch["py"][b, :n].to(dev)
            gt = batch["points_label"][b, :n].to(dev)
            plain = point_labels(pred[b], px, py)
            out["point"].append(plain)
            labelled = bool(batch["has_labels"][b])
            if labelled:
                confusion_add(self.conf["point"], plain, gt)
            if knn is not None:
                refined = knn_labels(pred[b], batch["proj_range"][b].to(dev), batch["unproj_range"][b, :n].to(dev),
                                     px, py, knn, self.c)
                out["point_knn"].append(refined)
                if labelled:
                    confusion_add(self.conf["point_knn"], refined, gt)
        return out

    def all_reduce(self, ctx: distributed.Context) -> None:
        for v in self.conf.values():
            distributed.all_reduce_sum(v, ctx)

    def matrix(self, kind: str = "point"):
        from ..metrics import ConfusionMatrix
        cm = ConfusionMatrix(self.c, self.ignore, convention="api")
        cm.matrix = self.conf[kind].cpu().numpy().astype(np.int64)
        return cm

    def summary(self, names) -> dict:
        """{"miou_<kind>": float, "acc_<kind>": float, "iou_<kind>": {class name: IoU}} for each kind."""
        out = {}
        for kind, conf in self.conf.items():
            if conf.sum() == 0:
                continue
            cm = self.matrix(kind)
            iou = cm.iou()
            out[f"miou_{kind}"], out[f"acc_{kind}"] = cm.miou(), cm.accuracy()
            out[f"iou_{kind}"] = {names[i]: float(iou[i]) for i in cm.include}
        return out


def point_labels(pred_img: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Each point takes its pixel's label; points without a pixel (px = -1) get 0."""
    out = torch.zeros(px.shape[0], dtype=torch.int64, device=pred_img.device)
    ok = px >= 0
    out[ok] = pred_img[py[ok], px[ok]]
    return out


def knn_labels(pred_img, proj_range, unproj_range, px, py, knn: dict, num_classes: int) -> torch.Tensor:
    from ..postproc import knn_refine
    out = knn_refine(proj_range, unproj_range, pred_img, px, py, num_classes=num_classes, **knn)
    return out if isinstance(out, torch.Tensor) else torch.from_numpy(out)
