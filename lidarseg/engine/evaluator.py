"""Validation metrics of a batch stream: pixel IoU on the range images and point IoU after back-projection, plain
(each point takes its pixel's label) and with RangeNet++'s KNN; summed across ranks.

Confusion matrices are int64 [C,C] tensors (rows = prediction, columns = ground truth), accumulated on the model's
device with bincount (no host sync per batch) and summed across ranks; the statistics are
`lidarseg.metrics.ConfusionMatrix`'s with the official evaluator's convention ("api": points whose ground truth is
ignored take no part; predicting 0 on a labelled point is a false negative).
"""
from __future__ import annotations

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

    def add_batch(self, logits: torch.Tensor, batch: dict, representation, knn: dict | None = None) -> dict:
        """Accumulate one batch of logits of `representation` (a Representation or its name); returns the
        per-point predictions {"point": [tensors], "point_knn": [...]} of each scan, in the scan's point order."""
        from ..data.representation import Representation, get_representation
        rep = representation if isinstance(representation, Representation) else get_representation(representation)
        out = {k: [] for k in self.conf if k != "pixel"}
        pred = logits.argmax(1)
        pairs = rep.pixel_pairs(pred, batch) if "pixel" in self.conf else None
        if pairs is not None:
            confusion_add(self.conf["pixel"], *pairs)
        for b in range(pred.shape[0]):
            labelled = bool(batch["has_labels"][b])
            plain, gt = rep.point_predictions(pred, batch, b, None, self.c)
            out["point"].append(plain)
            if labelled:
                confusion_add(self.conf["point"], plain, gt)
            if knn is not None and "point_knn" in self.conf:
                refined, gt = rep.point_predictions(pred, batch, b, knn, self.c)
                out["point_knn"].append(refined)
                if labelled:
                    confusion_add(self.conf["point_knn"], refined, gt)
        return out

    def add_points(self, kind: str, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Accumulate the point labels of one scan (pred, gt: int64 [N]) into the `kind` matrix."""
        confusion_add(self.conf[kind], pred, gt.to(pred.device))

    def all_reduce(self, ctx: distributed.Context) -> None:
        for v in self.conf.values():
            distributed.all_reduce_sum(v, ctx)

    def matrix(self, kind: str = "point"):
        from ..metrics import ConfusionMatrix
        return ConfusionMatrix(self.c, self.ignore, convention="api").add_counts(self.conf[kind])

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
