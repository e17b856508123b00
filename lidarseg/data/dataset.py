"""`SemanticKITTI`: a torch Dataset over `root/sequences/NN/{velodyne/*.bin, labels/*.label}` returning the batch
dict of docs/architecture.md, and `collate` for batches of scans with different point counts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from .augment import PointAugmentation, rng_for
from .io import read_label, read_scan
from .labels import LabelMap
from .projection import SensorGeometry, normalised_input, spherical_projection

#: RangeNet++'s input statistics (range, x, y, z, remission), identical in all its arch yamls.
RANGENET_MEAN = (12.12, 10.88, 0.23, -1.04, 0.21)
RANGENET_STD = (12.32, 11.47, 6.91, 0.86, 0.16)

IMAGE_KEYS = ("input", "mask", "label", "proj_range")
POINT_KEYS = {"px": -1, "py": -1, "unproj_range": -1, "points_label": 0, "xyz": 0, "remission": 0}


def sequence_name(seq) -> str:
    """Sequence id (int 8 or str "08") -> directory name "08"."""
    if isinstance(seq, (int, np.integer)) and not isinstance(seq, bool):
        return f"{int(seq):02d}"
    if isinstance(seq, str) and seq:
        return seq
    raise ConfigError(f"sequences: expected integers or names like '08', got {seq!r}")


def parse_normalization(cfg) -> tuple[np.ndarray, np.ndarray]:
    """None (RangeNet++'s values) or {mean: [5], std: [5]} -> (mean, std) float32 [5] each."""
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"normalization: expected a mapping with keys mean and std, got {cfg!r}")
    unknown = sorted(set(cfg) - {"mean", "std"})
    if unknown:
        raise ConfigError(f"normalization: unknown keys {unknown}; valid keys: ['mean', 'std']")
    out = []
    for key, default in (("mean", RANGENET_MEAN), ("std", RANGENET_STD)):
        value = cfg.get(key, default)
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"normalization.{key}: expected 5 numbers, got {value!r}") from None
        if arr.shape != (5,) or not np.all(np.isfinite(arr)):
            raise ConfigError(f"normalization.{key}: expected 5 finite numbers (range, x, y, z, remission), "
                              f"got {value!r}")
        out.append(arr.astype(np.float32))
    if np.any(out[1] <= 0):
        raise ConfigError(f"normalization.std: all values must be > 0, got {out[1].tolist()}")
    return out[0], out[1]


def list_scans(root, sequences, with_labels: bool) -> list[tuple[str, str, Path, Path | None]]:
    """[(sequence, scan stem, scan path, label path or None)] sorted by sequence then stem. Scans and labels are
    paired by file stem; a missing or extra label file is a DataError naming it."""
    root = Path(root)
    if not (root / "sequences").is_dir():
        raise DataError(f"dataset root {root}: no 'sequences' directory (expected root/sequences/NN/velodyne/*.bin)")
    items = []
    for seq in sequences:
        name = sequence_name(seq)
        seq_dir = root / "sequences" / name
        if not seq_dir.is_dir():
            raise DataError(f"sequence directory not found: {seq_dir}")
        velo = seq_dir / "velodyne"
        scans = sorted(velo.glob("*.bin")) if velo.is_dir() else []
        if not scans:
            raise DataError(f"no scans in {velo} (expected NNNNNN.bin files)")
        if not with_labels:
            items.extend((name, p.stem, p, None) for p in scans)
            continue
        label_dir = seq_dir / "labels"
        if not label_dir.is_dir():
            raise DataError(f"label directory not found: {label_dir} (needed for labelled splits)")
        labels = {p.stem: p for p in label_dir.glob("*.label")}
        stems = {p.stem for p in scans}
        missing = [p for p in scans if p.stem not in labels]
        if missing:
            raise DataError(f"missing label file {label_dir / (missing[0].stem + '.label')} for scan {missing[0]}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        extra = sorted(s for s in labels if s not in stems)
        if extra:
            raise DataError(f"label file {labels[extra[0]]} has no scan {velo / (extra[0] + '.bin')}"
                            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
        items.extend((name, p.stem, p, labels[p.stem]) for p in scans)
    return items


class SemanticKITTI(Dataset):
    """Scans of `split` ("train", "valid", "test", or any split of the label config) as range-image samples.

    root: dataset root holding sequences/NN/. label_map: LabelMap, path to a label YAML, or None (the default
    config). sequences: overrides the split's sequence list. sensor: SensorGeometry, preset name or dict (height,
    width, fov_up, fov_down). normalization: {mean, std} (5 values each; RangeNet++'s by default).
    augmentation: PointAugmentation or its config dict (None = off). labels: read labels (None = all splits except
    "test"). unknown_labels: "error" or "zero" for raw ids missing from the learning_map. parallel: numba threads
    for the projection (never inside DataLoader workers).
    """

    def __init__(self, root, split: str, label_map=None, sequences=None, sensor=None, normalization=None,
                 augmentation=None, labels: bool | None = None, unknown_labels: str = "error",
                 parallel: bool = False):
        self.root = Path(root)
        self.split = split
        self.label_map = label_map if isinstance(label_map, LabelMap) else LabelMap.from_yaml(label_map)
        self.sequences = [sequence_name(s) for s in
                          (sequences if sequences is not None else self.label_map.sequences(split))]
        if not self.sequences:
            raise ConfigError(f"split {split!r}: no sequences")
        self.sensor = SensorGeometry.from_config(sensor)
        self.mean, self.std = parse_normalization(normalization)
        if augmentation is None or isinstance(augmentation, PointAugmentation):
            self.augmentation = augmentation
        else:
            self.augmentation = PointAugmentation(augmentation)
        if unknown_labels not in ("error", "zero"):
            raise ConfigError(f"unknown_labels: expected 'error' or 'zero', got {unknown_labels!r}")
        self.unknown_labels = unknown_labels
        self.has_labels = (split != "test") if labels is None else bool(labels)
        self.parallel = parallel
        self.epoch = 0
        self.items = list_scans(self.root, self.sequences, self.has_labels)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self):
        return (f"SemanticKITTI(root={str(self.root)!r}, split={self.split!r}, sequences={self.sequences}, "
                f"scans={len(self)}, labels={self.has_labels}, sensor={self.sensor})")

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of `epoch` (call before each epoch; see lidarseg.data.augment)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        seed = self.augmentation.seed
        if seed is None:
            seed = torch.initial_seed()  # per worker and epoch inside DataLoader workers
        return rng_for(seed, self.epoch, index)

    def load(self, index: int):
        """(points float32 [N,4], train ids int64 [N] (zeros without labels)) of scan `index`, not augmented."""
        _, _, scan_path, label_path = self.items[index]
        points = read_scan(scan_path)
        if label_path is None:
            return points, np.zeros(points.shape[0], np.int64)
        raw = read_label(label_path, num_points=points.shape[0])
        return points, self.label_map.to_train(raw, source=str(label_path), unknown=self.unknown_labels)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"scan index {index} out of range for {len(self)} scans")
        index = index % len(self)
        seq, stem, _, _ = self.items[index]
        points, point_labels = self.load(index)
        keep = None
        if self.augmentation is not None and self.augmentation.active:
            points, keep = self.augmentation(points, self._rng(index))
        g = self.sensor
        proj = spherical_projection(points, g.height, g.width, g.fov_up, g.fov_down, keep=keep,
                                    parallel=self.parallel)
        mask = proj.mask
        label_img = np.where(mask, point_labels[np.maximum(proj.idx, 0)], 0)
        return {
            "input": torch.from_numpy(normalised_input(proj, self.mean, self.std)),
            "mask": torch.from_numpy(mask),
            "label": torch.from_numpy(label_img.astype(np.int64, copy=False)),
            "proj_range": torch.from_numpy(proj.range),
            "px": torch.from_numpy(proj.px),
            "py": torch.from_numpy(proj.py),
            "unproj_range": torch.from_numpy(proj.unproj_range),
            "points_label": torch.from_numpy(point_labels.astype(np.int64, copy=False)),
            "xyz": torch.from_numpy(np.ascontiguousarray(points[:, :3])),
            "remission": torch.from_numpy(np.ascontiguousarray(points[:, 3])),
            "num_points": int(points.shape[0]),
            "sequence": seq,
            "scan": stem,
            "has_labels": self.has_labels,
        }


def pad_points(samples, fills: dict) -> dict:
    """The per-point entries `fills` ({key: pad value}) of `samples`, each padded to the largest `num_points` of the
    batch -> [B,Nmax,...], plus `num_points` int64 [B] and `point_mask` bool [B,Nmax] (True for real points)."""
    counts = [int(s["num_points"]) for s in samples]
    nmax = max(counts)
    out = {}
    for key, fill in fills.items():
        first = samples[0][key]
        buf = torch.full((len(samples), nmax, *first.shape[1:]), fill, dtype=first.dtype)
        for b, s in enumerate(samples):
            buf[b, :counts[b]] = s[key]
        out[key] = buf
    out["num_points"] = torch.tensor(counts, dtype=torch.int64)
    out["point_mask"] = torch.arange(nmax)[None, :] < out["num_points"][:, None]
    return out


def collate(samples: list[dict]) -> dict:
    """Batch samples of `SemanticKITTI`: image entries stacked to [B,...]; per-point entries padded to the largest N
    of the batch (px, py, unproj_range with -1; points_label, xyz, remission with 0); `num_points` int64 [B] and
    `point_mask` bool [B,Nmax] record the counts; strings and flags become lists."""
    if not samples:
        raise ValueError("collate: empty batch")
    batch = {k: torch.stack([s[k] for s in samples]) for k in IMAGE_KEYS}
    batch.update(pad_points(samples, POINT_KEYS))
    for key in ("sequence", "scan", "has_labels"):
        batch[key] = [s[key] for s in samples]
    return batch
