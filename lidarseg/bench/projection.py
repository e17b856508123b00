"""`lidarseg bench projection`: read + spherical projection of a ~120k-point scan, numba (threads and one thread)
against a plain-numpy transcription of RangeNet++'s `do_range_projection` (rangenet.md §1.3), in one process;
medians of repeated runs and the ratio."""
from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path

import numpy as np

from .common import median_ms, print_table, time_call


def add_arguments(parser):
    parser.add_argument("--scan", default=None, help="a .bin scan to use (default: a generated ~120k-point scan)")
    parser.add_argument("--points", type=int, default=120_000, help="points of the generated scan")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per variant (median reported)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=2048)


def street_scan(num_points: int = 120_000, seed: int = 0) -> np.ndarray:
    """A KITTI-like scan float32 [N,4]: 64 rings from +2 to -24.8 degrees in ring-major order, each ring
    counter-clockwise; returns from a ground plane 1.73 m below the sensor, two building facades and a few
    cylindrical obstacles, with range noise; about 8% of beam directions return nothing."""
    rs = np.random.default_rng(seed)
    rings = 64
    per_ring = int(np.ceil(num_points / rings / 0.92))
    elev = np.deg2rad(np.linspace(2.0, -24.8, rings))[:, None]
    az = np.linspace(0, 2 * np.pi, per_ring, endpoint=False)[None, :] + rs.uniform(0, 1e-3, (rings, per_ring))
    dx, dy, dz = np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev) * np.ones_like(az)
    r = np.full(az.shape, 80.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = np.where(dz < 0, -1.73 / dz, np.inf)
        wall_l = np.where(dy > 0, 7.5 / dy, np.inf)
        wall_r = np.where(dy < 0, -6.0 / dy, np.inf)
    r = np.minimum.reduce([r, ground, wall_l, wall_r])
    for cx, cy, rad in [(8, 3, 0.4), (15, -2, 1.0), (-10, 4, 0.6), (25, 0, 1.5), (-6, -3, 0.3)]:
        b = dx * cx + dy * cy
        c = cx * cx + cy * cy - rad * rad
        h = np.sqrt(np.maximum(b * b - c * (dx * dx + dy * dy), 0)) / np.maximum(dx * dx + dy * dy, 1e-9)
        t = b / np.maximum(dx * dx + dy * dy, 1e-9) - h
        hit = (b * b - c * (dx * dx + dy * dy) > 0) & (t > 0)
        r = np.where(hit, np.minimum(r, t), r)
    r = r + rs.normal(0, 0.02, r.shape)
    xyz = np.stack([dx * r, dy * r, dz * r], -1).reshape(-1, 3)
    keep = rs.random(xyz.shape[0]) > 0.08
    xyz = xyz[keep][:num_points]
    remission = rs.random(xyz.shape[0])
    return np.concatenate([xyz, remission[:, None]], 1).astype(np.float32)


def rangenet_numpy(points: np.ndarray, H=64, W=2048, fov_up=3.0, fov_down=-25.0):
    """RangeNet++'s `do_range_projection` in plain numpy (float32, argsort, nearest written last)."""
    xyz = points[:, :3]
    remission = points[:, 3]
    fu = fov_up / 180.0 * np.pi
    fd = fov_down / 180.0 * np.pi
    fov = abs(fd) + abs(fu)
    depth = np.linalg.norm(xyz, 2, axis=1)
    yaw = -np.arctan2(xyz[:, 1], xyz[:, 0])
    pitch = np.arcsin(xyz[:, 2] / depth)
    u = 0.5 * (yaw / np.pi + 1.0) * W
    v = (1.0 - (pitch + abs(fd)) / fov) * H
    px = np.maximum(0, np.minimum(W - 1, np.floor(u))).astype(np.int32)
    py = np.maximum(0, np.minimum(H - 1, np.floor(v))).astype(np.int32)
    order = np.argsort(depth)[::-1]
    proj_range = np.full((H, W), -1, np.float32)
    proj_xyz = np.full((H, W, 3), -1, np.float32)
    proj_rem = np.full((H, W), -1, np.float32)
    proj_idx = np.full((H, W), -1, np.int32)
    ys, xs = py[order], px[order]
    proj_range[ys, xs] = depth[order]
    proj_xyz[ys, xs] = xyz[order]
    proj_rem[ys, xs] = remission[order]
    proj_idx[ys, xs] = np.arange(len(depth), dtype=np.int32)[order]
    return proj_range, proj_xyz, proj_rem, proj_idx, px, py


def run(args) -> int:
    import numba

    from ..data.io import read_scan, write_scan
    from ..data.projection import spherical_projection

    H, W = args.height, args.width
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.scan) if args.scan else Path(tmp) / "000000.bin"
        if not args.scan:
            write_scan(path, street_scan(args.points))
        points = read_scan(path)
        ref = rangenet_numpy(points, H, W)
        ours = spherical_projection(points, H, W)
        moved = int(np.sum((ours.px != ref[4]) | (ours.py != ref[5])))

        variants = [
            ("numpy (RangeNet++ transcription)", lambda: rangenet_numpy(read_scan(path), H, W)),
            ("numba, one thread", lambda: spherical_projection(read_scan(path), H, W, parallel=False)),
            (f"numba, {numba.get_num_threads()} threads", lambda: spherical_projection(read_scan(path), H, W,
                                                                                       parallel=True)),
            ("read_scan only", lambda: read_scan(path)),
        ]
        results = [(name, median_ms(time_call(fn, repeat=args.repeat, warmup=3))) for name, fn in variants]
    base = results[0][1]
    print(f"read + spherical projection, {points.shape[0]} points, {H}x{W}, median of {args.repeat} runs "
          f"({datetime.date.today().isoformat()}, {os.cpu_count()} cpus)")
    rows = [[name, f"{ms:.3f}", f"{base / ms:.1f}x" if i < 3 else "-"] for i, (name, ms) in enumerate(results)]
    print_table(rows, ["variant", "ms/scan", "speed-up vs numpy"])
    print(f"points in a different pixel than the numpy transcription (float32 rounding at a border): {moved}")
    return 0
