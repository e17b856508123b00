"""Scene mixing for training: LaserMix, RangeMix (BeamMix), RangeUnion and RangeShift on points before projection.

Config (keys of `data.augment`, beside PointAugmentation's; each part optional, on when present unless
`enabled: false`; `prob` is the chance that the part is applied to a sample):

    lasermix:   {prob: 0.5, bands: [3, 4, 5, 6], pitch: [-25.0, 3.0]}
    rangemix:   {prob: 0.5, grids: [[1, 3], [1, 4], ...]}   # [columns, rows] of the block checkerboard
    rangeunion: {prob: 0.5}
    rangeshift: {prob: 0.5, min_fraction: 0.05}
    polarmix:   {prob: 0.5, swap_prob: 0.5, copy_prob: 1.0, classes: null}   # null: car ... motorcyclist

What each computes, on points [N,4] with train-id labels [N] (the "scan" A and a "partner" B drawn from the same
split):

- lasermix: the inclination range `pitch` (degrees; points outside it join the first or last band) is cut into
  n equal bands, n drawn from `bands`; even bands come from A and odd bands from B, or the reverse (probability
  0.5). mmdetection3d's LaserMix: num_areas [3, 4, 5, 6], pitch_angles [-25, 3].
- rangemix: the range image (the dataset's sensor grid) is cut into `columns` x `rows` equal blocks, a grid drawn
  from `grids`; blocks alternate between A and B as a checkerboard whose colour is drawn with probability 0.5.
  OpenPCSeg's RangeMix/BeamMix ("mixtureV2": the default grids below) on the projected images.
- rangeunion: A plus the points of B whose pixel holds no point of A (OpenPCSeg fills A's empty pixels from B).
- rangeshift: a yaw rotation by 2 pi s / W, s uniform among the integers in [f W, W - f W] (f = `min_fraction`),
  applied independently to A and to B: the range image rolled by s columns (OpenPCSeg: split point in
  [100, W - 100] of 2048 columns, f = 100/2048 ~ 0.05).

- polarmix (PolarMix, Xiao et al.; mmdetection3d's PolarMix with swap_ratio / rotate_paste_ratio): with
  `swap_prob`, the points of the current scene whose yaw (-atan2(y, x)) lies in (s, s + pi), s uniform in [-pi, 0),
  are replaced by B's points there; with `copy_prob`, B's points of `classes` are added twice more, rotated about z
  by u1 2 pi/3 and (1 + u2) 2 pi/3 (u uniform in [0, 1)), without occlusion handling, as the reference does
  (`MixResult.source` 3 for these copies).

Order per sample: rangeshift (A, then B), lasermix, rangemix, rangeunion, polarmix; B is the same partner for all of
them.
Working on points rather than on the images keeps one label per point (every output point is a point of A or B with
its own label: `MixResult.source` and `MixResult.index` record which) and serves both the range image and KPRNet.
All draws come from the sample's `numpy.random.Generator` (`augment.rng_for(seed, epoch, index)`): the partner
index and every choice depend only on (seed, epoch, index).

KPRNet recovers rings from the point order (ring-major, counter-clockwise), so with `ring_order=True` the output is
sorted by (ring of the source point, column u after rotation), the rings of A and B found by `scan_unfolding`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .augment import parse_part

#: OpenPCSeg's "mixtureV2" RangeMix strategies as [columns, rows].
DEFAULT_GRIDS = [[1, 3], [1, 4], [1, 5], [1, 6], [2, 3], [2, 4], [2, 5], [2, 6], [3, 3], [3, 4], [3, 5], [3, 6],
                 [4, 3], [4, 4], [4, 5], [4, 6], [6, 4]]

MIX_PARTS = {
    "lasermix": {"enabled": True, "prob": 0.5, "bands": [3, 4, 5, 6], "pitch": [-25.0, 3.0]},
    "rangemix": {"enabled": True, "prob": 0.5, "grids": DEFAULT_GRIDS},
    "rangeunion": {"enabled": True, "prob": 0.5},
    "rangeshift": {"enabled": True, "prob": 0.5, "min_fraction": 0.05},
    "polarmix": {"enabled": True, "prob": 0.5, "swap_prob": 0.5, "copy_prob": 1.0, "classes": None},
}
#: PolarMix's instance classes for SemanticKITTI-style label configs (train ids 1-8 there), by name
POLARMIX_CLASSES = ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist")
#: parts that need a partner scan
PAIR_PARTS = ("lasermix", "rangemix", "rangeunion", "polarmix")
#: keys of `data.augment` owned here and by `lidarseg.data.instances` (instancepaste)
MIX_KEYS = (*MIX_PARTS, "instancepaste")


def split_augment_config(cfg: dict | None) -> tuple[dict | None, dict]:
    """`data.augment` -> (PointAugmentation's keys, the mixing parts). A top-level `enabled: false` turns both off."""
    if cfg is None:
        return None, {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"augmentation: expected a mapping, got {type(cfg).__name__}")
    point = {k: v for k, v in cfg.items() if k not in MIX_KEYS}
    mix = {k: v for k, v in cfg.items() if k in MIX_KEYS}
    if cfg.get("enabled", True) is False:
        mix = {}
    return point, mix


def _prob(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"augmentation.{key}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def _int_list(value, key, lo, hi):
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi for v in value):
        raise ConfigError(f"augmentation.{key}: expected a non-empty list of integers in [{lo}, {hi}], got {value!r}")
    return [int(v) for v in value]


@dataclass
class MixResult:
    """Mixed scan: points float32 [M,4], labels int64 [M], rows int64 [M] or None (carried per point), and the
    provenance of every output point: `source` int8 [M] (0: the scan, 1: the partner, 2: the instance bank, 3: a
    rotated copy of a partner point, polarmix) and `index` int64 [M] (its row in that scan's input arrays, or in
    the bank's points)."""
    points: np.ndarray
    labels: np.ndarray
    rows: np.ndarray | None
    source: np.ndarray
    index: np.ndarray


def pitch_degrees(points: np.ndarray) -> np.ndarray:
    """Inclination of every point, degrees, float64 [N] (0 for a point at the origin)."""
    xyz = points[:, :3].astype(np.float64)
    return np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))


def pixel_of(points: np.ndarray, geometry) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) int64 [N] of every point on the spherical grid `geometry` (SensorGeometry): RangeNet++'s formula
    in float32, as `projection.spherical_projection`, rows and columns clamped to the image; points with
    non-finite coordinates or zero range get row = col = -1."""
    xyz = np.asarray(points[:, :3], dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = np.sqrt((xyz * xyz).sum(1))
        ok = np.isfinite(r) & (r > 0)
        yaw = -np.arctan2(xyz[:, 1], xyz[:, 0])
        pitch = np.arcsin(np.clip(xyz[:, 2] / np.where(ok, r, np.float32(1)), -1, 1))
    fd, fu = np.float32(np.radians(geometry.fov_down)), np.float32(np.radians(geometry.fov_up))
    col = np.floor(np.float32(0.5) * (yaw / np.float32(np.pi) + np.float32(1)) * np.float32(geometry.width))
    row = np.floor((np.float32(1) - (pitch - fd) / (fu - fd)) * np.float32(geometry.height))
    col = np.where(ok, np.clip(np.nan_to_num(col), 0, geometry.width - 1), -1).astype(np.int64)
    row = np.where(ok, np.clip(np.nan_to_num(row), 0, geometry.height - 1), -1).astype(np.int64)
    return row, col


def rotate_z(points: np.ndarray, angle: float) -> np.ndarray:
    """Copy of points [N,4] rotated by `angle` radians about z (counter-clockwise seen from above)."""
    out = np.array(points, dtype=np.float32, copy=True)
    c, s = np.cos(angle), np.sin(angle)
    xy = points[:, :2].astype(np.float64)
    out[:, 0] = xy[:, 0] * c - xy[:, 1] * s
    out[:, 1] = xy[:, 0] * s + xy[:, 1] * c
    return out


class SceneMixing:
    """The mixing parts of `data.augment`, validated at construction. `geometry`: the SensorGeometry of the range
    grid that rangemix, rangeunion and rangeshift work on. `ring_order`: sort the output for KPRNet's ring
    detection (see the module docstring). `paste`: a `lidarseg.data.instances.InstancePaste` applied last (its
    config key `instancepaste` is ignored here)."""

    def __init__(self, cfg: dict | None, geometry, ring_order: bool = False, paste=None, label_map=None):
        cfg = {k: v for k, v in (cfg or {}).items() if k != "instancepaste"}
        self.paste = paste
        unknown = sorted(set(cfg) - set(MIX_PARTS))
        if unknown:
            raise ConfigError(f"augmentation: unknown mixing keys {unknown}; valid keys: {list(MIX_PARTS)}")
        self.geometry = geometry
        self.label_map = label_map
        self.ring_order = bool(ring_order)
        self.parts = {}
        for name, defaults in MIX_PARTS.items():
            merged = parse_part(name, cfg.get(name), defaults)
            if merged is not None:
                merged["prob"] = _prob(merged["prob"], f"{name}.prob")
                self.parts[name] = merged
        self._validate()

    def _validate(self):
        p = self.parts
        if "lasermix" in p:
            p["lasermix"]["bands"] = _int_list(p["lasermix"]["bands"], "lasermix.bands", 2, 1000)
            pitch = p["lasermix"]["pitch"]
            if (not isinstance(pitch, (list, tuple)) or len(pitch) != 2
                    or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in pitch)
                    or not -90 <= pitch[0] < pitch[1] <= 90):
                raise ConfigError(f"augmentation.lasermix.pitch: expected [low, high] degrees with "
                                  f"-90 <= low < high <= 90, got {pitch!r}")
            p["lasermix"]["pitch"] = [float(pitch[0]), float(pitch[1])]
        if "rangemix" in p:
            grids = p["rangemix"]["grids"]
            if not isinstance(grids, (list, tuple)) or not grids:
                raise ConfigError(f"augmentation.rangemix.grids: expected a non-empty list of [columns, rows], "
                                  f"got {grids!r}")
            out = []
            for g in grids:
                cr = _int_list(g, "rangemix.grids", 1, 10000) if isinstance(g, (list, tuple)) and len(g) == 2 \
                    else None
                if cr is None or cr[0] * cr[1] < 2 or cr[0] > self.geometry.width or cr[1] > self.geometry.height:
                    raise ConfigError(f"augmentation.rangemix.grids: each entry must be [columns, rows] with at "
                                      f"least 2 blocks that fit the {self.geometry.height}x{self.geometry.width} "
                                      f"image, got {g!r}")
                out.append(cr)
            p["rangemix"]["grids"] = out
        if "polarmix" in p:
            for key in ("swap_prob", "copy_prob"):
                p["polarmix"][key] = _prob(p["polarmix"][key], f"polarmix.{key}")
            names = p["polarmix"]["classes"]
            if names is None:
                ids = ([self.label_map.names.index(n) for n in POLARMIX_CLASSES if n in self.label_map.names]
                       if self.label_map is not None else list(range(1, 9)))
            else:
                if self.label_map is None:
                    raise ConfigError("augmentation.polarmix.classes: class names need the label config")
                if (not isinstance(names, (list, tuple)) or not names
                        or any(n not in self.label_map.names for n in names)):
                    raise ConfigError(f"augmentation.polarmix.classes: expected a non-empty list of class names "
                                      f"of {list(self.label_map.names)}, got {names!r}")
                ids = [self.label_map.names.index(n) for n in names]
            p["polarmix"]["class_ids"] = np.asarray(ids, np.int64)
        if "rangeshift" in p:
            f = p["rangeshift"]["min_fraction"]
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 0.5:
                raise ConfigError(f"augmentation.rangeshift.min_fraction: expected a number in [0, 0.5], got {f!r}")
            p["rangeshift"]["min_fraction"] = float(f)

    @property
    def active(self) -> bool:
        return bool(self.parts) or self.paste is not None

    @property
    def needs_partner(self) -> bool:
        return any(name in self.parts for name in PAIR_PARTS)

    def __repr__(self):
        return f"SceneMixing({self.parts}, paste={self.paste})"

    def _shift(self, points, rng):
        if "rangeshift" not in self.parts or rng.random() >= self.parts["rangeshift"]["prob"]:
            return points
        w = self.geometry.width
        lo = int(np.ceil(self.parts["rangeshift"]["min_fraction"] * w))
        s = int(rng.integers(lo, w - lo + 1))
        return rotate_z(points, 2.0 * np.pi * s / w)

    def __call__(self, points, labels, rng: np.random.Generator, partner=None, rows=None,
                 partner_rows=None) -> MixResult:
        """points float32 [N,4], labels [N] (+ rows [N]) of the scan; `partner`: (points, labels) of the partner
        scan (needed when `needs_partner`; drawn by the caller from the same `rng` before this call)."""
        if partner is None and self.needs_partner:
            raise ValueError(f"SceneMixing: {[p for p in PAIR_PARTS if p in self.parts]} need a partner scan")
        pa = np.asarray(points, dtype=np.float32)
        la = np.asarray(labels).astype(np.int64, copy=False)
        n_a = pa.shape[0]
        ring_a = _rings(pa) if self.ring_order else None
        pa = self._shift(pa, rng)
        # each of A's points: kept?; each of B's points: taken?
        take_a = np.ones(n_a, bool)
        if partner is None:
            pb, lb, take_b, ring_b = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), None
        else:
            pb = np.asarray(partner[0], dtype=np.float32)
            lb = np.asarray(partner[1]).astype(np.int64, copy=False)
            ring_b = _rings(pb) if self.ring_order else None
            pb = self._shift(pb, rng)
            take_b = np.zeros(pb.shape[0], bool)
        if partner is not None:
            p = self.parts
            if "lasermix" in p and rng.random() < p["lasermix"]["prob"]:
                n = int(rng.choice(p["lasermix"]["bands"]))
                first = int(rng.integers(2))
                lo, hi = p["lasermix"]["pitch"]
                band_a = _bands(pitch_degrees(pa), lo, hi, n)
                band_b = _bands(pitch_degrees(pb), lo, hi, n)
                take_a &= (band_a % 2) == first
                take_b |= (band_b % 2) != first
            if "rangemix" in p and rng.random() < p["rangemix"]["prob"]:
                cols, nrows = p["rangemix"]["grids"][int(rng.integers(len(p["rangemix"]["grids"])))]
                colour = int(rng.integers(2))
                block_a = self._blocks(pa, cols, nrows)
                block_b = self._blocks(pb, cols, nrows)
                # the current scene keeps the blocks of `colour`; the partner fills the others
                take_a &= block_a == colour
                take_b = np.where(block_b == 1 - colour, True, take_b & (block_b == colour))
            if "rangeunion" in p and rng.random() < p["rangeunion"]["prob"]:
                g = self.geometry
                row_a, col_a = pixel_of(pa, g)
                row_b, col_b = pixel_of(pb, g)
                occupied = np.zeros(g.height * g.width, bool)
                ok_a = take_a & (row_a >= 0)
                occupied[row_a[ok_a] * g.width + col_a[ok_a]] = True
                taken_b = take_b & (row_b >= 0)
                occupied[row_b[taken_b] * g.width + col_b[taken_b]] = True
                ok_b = row_b >= 0
                free_b = np.zeros(pb.shape[0], bool)
                free_b[ok_b] = ~occupied[row_b[ok_b] * g.width + col_b[ok_b]]
                take_b |= free_b
            copies = []
            if "polarmix" in p and rng.random() < p["polarmix"]["prob"]:
                pm = p["polarmix"]
                if rng.random() < pm["swap_prob"]:
                    start = (rng.random() - 1.0) * np.pi
                    in_a, in_b = _in_sector(pa, start), _in_sector(pb, start)
                    take_a &= ~in_a
                    take_b = np.where(in_b, True, take_b & ~in_b)
                if rng.random() < pm["copy_prob"]:
                    members = np.flatnonzero(np.isin(lb, pm["class_ids"]))
                    for angle in (rng.random() * 2 * np.pi / 3, (rng.random() + 1) * 2 * np.pi / 3):
                        copies.append((members, rotate_z(pb[members], angle)))
        else:
            copies = []
        ia, ib = np.flatnonzero(take_a), np.flatnonzero(take_b)
        ic = np.concatenate([m for m, _ in copies]) if copies else np.zeros(0, np.int64)
        source = np.concatenate([np.zeros(ia.size, np.int8), np.ones(ib.size, np.int8), np.full(ic.size, 3, np.int8)])
        index = np.concatenate([ia, ib, ic]).astype(np.int64)
        out_pts = np.concatenate([pa[ia], pb[ib], *[q for _, q in copies]])
        out_lab = np.concatenate([la[ia], lb[ib], lb[ic]])
        out_rows = None
        if rows is not None:
            rb = np.zeros(0, np.int64) if partner_rows is None else np.asarray(partner_rows, np.int64)
            if (ib.size or ic.size) and partner_rows is None:
                raise ValueError("SceneMixing: rows given for the scan but not for the partner")
            out_rows = np.concatenate([np.asarray(rows, np.int64)[ia], rb[ib], rb[ic]])
        ring = None
        if self.ring_order:
            rb_ring = ring_b if ring_b is not None else np.zeros(0, np.int64)
            ring = np.concatenate([ring_a[ia], rb_ring[ib], rb_ring[ic]])
        if self.paste is not None and rng.random() < self.paste.prob:
            if out_rows is not None:
                raise ValueError("SceneMixing: instance paste cannot carry ring rows")
            kept, bank_index, pasted, pasted_labels = self.paste(out_pts, out_lab, rng)
            out_pts = np.concatenate([out_pts[kept], pasted])
            out_lab = np.concatenate([out_lab[kept], pasted_labels])
            source = np.concatenate([source[kept], np.full(bank_index.size, 2, np.int8)])
            index = np.concatenate([index[kept], bank_index])
            if ring is not None:
                ring = np.concatenate([ring[kept], self.paste.bank.ring[bank_index]])
        if self.ring_order:
            u = 0.5 * (-np.arctan2(out_pts[:, 1].astype(np.float64), -out_pts[:, 0].astype(np.float64)) / np.pi + 1)
            order = np.lexsort((u, ring))
            out_pts, out_lab, source, index = out_pts[order], out_lab[order], source[order], index[order]
            if out_rows is not None:
                out_rows = out_rows[order]
        return MixResult(np.ascontiguousarray(out_pts, dtype=np.float32), out_lab.astype(np.int64, copy=False),
                         out_rows, source, index)

    def _blocks(self, points, cols, nrows):
        """Checkerboard colour (0/1) of every point's block, -1 for points off the grid."""
        g = self.geometry
        row, col = pixel_of(points, g)
        colour = ((row * nrows) // g.height + (col * cols) // g.width) % 2
        return np.where(row >= 0, colour, -1)


def _in_sector(points, start):
    """Points whose yaw -atan2(y, x) lies strictly inside (start, start + pi)."""
    yaw = -np.arctan2(points[:, 1].astype(np.float64), points[:, 0].astype(np.float64))
    return (yaw > start) & (yaw < start + np.pi)


def _bands(pitch, lo, hi, n):
    """Band index 0..n-1 of inclinations `pitch` (degrees) in n equal bands of [lo, hi], clamped."""
    return np.clip(np.floor((pitch - lo) / (hi - lo) * n), 0, n - 1).astype(np.int64)


def _rings(points):
    """KPRNet's ring index of every point from the point order (`scan_unfolding`'s detection), int64 [N]."""
    from .projection import scan_unfolding
    return scan_unfolding(points, height=1 << 12, width=16).py.astype(np.int64)


def build_mixing(mix_cfg: dict, geometry, source, items, rows: str = "elevation", ring_order: bool = False):
    """SceneMixing of the mixing keys of `data.augment` for a dataset over `items` of `source` (the instance bank,
    when `instancepaste` is configured, is built from, or read from the cache of, those items); None when empty."""
    if not mix_cfg:
        return None
    from .instances import DEFAULTS, InstancePaste
    paste = None
    cfg = parse_part("instancepaste", mix_cfg.get("instancepaste"), DEFAULTS)
    if cfg is not None:
        if rows == "ring":
            raise ConfigError("augmentation.instancepaste: not available with data.rows: ring (pasted points have "
                              "no laser index)")
        paste = InstancePaste(cfg, source.label_map, geometry, source=source, items=items)
    return SceneMixing(mix_cfg, geometry, ring_order=ring_order, paste=paste, label_map=source.label_map)
