"""Dataset statistics: class frequencies (raw and train ids) and per-channel mean/std of the 5-channel network input
(range, x, y, z, remission) over projected pixels, as a YAML that a config can include."""
from __future__ import annotations

import datetime

import numpy as np
import yaml

from .io import atomic_write_bytes, split_label
from .projection import SensorGeometry, spherical_projection
from .sources import ScanSource, build_source


class _Moments:
    """Per-channel count, mean and M2 (sum of squared deviations), merged scan by scan in float64 (Chan et al.)."""

    def __init__(self, channels: int):
        self.n = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, values: np.ndarray) -> None:
        """values [K, channels]."""
        k = values.shape[0]
        if k == 0:
            return
        v = values.astype(np.float64)
        mean = v.mean(0)
        m2 = ((v - mean) ** 2).sum(0)
        delta = mean - self.mean
        total = self.n + k
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.n * k / total)
        self.n = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


def compute_stats(root, split: str = "train", label_map=None, sequences=None, sensor=None,
                  max_scans: int | None = None, labels: bool | None = None, progress: bool = False,
                  source=None) -> dict:
    """Statistics of `split` (or `sequences`) of the dataset at `root`.

    Returns a dict with `normalization: {mean: [5], std: [5]}` (population std over the projected pixels of every
    scan, no augmentation), and when labels are read `content` (fraction of points per raw id, as in the label
    config), `content_train` (per train id) and `counts` (points per raw and train id), plus `source` (what was
    measured). Raw ids missing from the label config are counted under `unknown_points` and left out of `content`.
    `source`: a ScanSource or a source name (default semantic-kitti); sensor None = the source's geometry.
    """
    src = source if isinstance(source, ScanSource) else build_source(source, root, label_map=label_map)
    lm = src.label_map
    seqs = src.resolve(split, sequences)
    geom = SensorGeometry.from_config(sensor if sensor is not None else src.sensor)
    with_labels = src.split_has_labels(split) if labels is None else bool(labels)
    items = src.list_scans(seqs, with_labels)
    if max_scans is not None:
        items = items[:max_scans]
    moments = _Moments(5)
    raw_counts = np.zeros(1 << 16, np.int64)
    num_points = 0
    iterator = items
    if progress:
        from tqdm import tqdm
        iterator = tqdm(items, desc="stats", unit="scan")
    for item in iterator:
        points = src.read_points(item)
        num_points += points.shape[0]
        proj = spherical_projection(points, geom.height, geom.width, geom.fov_up, geom.fov_down)
        m = proj.mask
        moments.add(np.concatenate([proj.range[m][:, None], proj.xyz[m], proj.remission[m][:, None]], 1))
        if item.labels is not None:
            sem, _ = split_label(src.read_raw_labels(item, num_points=points.shape[0]))
            raw_counts += np.bincount(sem, minlength=1 << 16)
    out = {
        "normalization": {"mean": [round(float(v), 6) for v in moments.mean],
                          "std": [round(float(v), 6) for v in moments.std]},
    }
    if with_labels:
        known = np.array(sorted(lm.raw_names), dtype=np.int64)
        unknown_points = int(raw_counts.sum() - raw_counts[known].sum())
        total = max(int(raw_counts.sum()), 1)
        train_counts = np.zeros(lm.num_classes, np.int64)
        for raw in known:
            train = lm.learning_map.get(int(raw))
            if train is not None:
                train_counts[train] += raw_counts[raw]
        out["content"] = {int(r): float(raw_counts[r] / total) for r in known}
        out["content_train"] = {c: float(train_counts[c] / total) for c in range(lm.num_classes)}
        out["counts"] = {"raw": {int(r): int(raw_counts[r]) for r in known},
                         "train": {c: int(train_counts[c]) for c in range(lm.num_classes)},
                         "unknown_points": unknown_points}
    out["source"] = {
        "data": str(root), "format": src.name, "split": split, "sequences": seqs, "scans": len(items),
        "points": int(num_points),
        "pixels": int(moments.n), "sensor": geom.to_dict(), "label_config": lm.source,
        "date": datetime.date.today().isoformat(),
        "channels": ["range", "x", "y", "z", "remission"],
    }
    return out


def dump_stats(stats: dict) -> str:
    """The statistics as YAML text (keys in the order above)."""
    header = ("# lidarseg stats: `normalization` can be used as a config's data mean/std, `content` replaces the\n"
              "# label config's content (class frequencies per raw id, used for the RangeNet++ class weights).\n")
    return header + yaml.safe_dump(stats, sort_keys=False, default_flow_style=None, width=110)


def write_stats(path, stats: dict) -> None:
    """Write the statistics YAML atomically."""
    atomic_write_bytes(path, dump_stats(stats).encode())
