"""KPRNet's input pipeline (project spec kprnet.md sections 1.3-1.8), on top of `projection.scan_unfolding`.

Per scan (points float32 [N,4] in file order, optional train-id labels [N]):

1. scan unfolding to 65 x 2049: inverse depth and reflectance images (0 where empty), per point a sub-pixel
   column px in [0, 2049) and its ring index py (`lidarseg.data.projection.scan_unfolding`).
2. bilinear upsampling of both channels to 289 x 4097 with `torch.nn.functional.interpolate(mode="bilinear",
   align_corners=False, antialias=False)`: half-pixel centres and edge clamping, the same arithmetic as OpenCV's
   `cv2.resize(..., INTER_LINEAR)` that KPRNet uses (OpenCV is not a dependency).
3. normalisation ch0 = 25 (inv_depth - 0.4), ch1 = 20 (reflectance - 0.5) (empty pixels become -10).
4. evaluation (`train=False`): the full 289 x 4097 image and every point, px_n = 2 (px/2049 - 0.5),
   py_n = 2 (py/65 - 0.5).
   training (`train=True`): a 289 x 1025 crop at a column offset drawn uniformly from 0..3072 (no wrap across the
   front seam), px_c = (4097 px/2049 - offset)/1025, py_c = py/65; only points with 0 <= px_c <= 1 and
   0 <= py_c <= 1 are kept; px_n = 2 (px_c - 0.5), py_n = 2 (py_c - 0.5); then with probability 0.5 a horizontal
   flip of both image channels and px_n -> -px_n. xyz is never mirrored.
   py is the integer ring index, so py_n points at the top edge of the ring's row, not its centre: the reference's
   half-row offset, kept for parity.
5. the 7 nearest 3D neighbours of every kept point among the kept points (itself included, normally column 0),
   no radius limit, with `scipy.spatial.cKDTree`: exact, C-implemented, O(N log N), about 0.1 s for a 120k-point
   scan, and the very routine the reference uses, so neighbour sets (including tie order) match it. A numba
   brute force would be O(N^2) and a numba grid would be new code to validate for no gain.

Points that `scan_unfolding` could not project (non-finite coordinates or zero range; px = py = -1) are dropped by
the training crop and kept at evaluation (they then sample outside the image, i.e. zero features), with their
non-finite coordinates replaced by 0 so that the k-d tree and KPConv stay finite.

Samples are dicts of torch tensors; `collate_kprnet` pads the per-point entries to the largest point count in the
batch and adds `num_points` and `point_mask` (no fixed 38,000-point cap). See docs/models.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .augment import EpochStream, SharedEpoch
from .dataset import pad_points
from .labels import LabelMap
from .projection import scan_unfolding
from .sources import ScanSource, build_source

__all__ = ["KPRNetGeometry", "KPRNetTransform", "KPRNetDataset", "collate_kprnet", "upsample_bilinear",
           "normalise_channels", "knn_indices", "INV_DEPTH_SHIFT", "INV_DEPTH_SCALE", "REFL_SHIFT", "REFL_SCALE"]

INV_DEPTH_SHIFT, INV_DEPTH_SCALE = 0.4, 25.0
REFL_SHIFT, REFL_SCALE = 0.5, 20.0


class KPRNetGeometry:
    """Image sizes: unfolding `height` x `width` (65 x 2049), upsampled to `out_height` x `out_width`
    (289 x 4097), training crops `crop_width` (1025) wide. Smaller consistent sizes are allowed for tests."""

    def __init__(self, height: int = 65, width: int = 2049, out_height: int = 289, out_width: int = 4097,
                 crop_width: int = 1025):
        for name, v in dict(height=height, width=width, out_height=out_height, out_width=out_width,
                            crop_width=crop_width).items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"kprnet geometry: {name} must be a positive integer, got {v!r}")
        if crop_width > out_width:
            raise ConfigError(f"kprnet geometry: crop_width {crop_width} exceeds out_width {out_width}")
        self.height, self.width = int(height), int(width)
        self.out_height, self.out_width, self.crop_width = int(out_height), int(out_width), int(crop_width)

    @classmethod
    def from_config(cls, cfg: dict | None) -> "KPRNetGeometry":
        cfg = dict(cfg or {})
        valid = ("height", "width", "out_height", "out_width", "crop_width")
        unknown = sorted(set(cfg) - set(valid))
        if unknown:
            raise ConfigError(f"kprnet geometry: unknown keys {unknown}; valid: {list(valid)}")
        return cls(**cfg)

    def __repr__(self):
        return (f"KPRNetGeometry({self.height}x{self.width} -> {self.out_height}x{self.out_width}, "
                f"crop {self.crop_width})")


def upsample_bilinear(image: np.ndarray | torch.Tensor, out_height: int, out_width: int) -> torch.Tensor:
    """[C,H,W] -> float32 [C,out_height,out_width], bilinear with half-pixel centres and edge clamping
    (align_corners=False, no antialiasing): src = (dst + 0.5) * in/out - 0.5, as OpenCV INTER_LINEAR. Computed in
    float64 (OpenCV rounds its source coordinates to float32, which differs by up to ~1e-4 pixel at 4097 wide)."""
    t = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
    # float64: with float32 the source coordinate (dst + 0.5) * scale - 0.5 is off by up to ~1e-4 pixel at x ~ 2000
    t = t.to(torch.float64)[None]
    return F.interpolate(t, size=(out_height, out_width), mode="bilinear", align_corners=False,
                         antialias=False)[0].to(torch.float32)


def normalise_channels(inv_depth, reflectance):
    """KPRNet's input normalisation: (25 (inv_depth - 0.4), 20 (reflectance - 0.5)); works on numpy or torch."""
    return INV_DEPTH_SCALE * (inv_depth - INV_DEPTH_SHIFT), REFL_SCALE * (reflectance - REFL_SHIFT)


def knn_indices(xyz: np.ndarray, k: int = 7, workers: int = 1) -> np.ndarray:
    """Indices int64 [N,k] of the k nearest points of every point (itself included), scipy cKDTree, exact, no
    radius. With fewer than k points the missing columns repeat the point's own index."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, dtype=np.float64)
    n = xyz.shape[0]
    if n == 0:
        return np.zeros((0, k), np.int64)
    kk = min(k, n)
    _, idx = cKDTree(xyz).query(xyz, k=kk, workers=workers)
    idx = np.asarray(idx, dtype=np.int64).reshape(n, kk)
    if kk < k:
        idx = np.concatenate([idx, np.repeat(np.arange(n, dtype=np.int64)[:, None], k - kk, axis=1)], axis=1)
    return idx


class KPRNetTransform:
    """points [N,4] (+ train-id labels [N]) -> KPRNet sample dict.

    `train=True`: random crop and flip (kprnet.md 1.4), drawn from `rng` (a `numpy.random.Generator`);
    `train=False`: full image, all points. `k` neighbours (7), `knn_workers` threads for cKDTree.

    Returned keys: `image` float32 [2,out_height,W] (W = crop_width in training, out_width otherwise), `px`, `py`
    float32 [n] (normalised to [-1,1], grid_sample x/y), `xyz` float32 [n,3], `knn` int64 [n,k],
    `points_label` int64 [n], `point_index` int64 [n] (index of each kept point in the scan), `num_points` (n),
    `crop_offset` (-1 without crop), `flipped` (bool).
    """

    def __init__(self, train: bool, geometry: KPRNetGeometry | None = None, k: int = 7, flip_prob: float = 0.5,
                 knn_workers: int = 1):
        self.train = bool(train)
        self.geometry = geometry or KPRNetGeometry()
        self.k, self.flip_prob, self.knn_workers = int(k), float(flip_prob), int(knn_workers)

    def __call__(self, points: np.ndarray, labels: np.ndarray | None = None,
                 rng: np.random.Generator | None = None) -> dict:
        g = self.geometry
        points = np.asarray(points)
        n_all = points.shape[0]
        if labels is None:
            labels = np.zeros(n_all, np.int64)
        labels = np.asarray(labels).astype(np.int64, copy=False)
        if labels.shape != (n_all,):
            raise DataError(f"kprnet transform: {labels.shape[0]} labels for {n_all} points")
        unf = scan_unfolding(points, height=g.height, width=g.width)
        ch0, ch1 = normalise_channels(unf.inv_depth, unf.reflectance)
        image = upsample_bilinear(np.stack([ch0, ch1]).astype(np.float32), g.out_height, g.out_width)
        px = unf.px.astype(np.float64)
        py = unf.py.astype(np.float64)
        crop_offset, flipped = -1, False
        if self.train:
            rng = rng if rng is not None else np.random.default_rng()
            crop_offset = int(rng.integers(0, g.out_width - g.crop_width + 1))
            image = image[:, :, crop_offset:crop_offset + g.crop_width]
            px_c = (g.out_width * px / g.width - crop_offset) / g.crop_width
            py_c = (g.out_height * py / g.height) / g.out_height
            keep = (px_c >= 0) & (px_c <= 1) & (py_c >= 0) & (py_c <= 1)
            index = np.flatnonzero(keep)
            px_n = 2.0 * (px_c[index] - 0.5)
            py_n = 2.0 * (py_c[index] - 0.5)
            if rng.uniform() < self.flip_prob:
                flipped = True
                image = torch.flip(image, dims=[2])
                px_n = -px_n
        else:
            index = np.arange(n_all)
            px_n = 2.0 * (px / g.width - 0.5)
            py_n = 2.0 * (py / g.height - 0.5)
        xyz = np.nan_to_num(points[index, :3].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        knn = knn_indices(xyz, self.k, self.knn_workers)
        return {
            "image": image.contiguous(),
            "px": torch.from_numpy(px_n.astype(np.float32)),
            "py": torch.from_numpy(py_n.astype(np.float32)),
            "xyz": torch.from_numpy(xyz),
            "knn": torch.from_numpy(knn),
            "points_label": torch.from_numpy(labels[index].astype(np.int64)),
            "point_index": torch.from_numpy(index.astype(np.int64)),
            "num_points": int(index.size),
            "crop_offset": crop_offset,
            "flipped": flipped,
        }


_PAD = {"px": 0.0, "py": 0.0, "xyz": 0.0, "knn": 0, "points_label": 0, "point_index": -1}


def collate_kprnet(samples: Sequence[dict]) -> dict:
    """Stack images [B,2,H,W]; pad per-point entries to the largest n in the batch: px, py 0 (the image centre, as
    the reference), xyz 0, knn 0 (padded points only look at index 0), points_label 0 (ignored), point_index -1.
    Adds `num_points` int64 [B] and `point_mask` bool [B,Nmax]; other entries become lists."""
    if not samples:
        raise ValueError("collate_kprnet: empty batch")
    widths = {tuple(s["image"].shape) for s in samples}
    if len(widths) != 1:
        raise DataError(f"collate_kprnet: images of different shapes in one batch: {sorted(widths)}")
    out = {"image": torch.stack([s["image"] for s in samples])}
    out.update(pad_points(samples, {k: fill for k, fill in _PAD.items() if k in samples[0]}))
    for key in samples[0]:
        if key not in out:
            out[key] = [s[key] for s in samples]
    return out


class KPRNetDataset(EpochStream, torch.utils.data.Dataset):
    """SemanticKITTI in KPRNet's input mode.

    KPRNetDataset(root, split, label_map=None, train=None, seed=0, geometry=None, k=7, sequences=None)
    - root: the KITTI root (holding `sequences/`) or the sequences directory itself.
    - split: a split name of the label config (train / valid / test) unless `sequences` lists them explicitly.
    - mixing: the scene-mixing parts of `data.augment` (`lidarseg.data.mixing`; training only), drawn from the
      same stream before the crop; the mixed points are put back in ring order for the scan unfolding.
    - train: crop and flip (default: split == "train"). Crops and flips are drawn from
      `numpy.random.default_rng([seed, epoch, index])`, deterministic and independent of worker processes; call
      `set_epoch(e)` each epoch for new crops.
    Items are the `KPRNetTransform` dicts plus `sequence` ("08"), `scan` ("000123") and `has_labels`. Labels are
    train ids of `label_map` (0 = ignored); without a labels directory (test split) they are 0.
    """

    def __init__(self, root, split: str = "train", label_map: LabelMap | None = None, train: bool | None = None,
                 seed: int = 0, geometry: KPRNetGeometry | None = None, k: int = 7,
                 sequences: Sequence[int] | None = None, knn_workers: int = 1, source=None,
                 labels: bool | None = None, mixing: dict | None = None):
        if source is None and not (Path(root) / "sequences").is_dir() and Path(root).is_dir() and any(
                p.is_dir() and (p / "velodyne").is_dir() for p in Path(root).iterdir()):
            root = Path(root).parent  # the sequences directory itself was given
        self.root = Path(root)
        if not isinstance(source, ScanSource):
            source = build_source(source, self.root, label_map=label_map)
        self.source = source
        self.label_map = source.label_map
        self.split = split
        self.transform = KPRNetTransform(split == "train" if train is None else train, geometry, k,
                                         knn_workers=knn_workers)
        self.seed, self._epoch = int(seed), SharedEpoch()
        with_labels = source.split_has_labels(split) if labels is None else bool(labels)
        self.items = source.items(split, sequences, labels=with_labels)
        self.mixing = None
        if mixing:
            from .mixing import build_mixing
            from .projection import SensorGeometry
            self.mixing = build_mixing(mixing, SensorGeometry.from_config(source.sensor), source, self.items,
                                       ring_order=True)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        points = self.source.read_points(item)
        labels = None
        if item.labels is not None:
            labels = self.source.read_train_labels(item, points.shape[0])
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.mixing is not None:
            partner = None
            if self.mixing.needs_partner:
                j = int(rng.integers(len(self)))
                other = self.items[j]
                p2 = self.source.read_points(other)
                l2 = (self.source.read_train_labels(other, p2.shape[0]) if other.labels is not None
                      else np.zeros(p2.shape[0], np.int64))
                partner = (p2, l2)
            if labels is None:
                labels = np.zeros(points.shape[0], np.int64)
            mixed = self.mixing(points, labels, rng, partner=partner)
            points, labels = mixed.points, mixed.labels
        sample = self.transform(points, labels, rng)
        sample.update(sequence=item.sequence, scan=item.scan, has_labels=item.labels is not None)
        return sample

    def __repr__(self):
        return (f"KPRNetDataset({str(self.root)!r}, split={self.split!r}, {len(self)} scans, "
                f"train={self.transform.train}, {self.transform.geometry})")

