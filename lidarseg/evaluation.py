"""Point-level evaluation of prediction files, with the numbers of semantic-kitti-api's evaluate_semantics.py.

Labels: ``DATA/sequences/NN/labels/*.label``; predictions: ``PRED/sequences/NN/predictions/*.label`` (raw
SemanticKITTI ids, one uint32 per point). Files are paired by stem within each sequence; a missing, extra or
wrong-length prediction is a `DataError` naming the files (the official script pairs by sorted position and only
checks the total count, which gives the same pairs when the stems match). Both files are masked with ``& 0xFFFF`` and
mapped through ``learning_map``; ids the map does not know count as class 0, as the official LUT does (a warning
says how many, since it usually means train ids were written instead of raw ids).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataclasses import replace

from .data.labels import LabelMap
from .data.sources import ScanItem, ScanSource, build_source
from .data.sources.kitti import kitti_sequence_name
from .errors import DataError
from .metrics import ConfusionMatrix


@dataclass
class ScanPair:
    sequence: str
    stem: str
    label: Path
    prediction: Path
    item: ScanItem | None = None


@dataclass
class EvalResult:
    confusion: ConfusionMatrix
    names: list
    split: str
    sequences: list
    num_scans: int = 0
    num_points: int = 0
    unknown_pred: int = 0
    unknown_gt: int = 0
    warnings: list = field(default_factory=list)

    @property
    def miou(self) -> float:
        return self.confusion.miou()

    @property
    def accuracy(self) -> float:
        return self.confusion.accuracy()

    def paper_line(self) -> str:
        """19 class IoUs, mIoU, accuracy, each .3f, comma-separated (semantic-kitti-api's paper-table line)."""
        iou = self.confusion.iou()
        vals = [f"{iou[c]:.3f}" for c in self.confusion.include]
        return ",".join(vals + [f"{self.miou:.3f}", f"{self.accuracy:.3f}"])

    def official_lines(self) -> list[str]:
        """The summary lines exactly as evaluate_semantics.py prints them."""
        iou = self.confusion.iou()
        lines = ["Validation set:", f"Acc avg {self.accuracy:.3f}", f"IoU avg {self.miou:.3f}"]
        lines += [f"IoU class {c} [{self.names[c]}] = {iou[c]:.3f}" for c in self.confusion.include]
        lines += ["*" * 80, "below can be copied straight for paper table", self.paper_line()]
        return lines

    def table(self) -> str:
        iou = self.confusion.iou()
        counts = self.confusion.gt_counts()
        width = max(len(n) for n in self.names)
        out = [f"{'id':>3}  {'class':<{width}}  {'IoU':>6}  {'points':>12}"]
        absent = 0
        for c in self.confusion.include:
            mark = ""
            if counts[c] == 0:
                mark, absent = "  absent", absent + 1
            out.append(f"{c:>3}  {self.names[c]:<{width}}  {100 * iou[c]:6.2f}  {int(counts[c]):>12}{mark}")
        out.append(f"{'':>3}  {'mIoU':<{width}}  {100 * self.miou:6.2f}")
        out.append(f"{'':>3}  {'accuracy':<{width}}  {100 * self.accuracy:6.2f}")
        out.append(f"{'':>3}  {'all points':<{width}}  {'':>6}  {int(counts.sum()):>12}")
        if absent:
            out.append(f"absent: {absent} class(es) without a labelled point; their IoU counts as 0 in the mIoU "
                       "(as the official evaluator)")
        return "\n".join(out)

    def to_dict(self) -> dict:
        d = self.confusion.to_dict(self.names)
        d.update({"split": self.split, "sequences": self.sequences, "num_scans": self.num_scans,
                  "num_points": self.num_points, "unknown_prediction_ids": self.unknown_pred,
                  "unknown_label_ids": self.unknown_gt, "paper_line": self.paper_line()})
        return d


def sequence_dir(seq) -> str:
    """Sequence given on the command line or in a split (8, "8" or "08") -> its SemanticKITTI directory name "08"
    (`lidarseg.data.sources.kitti.kitti_sequence_name`)."""
    return kitti_sequence_name(seq)


def _source(source, data_root, label_map=None) -> ScanSource:
    return source if isinstance(source, ScanSource) else build_source(source, data_root, label_map=label_map)


def find_pairs(data_root, pred_root, sequences, source=None, split: str | None = None) -> list[ScanPair]:
    """Pair every labelled scan with its prediction, sequence by sequence (sorted by scan name); `source` (a
    ScanSource or name, default semantic-kitti) owns both layouts."""
    src = _source(source, data_root)
    pairs = []
    problems = []
    for seq in sequences:
        name = src.sequence_name(seq)
        items = src.label_items([name], split)
        present = set(src.prediction_files(pred_root, [name], split).get(name, []))
        first = src.prediction_path(pred_root, items[0])
        if not present and not first.parent.is_dir():
            raise DataError(f"prediction directory not found: {first.parent} (expected {first.name} and the other "
                            f"predictions of {name} there)")
        where = first.parent
        missing = [it for it in items if it.scan not in present]
        extra = sorted(present - {it.scan for it in items})
        if missing:
            problems.append(f"{len(missing)} predictions missing in {where}: "
                            + ", ".join(src.prediction_path(pred_root, it).name for it in missing[:10])
                            + (" ..." if len(missing) > 10 else ""))
        if extra:
            names = [src.prediction_path(pred_root, replace(items[0], scan=s, token=s)).name for s in extra[:10]]
            problems.append(f"{len(extra)} predictions in {where} have no label in {items[0].labels.parent}: "
                            + ", ".join(names) + (" ..." if len(extra) > 10 else ""))
        pairs += [ScanPair(name, it.scan, it.labels, src.prediction_path(pred_root, it), it)
                  for it in items if it.scan in present]
    if problems:
        raise DataError("predictions do not match the labels:\n  " + "\n  ".join(problems))
    return pairs


def evaluate(data_root, pred_root, split: str = "valid", label_map: LabelMap | None = None, sequences=None,
             convention: str = "api", progress: bool = True, source=None) -> EvalResult:
    """Evaluate all prediction files of `split` (or `sequences`) against the labels; `source` (ScanSource or name,
    default semantic-kitti) reads labels and predictions in its format."""
    src = _source(source, data_root, label_map)
    label_map = src.label_map
    seq_names = src.resolve(split, sequences)
    pairs = find_pairs(data_root, pred_root, seq_names, src, split)
    C = label_map.num_classes
    ext = C + 1                      # an extra class C collects ids the learning_map does not know
    train = label_map.to_train(np.arange(1 << 16, dtype=np.uint32), unknown="zero").astype(np.intp)
    known = np.zeros(1 << 16, dtype=bool)
    known[[r for r in label_map.learning_map if 0 <= r < (1 << 16)]] = True
    lut_gt = np.where(known, train, C).astype(np.intp)
    lut_pred = lut_gt * ext
    counts = np.zeros(ext * ext, dtype=np.int64)
    cm = ConfusionMatrix(C, label_map.ignore, convention)
    result = EvalResult(cm, list(label_map.names), split, seq_names)
    iterator = pairs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(pairs, desc="evaluating", unit="scan", file=sys.stderr, dynamic_ncols=True)
    raw_predictions = src.prediction_ids == "raw"
    for pair in iterator:
        gt_raw = src.read_raw_labels(pair.item).astype("<u4", copy=False)
        pred_raw = src.read_prediction(pair.prediction)
        if pred_raw.shape[0] != gt_raw.shape[0]:
            raise DataError(f"prediction {pair.prediction} has {pred_raw.shape[0]} points but its label "
                            f"{pair.label} has {gt_raw.shape[0]}")
        # the low 16 bits (& 0xFFFF) of little-endian uint32 are the even uint16 halves: no copy needed
        if raw_predictions:
            idx = lut_pred[pred_raw.astype("<u4", copy=False).view("<u2")[0::2]]
        else:  # train ids (nuScenes-lidarseg); values outside 0..C-1 are unknown
            train_pred = pred_raw.astype(np.intp)
            idx = np.where(train_pred < C, train_pred, C) * ext
        idx += lut_gt[gt_raw.view("<u2")[0::2]]
        counts += np.bincount(idx, minlength=ext * ext)
        result.num_scans += 1
        result.num_points += int(gt_raw.shape[0])
    m = counts.reshape(ext, ext)       # rows = prediction, cols = ground truth
    result.unknown_pred = int(m[C, :].sum())
    result.unknown_gt = int(m[:, C].sum())
    m[0, :] += m[C, :]                 # unknown ids count as class 0, as the official LUT maps them
    m[:, 0] += m[:, C]
    cm.add_counts(m[:C, :C])
    if result.unknown_pred:
        result.warnings.append(
            f"{result.unknown_pred} predicted points carry ids that are not in the learning_map of "
            f"{label_map.source}; they count as class 0 (as in the official evaluator). Predictions must be raw "
            f"SemanticKITTI ids (10 = car), not train ids.")
    if result.unknown_gt:
        result.warnings.append(f"{result.unknown_gt} labelled points carry ids that are not in the learning_map; "
                               f"they count as class 0 (ignored).")
    return result
