"""`ConfusionMatrix`: point/pixel confusion counts and IoU, mIoU and accuracy as SemanticKITTI's evaluators.

The matrix is int64 [C,C] with **rows = prediction, columns = ground truth** (as both references). Two conventions
for the ignored classes (train id 0 by default):

- ``convention="api"`` (default; semantic-kitti-api `np_ioueval`, the official benchmark): only the ignored
  *columns* (ground truth) are zeroed, so predicting an ignored class on a labelled point is a false negative of
  its true class.
- ``convention="bonnetal"`` (lidar-bonnetal `iouEval`, used in RangeNet++ training logs): rows *and* columns are
  zeroed, so predicting class 0 on a labelled point is not counted at all.

Both: ``IoU_c = tp / (tp + fp + fn + 1e-15)``, mIoU = mean over the non-ignored classes (classes absent from both
prediction and ground truth count as 0), accuracy = ``tp.sum() / (tp[inc].sum() + fp[inc].sum() + 1e-15)``.
"""
from __future__ import annotations

import sys

import numpy as np

CONVENTIONS = ("api", "bonnetal")


def _torch():
    return sys.modules.get("torch")


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore=(0,), convention: str = "api"):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        self.num_classes = int(num_classes)
        self.ignore = tuple(sorted(int(i) for i in ignore))
        if any(not 0 <= i < self.num_classes for i in self.ignore):
            raise ValueError(f"ignore ids {self.ignore} outside 0..{self.num_classes - 1}")
        self.include = tuple(c for c in range(self.num_classes) if c not in self.ignore)
        self.convention = convention
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    # ------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        self.matrix[...] = 0

    def add_counts(self, counts) -> "ConfusionMatrix":
        """Add a matrix of counts int [C,C] (rows = prediction, columns = ground truth) accumulated elsewhere, e.g.
        on a GPU during validation or with a lookup table over prediction files."""
        counts = np.asarray(counts.cpu() if hasattr(counts, "cpu") else counts)
        if counts.shape != self.matrix.shape:
            raise ValueError(f"counts of shape {counts.shape}, expected {self.matrix.shape}")
        self.matrix += counts.astype(np.int64)
        return self

    def update(self, pred, gt) -> "ConfusionMatrix":
        """Add predictions and ground truth (same number of elements, ids in 0..C-1; numpy arrays or torch
        tensors on any device, counted there with bincount)."""
        torch = _torch()
        C = self.num_classes
        if torch is not None and (isinstance(pred, torch.Tensor) or isinstance(gt, torch.Tensor)):
            pred = torch.as_tensor(pred).reshape(-1)
            gt = torch.as_tensor(gt, device=pred.device).reshape(-1)
            self._check_len(pred.numel(), gt.numel())
            if pred.numel() == 0:
                return self
            pred = pred.long()
            gt = gt.long()
            lo, hi, glo, ghi = torch.stack([pred.min(), pred.max(), gt.min(), gt.max()]).tolist()
            self._check_range(lo, hi, glo, ghi)
            counts = torch.bincount(pred * C + gt, minlength=C * C)
            self.matrix += counts.cpu().numpy().reshape(C, C)
            return self
        pred = np.asarray(pred).reshape(-1)
        gt = np.asarray(gt).reshape(-1)
        self._check_len(pred.size, gt.size)
        if pred.size == 0:
            return self
        for name, a in (("prediction", pred), ("ground truth", gt)):
            if not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{name} ids must be integers, got dtype {a.dtype}")
        self._check_range(int(pred.min()), int(pred.max()), int(gt.min()), int(gt.max()))
        idx = pred.astype(np.intp) * C
        idx += gt
        self.matrix += np.bincount(idx, minlength=C * C).reshape(C, C)
        return self

    def _check_len(self, n_pred, n_gt):
        if n_pred != n_gt:
            raise ValueError(f"prediction has {n_pred} elements but ground truth has {n_gt}")

    def _check_range(self, lo, hi, glo, ghi):
        C = self.num_classes
        if lo < 0 or hi >= C:
            raise ValueError(f"prediction ids must lie in 0..{C - 1}, got {lo}..{hi}")
        if glo < 0 or ghi >= C:
            raise ValueError(f"ground-truth ids must lie in 0..{C - 1}, got {glo}..{ghi}")

    # ------------------------------------------------------------------ merging
    def _check_compatible(self, other):
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        if (other.num_classes, other.ignore, other.convention) != (self.num_classes, self.ignore, self.convention):
            raise ValueError("cannot merge confusion matrices with different classes, ignore or convention")
        return None

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add `other`'s counts into this matrix (in place); returns self."""
        if self._check_compatible(other) is NotImplemented:
            raise TypeError(f"cannot merge {type(other).__name__} into ConfusionMatrix")
        self.matrix += other.matrix
        return self

    def __iadd__(self, other):
        return self.merge(other)

    def __add__(self, other):
        if self._check_compatible(other) is NotImplemented:
            return NotImplemented
        return self.copy().merge(other)

    def copy(self) -> "ConfusionMatrix":
        new = ConfusionMatrix(self.num_classes, self.ignore, self.convention)
        new.matrix = self.matrix.copy()
        return new

    def all_reduce(self, group=None) -> "ConfusionMatrix":
        """Sum the matrices of all processes (torch.distributed, when initialised; otherwise a no-op)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = "cpu"
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        t = torch.from_numpy(self.matrix.copy()).to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        self.matrix = t.cpu().numpy().astype(np.int64)
        return self

    # ------------------------------------------------------------------ statistics
    def stats(self):
        """(tp, fp, fn) int64 [C] after zeroing the ignored columns (and rows for "bonnetal")."""
        conf = self.matrix.copy()
        ign = list(self.ignore)
        conf[:, ign] = 0
        if self.convention == "bonnetal":
            conf[ign, :] = 0
        tp = np.diag(conf).copy()
        fp = conf.sum(axis=1) - tp
        fn = conf.sum(axis=0) - tp
        return tp, fp, fn

    def iou(self) -> np.ndarray:
        """Per-class IoU, float64 [C] (ignored classes are reported as computed, normally 0)."""
        tp, fp, fn = self.stats()
        return tp / (tp + fp + fn + 1e-15)

    def miou(self) -> float:
        tp, fp, fn = self.stats()
        inc = list(self.include)
        return float((tp[inc] / (tp[inc] + fp[inc] + fn[inc] + 1e-15)).mean())

    def accuracy(self) -> float:
        tp, fp, _ = self.stats()
        inc = list(self.include)
        return float(tp.sum() / (tp[inc].sum() + fp[inc].sum() + 1e-15))

    def gt_counts(self) -> np.ndarray:
        """Number of ground-truth points per class (column sums of the raw matrix), int64 [C]."""
        return self.matrix.sum(axis=0)

    def to_dict(self, names=None) -> dict:
        names = names or [str(c) for c in range(self.num_classes)]
        iou = self.iou()
        return {"convention": self.convention, "ignore": list(self.ignore), "miou": self.miou(),
                "accuracy": self.accuracy(),
                "iou": {names[c]: float(iou[c]) for c in self.include},
                "points": {names[c]: int(n) for c, n in enumerate(self.gt_counts())},
                "confusion": self.matrix.tolist()}
