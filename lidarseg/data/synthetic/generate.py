"""Write synthetic drives in SemanticKITTI's on-disk layout.

root/sequences/NN/{velodyne/NNNNNN.bin, labels/NNNNNN.label, poses.txt, calib.txt, times.txt}. Scans of one
sequence are consecutive positions of the ego car along one procedural street (`scene.build_scene`), every
`frame_step` seconds; poses.txt holds the camera-0 poses of KITTI (Tr @ T_velo @ inv(Tr), relative to scan 0).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from ... import DEFAULT_DATA_ROOT
from ...errors import ConfigError
from ..io import atomic_write_bytes, write_label, write_scan
from ..sources.kitti import kitti_label_path, kitti_scan_path, kitti_sequence_dir
from . import raycast
from .remission import RemissionModel, detection_signal, material_gains, remission
from .scene import (MAT, MAT_DROPOUT, MAT_REMISSION_STD, MATERIALS, OUTLIER, ROAD, Scene,
                    build_scene)
from .sensor import SensorConfig, sweep_rays, tilt_matrix
from .terrain import P_Z0, RoadProfile

MAT_GAIN = material_gains([m[0] for m in MATERIALS])
#: The default dataset: sequence -> number of scans (train 00-03, valid 08, test 11).
DEFAULT_SCANS = {0: 40, 1: 40, 2: 40, 3: 40, 8: 20, 11: 10}
#: Sequences written without labels by default (SemanticKITTI's test split).
TEST_SEQUENCES = frozenset(range(11, 22))
MARKER = ".synthetic.json"
FORMAT_VERSION = 3
FAULT_KINDS = ("nan", "zero_range")

# KITTI-like calibration: pinhole projections P0..P3 (pixels) and Tr (velodyne -> camera 0, metres)
_TR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27], [0.0, 0.0, 0.0, 1.0]])
_FX, _CX, _CY, _BASE = 718.856, 607.1928, 185.2157, 0.537


def _calib_text() -> str:
    lines = []
    for name, bx in (("P0", 0.0), ("P1", -_BASE), ("P2", 0.06), ("P3", -_BASE - 0.0047)):
        P = np.array([[_FX, 0, _CX, _FX * bx], [0, _FX, _CY, 0], [0, 0, 1, 0]], dtype=np.float64)
        lines.append(f"{name}: " + " ".join(f"{v:.12e}" for v in P.ravel()))
    lines.append("Tr: " + " ".join(f"{v:.12e}" for v in _TR[:3].ravel()))
    return "\n".join(lines) + "\n"


def _pose_matrix(x, y, yaw, z, tilt=None) -> np.ndarray:
    """4x4 pose: translation (x, y, z) metres, yaw about +z, then `tilt` [3,3] (sensor -> level frame)."""
    c, s = np.cos(yaw), np.sin(yaw)
    pose = np.array([[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, z], [0, 0, 0, 1]], dtype=np.float64)
    if tilt is not None:
        pose[:3, :3] = pose[:3, :3] @ tilt
    return pose


def _normalise_sequences(sequences, scans) -> dict[int, int]:
    if sequences is None:
        seqs = list(DEFAULT_SCANS)
    else:
        if isinstance(sequences, (int, str)):
            sequences = [sequences]
        seqs = []
        for s in sequences:
            try:
                v = int(s)
            except (TypeError, ValueError):
                raise ConfigError(f"sequence ids must be integers 0..99, got {s!r}") from None
            if not 0 <= v <= 99:
                raise ConfigError(f"sequence ids must be integers 0..99, got {s!r}")
            if v not in seqs:
                seqs.append(v)
        if not seqs:
            raise ConfigError("sequences must not be empty")
    if scans is None:
        counts = {s: DEFAULT_SCANS.get(s, 20) for s in seqs}
    elif isinstance(scans, dict):
        counts = {s: int(scans.get(s, scans.get(f"{s:02d}", DEFAULT_SCANS.get(s, 20)))) for s in seqs}
    else:
        try:
            n = int(scans)
        except (TypeError, ValueError):
            raise ConfigError(f"scans must be a positive int or a dict sequence -> int, got {scans!r}") from None
        counts = {s: n for s in seqs}
    bad = {s: n for s, n in counts.items() if not 1 <= n <= 999999}
    if bad:
        raise ConfigError(f"scans per sequence must be in 1..999999, got {bad}")
    return counts


def _normalise_faults(faults) -> dict[str, int]:
    if not faults:
        return {}
    if not isinstance(faults, dict):
        raise ConfigError(f"faults must be a dict like {{'nan': 3, 'zero_range': 2}}, got {faults!r}")
    out = {}
    for k, v in faults.items():
        if k not in FAULT_KINDS:
            raise ConfigError(f"unknown fault kind {k!r}; valid: {list(FAULT_KINDS)}")
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"fault count for {k!r} must be an int >= 0, got {v!r}")
        if v:
            out[k] = int(v)
    return out


class ScanSimulator:
    """Simulates the scans of one sequence: `scan(i) -> (points float32 [N,4], labels uint32 [N])`."""

    def __init__(self, sequence: int, num_scans: int, seed: int = 0, sensor: SensorConfig | None = None,
                 frame_step: float = 0.5, faults: dict | None = None, road=None):
        self.sensor = sensor or SensorConfig()
        self.road = RoadProfile.from_options(road)
        self.sequence = int(sequence)
        self.seed = int(seed)
        self.num_scans = int(num_scans)
        self.frame_step = float(frame_step)
        if not self.frame_step > 0:
            raise ConfigError(f"frame_step must be > 0 seconds, got {frame_step!r}")
        self.faults = _normalise_faults(faults)
        rng = np.random.default_rng([self.seed, self.sequence, 7919])
        speed = float(rng.uniform(6.0, 11.0))
        drive_time = self.num_scans * self.frame_step
        margin = self.sensor.max_range + 15.0
        self.scene: Scene = build_scene(rng, -margin, speed * drive_time * 1.1 + margin, drive_time, speed)
        # the road surface comes from its own stream: the layout of a seed does not depend on it
        self.scene.surface = self.road.draw(np.random.default_rng([self.seed, self.sequence, 5077]),
                                            self.scene.road_center, self.scene.road_half)
        self.calib = self.sensor.calibration()
        self.rays = sweep_rays(self.sensor, self.calib)
        self.remission = RemissionModel()
        # what a fleet varies between drives: the unit's overall reflectivity response
        self.reflectivity_gain = float(rng.uniform(0.9, 1.1))

    def time(self, i: int) -> float:
        return i * self.frame_step

    def pose(self, i: int) -> np.ndarray:
        """4x4 sensor pose in the world frame at scan i (metres)."""
        x, y, yaw = self.scene.ego_pose(self.time(i))
        return _pose_matrix(x, y, yaw, self._sensor_z(x, y), self._tilt(i, x, y, yaw))

    def _tilt(self, i, ex, ey, eyaw) -> np.ndarray:
        """Rotation [3,3] sensor -> level frame at scan i: the car follows the road's slope at (ex, ey) (forward:
        pitch, leftward: roll) plus the scan's random roll and pitch of body and mount."""
        sen = self.sensor
        prng = np.random.default_rng([self.seed, self.sequence, i, 2718])
        roll, pitch = np.deg2rad(np.clip(prng.standard_normal(2), -2.5, 2.5) * (sen.roll_std, sen.pitch_std))
        c, s = np.cos(eyaw), np.sin(eyaw)
        gx, gy = (float(v) for v in self.scene.surface.gradient(ex, ey))
        return tilt_matrix(roll + np.arctan(-s * gx + c * gy), pitch + np.arctan(c * gx + s * gy))

    def _sensor_z(self, x, y) -> float:
        """World height of the sensor origin above the ego position (metres)."""
        return float(self.scene.ground_height(x, y)) + self.sensor.height

    def _prims_in_sensor_frame(self, i):
        x, y, yaw = self.scene.ego_pose(self.time(i))
        prims = self.scene.at(self.time(i))
        g = prims.geom.copy()
        c, s = np.cos(yaw), np.sin(yaw)
        dx, dy = g[:, 0] - x, g[:, 1] - y
        g[:, 0] = c * dx + s * dy
        g[:, 1] = -s * dx + c * dy
        g[:, 2] -= self._sensor_z(x, y)
        pc, ps = g[:, 6].copy(), g[:, 7].copy()
        g[:, 6] = pc * c + ps * s
        g[:, 7] = ps * c - pc * s
        sx, sy = g[:, raycast.SHEAR_X].copy(), g[:, raycast.SHEAR_Y].copy()
        g[:, raycast.SHEAR_X] = c * sx + s * sy
        g[:, raycast.SHEAR_Y] = -s * sx + c * sy
        is_box = prims.ptype == raycast.BOX
        bound = np.where(is_box, np.hypot(g[:, 3], g[:, 4]), np.maximum(g[:, 3], g[:, 4]))
        dist = np.hypot(g[:, 0], g[:, 1])
        keep = dist - bound <= self.sensor.max_range
        prims = prims.take(keep)
        prims.geom = g[keep]
        return prims, bound[keep], (x, y, yaw)

    def scan(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Points float32 [N,4] (x, y, z metres, remission 0..1) in the sensor frame, ring after ring from the top
        beam, each ring counter-clockwise from the front seam; raw labels uint32 [N] (semantic | instance << 16)."""
        sen, rays = self.sensor, self.rays
        prims, bound, (ex, ey, eyaw) = self._prims_in_sensor_frame(i)
        R = self._tilt(i, ex, ey, eyaw)
        c, s = np.cos(eyaw), np.sin(eyaw)
        # the sensor moves during the sweep: ego velocity in the level frame at scan start (m/s)
        t0, dt = self.time(i), 0.05
        x1, y1, _ = self.scene.ego_pose(t0 + dt)
        v = np.array([c * (x1 - ex) + s * (y1 - ey), -s * (x1 - ex) + c * (y1 - ey),
                      self._sensor_z(x1, y1) - self._sensor_z(ex, ey)]) / dt
        orig = rays.origin @ R.T + rays.time[..., None] * v
        dirs = rays.direction @ R.T
        margin = float(np.abs(rays.origin).max() + np.linalg.norm(v) * sen.sweep_time) + 0.05

        g = prims.geom
        # a sheared box reaches hz + slope x its horizontal half diagonal above and below its centre
        hz = g[:, 5] + np.hypot(g[:, raycast.SHEAR_X], g[:, raycast.SHEAR_Y]) * bound
        bound = bound + margin
        R3 = np.sqrt(bound ** 2 + hz ** 2)
        dxy = np.hypot(g[:, 0], g[:, 1])
        d3 = np.hypot(dxy, g[:, 2])
        dmin = np.maximum(0.0, d3 - R3)
        inside = d3 <= R3
        el_c = np.arctan2(g[:, 2], dxy)
        half = np.arcsin(np.clip(R3 / np.maximum(d3, 1e-9), 0.0, 1.0))
        emax = np.where(inside, np.pi, el_c + half)
        emin = np.where(inside, -np.pi, el_c - half)
        # rows (top first) whose rays can reach each primitive: monotone envelopes of each row's elevation range
        el = np.arcsin(np.clip(dirs[..., 2], -1, 1))
        row_min = np.minimum.accumulate(el.min(1))
        row_max = np.maximum.accumulate(el.max(1)[::-1])[::-1]
        row_lo = np.searchsorted(-row_min, -emax, side="left").astype(np.int64)
        row_hi = (np.searchsorted(-row_max, -emin, side="right") - 1).astype(np.int64)
        W = sen.azimuth_steps
        bins = (np.floor(np.mod(np.arctan2(dirs[..., 1], dirs[..., 0]), 2 * np.pi) / (2 * np.pi) * W)
                .astype(np.int64) % W)
        ptr, idx = raycast.column_candidates(g, bound, W, sen.max_range + margin)
        key = (self.seed * 1_000_003 + self.sequence * 10_007 + i) & 0x7FFFFFFFFFFFFFFF
        surf, bounds = self._surface_in_frame(ex, ey, eyaw, sen.max_range + margin)
        t, hit, cosi = raycast.cast_rays(orig, dirs, bins, rays.shadow, surf, bounds,
                                         prims.ptype.astype(np.int64), g, dmin, row_lo, row_hi, ptr, idx,
                                         sen.max_range, key)
        return self._returns(i, prims, t, hit, cosi, orig, dirs, (ex, ey, eyaw))

    def _surface_in_frame(self, ex, ey, eyaw, reach):
        """The road surface packed for the ray caster in the level frame of a scan taken at world (ex, ey, eyaw),
        and bounds (zlo, zhi, gmax) of its height and slope within `reach` metres (sampled every <= 2 m; heights
        widened by twice the largest slope times that spacing, the slope by 10 % and 0.01)."""
        surface = self.scene.surface
        surf = surface.packed(ex, ey, eyaw, self._sensor_z(ex, ey))
        r = np.linspace(0.0, reach, int(np.ceil(reach / 2.0)) + 1)
        a = np.linspace(0.0, 2 * np.pi, int(np.ceil(2 * np.pi * reach / 2.0)), endpoint=False)
        px = ex + r[:, None] * np.cos(a)[None]
        py = ey + r[:, None] * np.sin(a)[None]
        z = surface.height(px, py) - surf[P_Z0]
        gx, gy = surface.gradient(px, py)
        gmax = float(np.hypot(gx, gy).max())
        pad = 2.0 * 2.0 * gmax + 1e-3
        return surf, np.array([z.min() - pad, z.max() + pad, 1.1 * gmax + 0.01])

    def _returns(self, i, prims, t, hit, cosi, orig, dirs, pose):
        sen, cal = self.sensor, self.calib
        rng = np.random.default_rng([self.seed, self.sequence, i, 31337])
        H, W = t.shape
        shape = (H, W)
        # all random draws up front, full-grid, so the stream never depends on the scene
        u_drop = rng.random(shape)
        n_range = rng.standard_normal(shape)
        n_rem = rng.standard_normal(shape)
        n_det = rng.standard_normal(shape)
        n_rough = rng.standard_normal(shape)
        u_out = rng.random(shape)
        u_out2 = rng.random(shape)

        ground = hit == raycast.GROUND
        obj = hit >= 0
        hp = np.where(obj, hit, 0)
        tf = np.where(np.isfinite(t), t, 0.0)
        p = orig + dirs * tf[..., None]                      # level frame
        ex, ey, eyaw = pose
        c, s = np.cos(eyaw), np.sin(eyaw)
        wy = ey + s * p[..., 0] + c * p[..., 1]

        label = np.where(obj, prims.label[hp], 0).astype(np.uint32)
        label = np.where(ground, self.scene.ground_label(wy), label)
        mat = np.where(obj, prims.material[hp], 0).astype(np.int64)
        refl = np.where(obj, prims.remission[hp], 0.0)
        road = ground & (label == ROAD)
        mat = np.where(ground, np.where(road, MAT["asphalt"], MAT["grass"]), mat)
        refl = np.where(ground, np.where(road, MATERIALS[MAT["asphalt"]][1], MATERIALS[MAT["grass"]][1]), refl)
        # ground roughness: a height perturbation moves the hit along the ray (road smooth, terrain rough)
        rough = np.where(road, 0.012, 0.035) * np.clip(n_rough, -3, 3)
        t = np.where(ground, t + rough / np.maximum(-dirs[..., 2], 0.02), t)

        # windows of buildings: glass bands on the facades
        win = obj & (prims.window[hp, 0] > 0)
        if win.any():
            k = hit[win]
            gk = prims.geom[k]
            q = p[win] - gk[:, :3]
            lx = gk[:, 6] * q[:, 0] + gk[:, 7] * q[:, 1]
            ly = -gk[:, 7] * q[:, 0] + gk[:, 6] * q[:, 1]
            zb = q[:, 2] - gk[:, raycast.SHEAR_X] * q[:, 0] - gk[:, raycast.SHEAR_Y] * q[:, 1] + gk[:, 5]
            along = np.where(np.abs(lx) / gk[:, 3] > np.abs(ly) / gk[:, 4], ly + gk[:, 4], lx + gk[:, 3])
            floor_h, pitch, frac = prims.window[k].T
            fa = np.mod(along, pitch) / pitch
            fz = np.mod(zb, floor_h) / floor_h
            glass = (np.abs(fa - 0.5) < frac / 2) & (fz > 0.35) & (fz < 0.85) & (zb > 1.0)
            wm, wb = mat[win], refl[win]
            wm[glass] = MAT["glass"]
            wb[glass] = MATERIALS[MAT["glass"]][1]
            mat[win], refl[win] = wm, wb

        valid = np.isfinite(t) & (t >= sen.min_range) & (t < sen.max_range)
        refl = refl * self.reflectivity_gain * MAT_GAIN[mat]
        # returns lost: per-material (glass, tyres), and below the detection threshold (dark, far, grazing)
        signal = detection_signal(refl, cosi, t, self.remission)
        det_thr = self.remission.detection_threshold * cal.threshold[:, None] * np.exp(0.35 * n_det)
        valid &= (u_drop >= MAT_DROPOUT[mat]) & (signal >= det_thr)
        rng_t = np.where(valid, t + cal.range_offset[:, None] + cal.range_noise[:, None] * n_range, 0.0)
        # outliers: spurious returns in front of a surface, and rare returns from the sky
        spur = valid & (u_out < 3e-4)
        sky = (hit == raycast.NO_HIT) & (u_out < 2e-4) & ~self.rays.shadow
        rng_t = np.where(spur, sen.min_range + u_out2 * (rng_t - sen.min_range), rng_t)
        rng_t = np.where(sky, sen.min_range + u_out2 * (sen.max_range * 0.6 - sen.min_range), rng_t)
        valid |= sky
        label = np.where(spur | sky, np.uint32(OUTLIER), label)
        rng_t = np.maximum(rng_t, sen.min_range)

        rem = remission(refl * cal.gain[:, None], cosi, rng_t, MAT_REMISSION_STD[mat] * n_rem,
                        self.remission, cal.threshold[:, None], sen.remission_step)

        xyz = self.rays.origin + self.rays.direction * rng_t[..., None]
        # within a ring, points follow their apparent azimuth from the sensor origin (the laser offsets shift it by
        # up to a few degrees at close range), so each ring wraps exactly once at the front seam
        app = np.mod(np.arctan2(xyz[..., 1], xyz[..., 0]), 2 * np.pi)
        order = np.argsort(np.where(valid, app, np.inf), axis=1, kind="stable")
        m = np.take_along_axis(valid, order, 1).ravel()
        xyz = np.take_along_axis(xyz, order[..., None], 1).reshape(-1, 3)[m]
        points = np.empty((xyz.shape[0], 4), np.float32)
        points[:, :3] = xyz
        points[:, 3] = np.take_along_axis(rem, order, 1).ravel()[m]
        labels = np.take_along_axis(label, order, 1).ravel()[m].astype(np.uint32)
        if self.faults:
            frng = np.random.default_rng([self.seed, self.sequence, i, 4242])
            n = len(points)
            if "nan" in self.faults:
                sel = frng.choice(n, min(n, self.faults["nan"]), replace=False)
                points[sel, :3] = np.nan
            if "zero_range" in self.faults:
                sel = frng.choice(n, min(n, self.faults["zero_range"]), replace=False)
                points[sel, :3] = 0.0
        return points, labels


def generate_scan(sequence: int = 0, index: int = 0, seed: int = 0, num_scans: int | None = None,
                  sensor=None, azimuth_steps: int | None = None, faults=None, frame_step: float = 0.5, road=None):
    """One synthetic scan in memory -> (points float32 [N,4], raw labels uint32 [N]). `num_scans` (the length of
    the drive the scan belongs to) defaults to the default dataset's count for `sequence`; `road`: see
    `terrain.RoadProfile.from_options` ("flat" for a level world)."""
    sen = SensorConfig.from_options(sensor, azimuth_steps=azimuth_steps)
    n = num_scans if num_scans is not None else max(DEFAULT_SCANS.get(int(sequence), 20), index + 1)
    if not 0 <= index < n:
        raise ConfigError(f"scan index {index} outside 0..{n - 1}")
    return ScanSimulator(sequence, n, seed, sen, frame_step, faults, road).scan(index)


def _read_marker(root: Path):
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def generate(out_dir=DEFAULT_DATA_ROOT, sequences=None, scans=None, seed: int = 0, sensor=None,
             azimuth_steps: int | None = None, faults=None, preview: bool = False, test_labels: bool = False,
             frame_step: float = 0.5, force: bool = False, road=None, log=print) -> dict:
    """Generate synthetic SemanticKITTI-format sequences under `out_dir` and return a summary dict
    (`sequences`: {"NN": {"scans", "points", "labels"}}, `seconds`, `seconds_per_scan`, `label_counts` int64 [65536]
    of raw semantic ids over the labelled scans, `params`).

    sequences: ids (default 00-03, 08, 11); scans: an int for all or a dict id -> count (default `DEFAULT_SCANS`);
    seed: same seed -> byte-identical files; sensor: SensorConfig or dict of its fields; azimuth_steps: override the
    sensor's (e.g. 512 for cheap test data); faults: {"nan": k, "zero_range": k} points per scan (off by default);
    preview: write PNGs of the first scan of each sequence to out_dir/preview; test_labels: also write labels for
    test sequences (11-21); force: write into a directory that holds a dataset not made by this generator; road:
    the ranges of the road surface (`terrain.RoadProfile`: grade, vertical curves, camber, roadside slopes; "flat"
    for a level world).

    A marker file out_dir/.synthetic.json is written first with "complete": false and rewritten last with
    "complete": true, so `ensure_dataset` redoes an interrupted generation.
    """
    counts = _normalise_sequences(sequences, scans)
    sen = SensorConfig.from_options(sensor, azimuth_steps=azimuth_steps)
    fl = _normalise_faults(faults)
    prof = RoadProfile.from_options(road)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise ConfigError(f"seed must be an int, got {seed!r}") from None
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output path {root} exists and is not a directory")
    if (root / "sequences").is_dir() and any((root / "sequences").iterdir()) and _read_marker(root) is None \
            and not force:
        raise ConfigError(f"{root} already holds sequences/ not written by the synthetic generator; "
                          "choose another --out or pass force")
    params = {"version": FORMAT_VERSION, "seed": seed, "scans": {f"{s:02d}": n for s, n in counts.items()},
              "sensor": sen.to_dict(), "faults": fl, "test_labels": bool(test_labels), "frame_step": frame_step,
              "road": prof.to_dict()}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(root / MARKER, json.dumps({"complete": False, **params}, indent=1).encode())

    summary = {"sequences": {}, "params": params}
    label_counts = np.zeros(1 << 16, np.int64)
    total_scans, t_start = 0, time.perf_counter()
    for seq, n in counts.items():
        t_seq = time.perf_counter()
        sim = ScanSimulator(seq, n, seed, sen, frame_step, fl, prof)
        sdir = kitti_sequence_dir(root, seq)
        with_labels = test_labels or seq not in TEST_SEQUENCES
        _remove_stale(sdir, n, with_labels)
        pose0_inv = np.linalg.inv(sim.pose(0))
        tr_inv = np.linalg.inv(_TR)
        poses, times, npts = [], [], 0
        for i in range(n):
            points, labels = sim.scan(i)
            write_scan(kitti_scan_path(root, seq, i), points)
            if with_labels:
                write_label(kitti_label_path(root, seq, i), labels)
                label_counts += np.bincount(labels & 0xFFFF, minlength=1 << 16)
            cam = _TR @ (pose0_inv @ sim.pose(i)) @ tr_inv
            poses.append(" ".join(f"{v:.6e}" for v in cam[:3].ravel()))
            times.append(f"{sim.time(i):.6e}")
            npts += len(points)
            if preview and i == 0:
                from .preview import write_previews
                write_previews(root / "preview" / f"{seq:02d}_{i:06d}", points, labels if with_labels else None,
                               sen.azimuth_steps)
        atomic_write_bytes(sdir / "poses.txt", ("\n".join(poses) + "\n").encode())
        atomic_write_bytes(sdir / "times.txt", ("\n".join(times) + "\n").encode())
        atomic_write_bytes(sdir / "calib.txt", _calib_text().encode())
        dt = time.perf_counter() - t_seq
        total_scans += n
        summary["sequences"][f"{seq:02d}"] = {"scans": n, "points": npts, "labels": with_labels}
        if log:
            log(f"sequence {seq:02d}: {n} scans, {npts / n:.0f} points/scan, {dt / n:.3f} s/scan"
                f"{'' if with_labels else ' (no labels: test split)'}")
    secs = time.perf_counter() - t_start
    summary.update(seconds=secs, seconds_per_scan=secs / max(total_scans, 1), label_counts=label_counts)
    atomic_write_bytes(root / MARKER, json.dumps({"complete": True, **params}, indent=1).encode())
    if log:
        log(f"wrote {total_scans} scans to {root} in {secs:.1f} s ({secs / max(total_scans, 1):.3f} s/scan)")
    return summary


def _remove_stale(sdir: Path, n: int, with_labels: bool):
    """Delete numbered scan/label files of an earlier synthetic run that this run will not rewrite."""
    pat = re.compile(r"^(\d{6})\.(bin|label)$")
    for sub in ("velodyne", "labels"):
        d = sdir / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            m = pat.match(f.name)
            if m and (int(m.group(1)) >= n or (sub == "labels" and not with_labels)):
                f.unlink()


def dataset_complete(root=DEFAULT_DATA_ROOT, **params) -> bool:
    """True when `root` holds a finished synthetic generation whose parameters match (those given)."""
    root = Path(root)
    marker = _read_marker(root)
    if not marker or not marker.get("complete"):
        return False
    for k, v in params.items():
        if marker.get(k) != v:
            return False
    for seq, n in marker.get("scans", {}).items():
        if not (root / "sequences" / seq / "velodyne" / f"{n - 1:06d}.bin").is_file():
            return False
    return True


def ensure_dataset(root=DEFAULT_DATA_ROOT, sequences=None, scans=None, seed: int = 0, log=print, **kwargs) -> Path:
    """Generate the synthetic dataset at `root` unless a complete generation with the same sequences, scan counts,
    seed, sensor and road profile is already there. Returns the root path."""
    root = Path(root)
    counts = _normalise_sequences(sequences, scans)
    sen = SensorConfig.from_options(kwargs.pop("sensor", None), azimuth_steps=kwargs.pop("azimuth_steps", None))
    want = {"version": FORMAT_VERSION, "seed": int(seed), "scans": {f"{s:02d}": n for s, n in counts.items()},
            "sensor": sen.to_dict(), "faults": _normalise_faults(kwargs.get("faults")),
            "test_labels": bool(kwargs.get("test_labels", False)), "frame_step": kwargs.get("frame_step", 0.5),
            "road": RoadProfile.from_options(kwargs.get("road")).to_dict()}
    if dataset_complete(root, **want):
        return root
    generate(root, sequences=list(counts), scans=counts, seed=seed, sensor=sen, log=log, **kwargs)
    return root
