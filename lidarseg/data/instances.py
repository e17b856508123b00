"""Rare-class instance paste: a bank of object instances from the training labels and their pasting into scans with
the range image's occlusion respected.

Config (key `instancepaste` of `data.augment`, beside the mixing parts of `lidarseg.data.mixing`):

    instancepaste:
      prob: 0.5             # chance per sample
      classes: null         # class names; null: every class under `rare_fraction` of the training points
      rare_fraction: 0.005  # (of the labelled, non-ignored points of the training split)
      max_instances: 3      # 1..max instances per pasted sample, uniform
      min_points: 20        # smallest instance kept in the bank
      ground_classes: null  # names; null: those of road, parking, sidewalk, other-ground, terrain,
                            # driveable_surface, other_flat, ground that the label config has
      cache_dir: null       # where the bank is cached; null: ROOT/.lidarseg-cache

Bank (`InstanceBank`): every (class, instance id) group of a training scan's points of the selected classes
(`classes`, or those under `rare_fraction`, counted in a first pass over the labels) with at least `min_points`
points (instance id = the upper 16 bits of SemanticKITTI raw labels), stored in its scan's sensor frame with
its ring index (KPRNet) and the height of the ground under it (median z of the scan's ground-class points within
2 m of the instance's centre in x, y; the instance's lowest z without such points). Built once per (source, root,
training scans and their sizes, label map, min_points, classes or rare_fraction, ground classes) and cached as
an .npz archive named `instance-bank-<key>.bank` (atomic write; not .npz, which a folder-of-scans source would
take for a scan).

Paste, per instance (classes drawn uniformly, then an instance of the class uniformly): a rotation about the
sensor's z axis by a uniform angle (same range, elevation and view of the object, another heading), then a vertical
shift so that its ground height becomes the target scan's ground height at the new place (median z of the target's
ground-class points within 2 m; up to 5 angles are tried, an instance with no ground under any is not pasted).
Occlusion on the dataset's range grid, in this order: original points inside a pasted object's box (its extent in
the radial, tangential and z directions of its centre) are removed; a pasted point farther than the nearest
remaining original point of its pixel is removed (hidden); an original point farther than the nearest remaining
pasted point of its pixel is removed (behind the object).
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError

DEFAULTS = {"enabled": True, "prob": 0.5, "classes": None, "rare_fraction": 0.005, "max_instances": 3,
            "min_points": 20, "ground_classes": None, "cache_dir": None}
GROUND_NAMES = ("road", "parking", "sidewalk", "other-ground", "terrain", "driveable_surface", "other_flat", "ground")
GROUND_RADIUS = 2.0
PLACEMENT_TRIES = 5
BANK_VERSION = 1


def _ground_height(x, y, z, centre, fallback):
    """Median of z [G] over the points (x, y) within GROUND_RADIUS of centre (x, y), else `fallback`."""
    dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
    near = dx * dx + dy * dy < GROUND_RADIUS ** 2
    return float(np.median(z[near].astype(np.float64))) if near.any() else fallback


class InstanceBank:
    """Instances of the training split: points float32 [P,4] (sensor frame of their scan), ring int64 [P],
    offsets int64 [K+1] (instance k is points[offsets[k]:offsets[k+1]]), cls int64 [K] (train id), ground float64
    [K] (ground height under it, metres), class_points int64 [C] (points per train id over the split). Only the
    instances of the selected classes are kept (a bank of every car of SemanticKITTI would take gigabytes)."""

    def __init__(self, points, ring, offsets, cls, ground, class_points):
        self.points, self.ring, self.offsets = points, ring, offsets
        self.cls, self.ground, self.class_points = cls, ground, class_points

    def __len__(self):
        return len(self.cls)

    def instance(self, k: int) -> slice:
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def count(self, c: int) -> int:
        return int((self.cls == c).sum())

    @staticmethod
    def select_classes(class_points, label_map, rare_fraction: float) -> list[int]:
        """Train ids under `rare_fraction` of the labelled, non-ignored points counted in `class_points`."""
        labelled = np.asarray(class_points, np.int64).copy()
        labelled[list(label_map.ignore)] = 0
        frac = labelled / max(int(labelled.sum()), 1)
        return [k for k in range(label_map.num_classes) if k not in label_map.ignore and frac[k] < rare_fraction]

    @classmethod
    def build(cls, source, items, label_map, min_points: int, ground_ids, classes=None,
              rare_fraction: float = 0.005) -> "InstanceBank":
        """Two passes over the labelled `items`: the labels alone (points per class, which scans hold instances of
        which classes), then the points of the scans holding instances of `classes` (train ids; None: the classes
        under `rare_fraction` of the points), whose instances of those classes are kept."""
        from .mixing import _rings
        class_points = np.zeros(label_map.num_classes, np.int64)
        holds = []
        for item in items:
            if item.labels is None:
                continue
            raw = np.asarray(source.read_raw_labels(item)).astype(np.int64)
            train = label_map.to_train(raw & 0xFFFF, source=str(item.labels), unknown="zero")
            class_points += np.bincount(train, minlength=label_map.num_classes)
            holds.append((item, set(np.unique(train[(raw >> 16) > 0]).tolist())))
        wanted = set(cls.select_classes(class_points, label_map, rare_fraction) if classes is None else classes)
        wanted -= set(label_map.ignore)
        pts_out, ring_out, sizes, kinds, grounds = [], [], [], [], []
        is_ground = np.isin(np.arange(label_map.num_classes), list(ground_ids))
        is_wanted = np.isin(np.arange(label_map.num_classes), list(wanted))
        for item, present in holds:
            if not present & wanted:
                continue
            points = source.read_points(item)
            raw = np.asarray(source.read_raw_labels(item, points.shape[0])).astype(np.int64)
            train = label_map.to_train(raw & 0xFFFF, source=str(item.labels), unknown="zero")
            inst = raw >> 16
            sel = np.flatnonzero((inst > 0) & is_wanted[train])
            key = train[sel] * (1 << 20) + inst[sel]
            order = np.argsort(key, kind="stable")
            sel, key = sel[order], key[order]
            starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            ends = np.r_[starts[1:], key.size]
            rings = _rings(points)
            gmask = is_ground[train]
            gx, gy, gz = (np.ascontiguousarray(points[gmask, i]) for i in range(3))
            for s, e in zip(starts, ends):
                idx = sel[s:e]
                if idx.size < min_points:
                    continue
                p = points[idx]
                pts_out.append(p)
                ring_out.append(rings[idx])
                sizes.append(idx.size)
                kinds.append(int(train[idx[0]]))
                grounds.append(_ground_height(gx, gy, gz, p[:, :2].astype(np.float64).mean(0),
                                              float(p[:, 2].min())))
        offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        return cls(np.concatenate(pts_out) if pts_out else np.zeros((0, 4), np.float32),
                   np.concatenate(ring_out) if ring_out else np.zeros(0, np.int64), offsets,
                   np.asarray(kinds, np.int64), np.asarray(grounds, np.float64), class_points)

    def save(self, path) -> None:
        from .io import atomic_write_bytes
        buf = io.BytesIO()
        np.savez(buf, version=BANK_VERSION, points=self.points, ring=self.ring, offsets=self.offsets, cls=self.cls,
                 ground=self.ground, class_points=self.class_points)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> "InstanceBank | None":
        try:
            with np.load(path) as z:
                if int(z["version"]) != BANK_VERSION:
                    return None
                return cls(z["points"], z["ring"], z["offsets"], z["cls"], z["ground"], z["class_points"])
        except (OSError, KeyError, ValueError):
            return None

    @classmethod
    def cached(cls, source, items, label_map, min_points: int, ground_ids, classes=None, rare_fraction=0.005,
               cache_dir=None, log=None):
        """`build`, read from the cache when its key matches, else built and cached (an unwritable cache directory
        only costs the rebuild next time)."""
        desc = {"source": source.name, "root": str(Path(source.root).resolve()), "min_points": int(min_points),
                "classes": None if classes is None else sorted(int(c) for c in classes),
                "rare_fraction": float(rare_fraction),
                "ground": sorted(int(g) for g in ground_ids), "learning_map": sorted(label_map.learning_map.items())
                if hasattr(label_map, "learning_map") else None,
                "scans": [[str(it.points), str(it.labels), Path(it.points).stat().st_size if it.points else 0]
                          for it in items]}
        key = hashlib.sha256(json.dumps(desc, default=str).encode()).hexdigest()[:16]
        folder = Path(cache_dir) if cache_dir else Path(source.root) / ".lidarseg-cache"
        path = folder / f"instance-bank-{key}.bank"
        if path.is_file():
            bank = cls.load(path)
            if bank is not None:
                return bank
        bank = cls.build(source, items, label_map, min_points, ground_ids, classes, rare_fraction)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            bank.save(path)
        except OSError as exc:
            if log:
                log(f"instance bank not cached ({exc})")
        return bank


def _class_ids(names, label_map, key):
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"augmentation.instancepaste.{key}: expected a non-empty list of class names, got {names!r}")
    unknown = [n for n in names if n not in label_map.names]
    if unknown:
        raise ConfigError(f"augmentation.instancepaste.{key}: unknown class names {unknown}; classes: "
                          f"{list(label_map.names)}")
    return [label_map.names.index(n) for n in names]


class InstancePaste:
    """Validated `instancepaste` config + the bank; `__call__` pastes instances into one scan."""

    def __init__(self, cfg, label_map, geometry, source=None, items=None, bank: InstanceBank | None = None):
        """cfg: the `instancepaste` mapping (None = defaults); the bank is built from (or read from the cache of)
        `items` of `source` unless given."""
        from .augment import parse_part
        c = parse_part("instancepaste", {} if cfg is None else cfg, DEFAULTS)
        if c is None:
            raise ValueError("InstancePaste: the instancepaste config is disabled (enabled: false)")
        from .mixing import _prob
        self.prob = _prob(c["prob"], "instancepaste.prob")
        for key, lo, hi in (("max_instances", 1, 100), ("min_points", 1, 10 ** 6)):
            v = c[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"augmentation.instancepaste.{key}: expected an integer in [{lo}, {hi}], got {v!r}")
        rf = c["rare_fraction"]
        if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not 0 < rf <= 1:
            raise ConfigError(f"augmentation.instancepaste.rare_fraction: expected a number in (0, 1], got {rf!r}")
        self.max_instances = int(c["max_instances"])
        self.geometry = geometry
        if c["ground_classes"] is None:
            self.ground = [label_map.names.index(n) for n in GROUND_NAMES if n in label_map.names]
            if not self.ground:
                raise ConfigError(f"augmentation.instancepaste.ground_classes: the label config has none of "
                                  f"{list(GROUND_NAMES)}; name its ground classes")
        else:
            self.ground = _class_ids(c["ground_classes"], label_map, "ground_classes")
        requested = None if c["classes"] is None else _class_ids(c["classes"], label_map, "classes")
        if bank is None:
            bank = InstanceBank.cached(source, items, label_map, int(c["min_points"]), self.ground, requested,
                                       float(rf), c["cache_dir"])
        self.bank = bank
        if requested is None:
            requested = InstanceBank.select_classes(bank.class_points, label_map, rf)
            self.classes = [k for k in requested if bank.count(k) > 0]
            if not self.classes:
                raise ConfigError(f"augmentation.instancepaste: the instance bank holds no instance of the classes "
                                  f"under {rf:g} of the training points "
                                  f"({[label_map.names[k] for k in requested]}); name `classes`")
        else:
            empty = [label_map.names[k] for k in requested if bank.count(k) == 0]
            if empty:
                raise ConfigError(f"augmentation.instancepaste.classes: the instance bank (training labels, "
                                  f"instances of >= {c['min_points']} points) holds no instance of {empty}")
            self.classes = requested
        self.by_class = [np.flatnonzero(bank.cls == k) for k in self.classes]
        self._is_ground = np.isin(np.arange(label_map.num_classes), self.ground)
        self.class_names = [label_map.names[k] for k in self.classes]

    def __repr__(self):
        return (f"InstancePaste(prob={self.prob}, classes={self.class_names}, max_instances={self.max_instances}, "
                f"bank={len(self.bank)} instances)")

    def place(self, points, labels, rng):
        """Chosen instances placed in the scan: list of (bank instance k, transformed points float32 [n,4])."""
        is_ground = self._is_ground[np.clip(labels, 0, self._is_ground.size - 1)]
        ground = points[is_ground]
        gx, gy, gz = (np.ascontiguousarray(ground[:, i]) for i in range(3))
        placed = []
        for _ in range(int(rng.integers(1, self.max_instances + 1))):
            members = self.by_class[int(rng.integers(len(self.classes)))]
            k = int(members[int(rng.integers(members.size))])
            p = self.bank.points[self.bank.instance(k)]
            centre = p[:, :2].astype(np.float64).mean(0)
            for _try in range(PLACEMENT_TRIES):
                a = rng.uniform(-np.pi, np.pi)
                c, s = np.cos(a), np.sin(a)
                new_centre = np.array([centre[0] * c - centre[1] * s, centre[0] * s + centre[1] * c])
                g = _ground_height(gx, gy, gz, new_centre, np.nan)
                if np.isfinite(g):
                    q = np.array(p, dtype=np.float32, copy=True)
                    xy = p[:, :2].astype(np.float64)
                    q[:, 0] = xy[:, 0] * c - xy[:, 1] * s
                    q[:, 1] = xy[:, 0] * s + xy[:, 1] * c
                    q[:, 2] = p[:, 2] + np.float32(g - self.bank.ground[k])
                    placed.append((k, q))
                    break
        return placed

    def __call__(self, points, labels, rng):
        """points float32 [N,4], labels int64 [N] -> (kept original indices int64 [N'], bank point indices int64
        [M], pasted points float32 [M,4], their labels int64 [M])."""
        from .mixing import pixel_of
        n = points.shape[0]
        placed = self.place(points, labels, rng)
        if not placed:
            return np.arange(n), np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        g = self.geometry
        # candidates: the originals in the columns the objects' boxes span (2 columns of margin); only they can
        # lie inside a box or share a pixel with a pasted point
        with np.errstate(invalid="ignore"):
            col_all = np.floor(0.5 * (-np.arctan2(points[:, 1], points[:, 0]) / np.float32(np.pi) + 1) * g.width)
        col_all = np.nan_to_num(col_all, nan=0).astype(np.int64) % g.width
        columns = np.zeros(g.width, bool)
        boxes = []
        for _k, q in placed:
            centre = q[:, :2].astype(np.float64).mean(0)
            u = centre / max(np.linalg.norm(centre), 1e-9)
            v = np.array([-u[1], u[0]])
            fq = np.stack([q[:, :2] @ u, q[:, :2] @ v, q[:, 2]], 1)
            lo, hi = fq.min(0), fq.max(0)
            boxes.append((u, v, lo, hi))
            if lo[0] <= 0:  # the box reaches the sensor: every column
                columns[:] = True
                continue
            corners = np.array([[a, b] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])])
            angle = np.arctan2(corners[:, 1], corners[:, 0])  # relative to the centre's direction, |.| < pi/2
            base = np.arctan2(u[1], u[0])
            c = np.floor(0.5 * (-(base + np.array([angle.min(), angle.max()])) / np.pi + 1) * g.width).astype(int)
            first, last = c[1] - 2, c[0] + 2  # yaw = -angle: the larger angle has the smaller column
            columns[np.arange(first, last + 1) % g.width] = True
        cand = np.flatnonzero(columns[col_all])
        sub = points[cand]
        xyz = sub[:, :3].astype(np.float64)
        keep_c = np.ones(cand.size, bool)
        for u, v, lo, hi in boxes:  # originals inside each object's box
            f = np.stack([xyz[:, :2] @ u, xyz[:, :2] @ v, xyz[:, 2]], 1)
            keep_c &= ~np.all((f >= lo) & (f <= hi), axis=1)
        pasted = np.concatenate([q for _, q in placed])
        bank_index = np.concatenate([np.arange(self.bank.instance(k).start, self.bank.instance(k).stop)
                                     for k, _ in placed]).astype(np.int64)
        ro, co = pixel_of(sub, g)
        rp, cp = pixel_of(pasted, g)
        range_o = np.linalg.norm(xyz, axis=1)
        range_p = np.linalg.norm(pasted[:, :3].astype(np.float64), axis=1)
        pix_o = np.where(ro >= 0, ro * g.width + co, -1)
        pix_p = np.where(rp >= 0, rp * g.width + cp, -1)
        # hidden pasted points: farther than the nearest remaining original of their pixel
        near_o = np.full(g.height * g.width, np.inf)
        ok = keep_c & (pix_o >= 0)
        np.minimum.at(near_o, pix_o[ok], range_o[ok])
        keep_p = (pix_p >= 0) & (range_p <= near_o[np.maximum(pix_p, 0)])
        # originals behind the object: farther than the nearest remaining pasted point of their pixel
        near_p = np.full(g.height * g.width, np.inf)
        np.minimum.at(near_p, pix_p[keep_p], range_p[keep_p])
        keep_c &= ~((pix_o >= 0) & (range_o > near_p[np.maximum(pix_o, 0)]))
        keep = np.ones(n, bool)
        keep[cand[~keep_c]] = False
        bank_index = bank_index[keep_p]
        return (np.flatnonzero(keep), bank_index, pasted[keep_p],
                self.bank.cls[np.searchsorted(self.bank.offsets, bank_index, side="right") - 1])
