"""`SemanticKITTI`: a torch Dataset of range-image samples over the scans of any scan source (SemanticKITTI's
`root/sequences/NN/{velodyne/*.bin, labels/*.label}` by default; `lidarseg.data.sources`) returning the batch dict
of docs/architecture.md, and `collate` for batches of scans with different point counts."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from .augment import EpochStream, PointAugmentation, SharedEpoch, rng_for
from .mixing import build_mixing, split_augment_config
from .projection import SensorGeometry, normalised_input, rows_projection, spherical_projection
from .sources import ScanSource, build_source

#: RangeNet++'s input statistics (range, x, y, z, remission), identical in all its arch yamls.
RANGENET_MEAN = (12.12, 10.88, 0.23, -1.04, 0.21)
RANGENET_STD = (12.32, 11.47, 6.91, 0.86, 0.16)

IMAGE_KEYS = ("input", "mask", "label", "proj_range")
POINT_KEYS = {"px": -1, "py": -1, "unproj_range": -1, "points_label": 0, "xyz": 0, "remission": 0}


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


class SemanticKITTI(EpochStream, Dataset):
    """Scans of `split` ("train", "valid", "test", or any split of the label config) as range-image samples.

    root: dataset root (for SemanticKITTI: holding sequences/NN/). label_map: LabelMap, path to a label YAML, or
    None (the source's label config). source: a ScanSource, or the name of one (default "semantic-kitti") built
    over `root`; sensor None = the source's default geometry. rows: "elevation" (RangeNet++'s projection) or "ring"
    (each point's row from the source's laser index: `ScanSource.read_rows`, nuScenes). sequences: overrides the
    split's sequence list. sensor: SensorGeometry, preset name or dict (height,
    width, fov_up, fov_down). normalization: {mean, std} (5 values each; RangeNet++'s by default).
    augmentation: PointAugmentation or its config dict (None = off; the dict may hold the scene-mixing parts of
    `lidarseg.data.mixing`). labels: read labels (None = all splits except
    "test"). unknown_labels: "error" or "zero" for raw ids missing from the learning_map. parallel: numba threads
    for the projection (never inside DataLoader workers).
    """

    def __init__(self, root, split: str, label_map=None, sequences=None, sensor=None, normalization=None,
                 augmentation=None, labels: bool | None = None, unknown_labels: str = "error",
                 parallel: bool = False, source=None, rows: str = "elevation"):
        self.root = Path(root)
        self.split = split
        if not isinstance(source, ScanSource):
            source = build_source(source, root, label_map=label_map)
        self.source = source
        self.label_map = source.label_map
        self.sequences = source.resolve(split, sequences)
        if self.sequences is not None and not self.sequences:
            raise ConfigError(f"split {split!r}: no sequences")
        self.sensor = SensorGeometry.from_config(sensor if sensor is not None else source.sensor)
        if rows not in ("elevation", "ring"):
            raise ConfigError(f"rows: expected 'elevation' or 'ring', got {rows!r}")
        self.rows = rows
        self.mean, self.std = parse_normalization(normalization)
        self.mixing = None
        mix_cfg = {}
        if augmentation is None or isinstance(augmentation, PointAugmentation):
            self.augmentation = augmentation
        else:
            point_cfg, mix_cfg = split_augment_config(augmentation)
            self.augmentation = PointAugmentation(point_cfg)
        if unknown_labels not in ("error", "zero"):
            raise ConfigError(f"unknown_labels: expected 'error' or 'zero', got {unknown_labels!r}")
        self.unknown_labels = unknown_labels
        self.has_labels = source.split_has_labels(split) if labels is None else bool(labels)
        self.parallel = parallel
        self._epoch = SharedEpoch()
        self.items = [replace(it, split=split) for it in source.list_scans(self.sequences, self.has_labels)]
        if mix_cfg:
            self.mixing = build_mixing(mix_cfg, self.sensor, source, self.items, rows=self.rows)
        if self.rows == "ring" and self.items:  # at start-up: a source without rings, a wrong height
            source.read_rows(self.items[0], self.sensor.height)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self):
        return (f"SemanticKITTI(root={str(self.root)!r}, split={self.split!r}, sequences={self.sequences}, "
                f"scans={len(self)}, labels={self.has_labels}, sensor={self.sensor})")

    def _rng(self, index: int) -> np.random.Generator:
        seed = self.augmentation.seed
        if seed is None:
            seed = torch.initial_seed()  # per worker and epoch inside DataLoader workers
        return rng_for(seed, self.epoch, index)

    def load(self, index: int):
        """(points float32 [N,4], train ids int64 [N] (zeros without labels)) of scan `index`, not augmented."""
        item = self.items[index]
        points = self.source.read_points(item)
        return points, self.source.read_train_labels(item, points.shape[0], unknown=self.unknown_labels)

    def _mix(self, points, labels, rows, rng):
        """Scene mixing with a partner scan of this split drawn from the sample's stream `rng`."""
        partner = partner_rows = None
        if self.mixing.needs_partner:
            j = int(rng.integers(len(self)))
            partner = self.load(j)
            if rows is not None:
                partner_rows = self.source.read_rows(self.items[j], self.sensor.height)
        out = self.mixing(points, labels, rng, partner=partner, rows=rows, partner_rows=partner_rows)
        return out.points, out.labels, out.rows

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"scan index {index} out of range for {len(self)} scans")
        index = index % len(self)
        item = self.items[index]
        seq, stem = item.sequence, item.scan
        points, point_labels = self.load(index)
        g = self.sensor
        rows = self.source.read_rows(item, g.height) if self.rows == "ring" else None
        keep = None
        if self.augmentation is not None and (self.augmentation.active or self.mixing is not None):
            rng = self._rng(index)
            if self.mixing is not None:
                points, point_labels, rows = self._mix(points, point_labels, rows, rng)
            if self.augmentation.active:
                points, keep = self.augmentation(points, rng)
        if self.rows == "ring":
            proj = rows_projection(points, rows, g.height, g.width, keep=keep)
        else:
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
