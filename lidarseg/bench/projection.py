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
    parser.add_argument("--scan", default=None,
                        help="a .bin scan to use (default: synthetic sequence 08 scan 0, ~118k points)")
    parser.add_argument("--sequence", type=int, default=8, help="synthetic sequence of the generated scan")
    parser.add_argument("--index", type=int, default=0, help="scan index in that sequence")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per variant (median reported)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=2048)


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
            from ..data.synthetic import generate_scan
            write_scan(path, generate_scan(args.sequence, args.index)[0])
        points = read_scan(path)
        ref = rangenet_numpy(points, H, W)
        ours = spherical_projection(points, H, W)
        moved = int(np.sum((ours.px != ref[4]) | (ours.py != ref[5])))
        reuse = [spherical_projection(points, H, W)]  # buffers for the `out=` variant

        variants = [
            ("numpy (RangeNet++ transcription)", lambda: rangenet_numpy(read_scan(path), H, W)),
            ("numba, one thread", lambda: spherical_projection(read_scan(path), H, W, parallel=False)),
            ("numba, one thread, reused output (out=)",
             lambda: reuse.__setitem__(0, spherical_projection(read_scan(path), H, W, out=reuse[0]))),
            (f"numba, {numba.get_num_threads()} threads", lambda: spherical_projection(read_scan(path), H, W,
                                                                                       parallel=True)),
            ("read_scan only", lambda: read_scan(path)),
        ]
        results = [(name, median_ms(time_call(fn, repeat=args.repeat, warmup=3))) for name, fn in variants]
    base = results[0][1]
    print(f"read + spherical projection, {points.shape[0]} points, {H}x{W}, median of {args.repeat} runs "
          f"({datetime.date.today().isoformat()}, {os.cpu_count()} cpus)")
    rows = [[name, f"{ms:.3f}", f"{base / ms:.1f}x" if i < 4 else "-"] for i, (name, ms) in enumerate(results)]
    print_table(rows, ["variant", "ms/scan", "speed-up vs numpy"])
    print(f"points in a different pixel than the numpy transcription (float32 rounding at a border): {moved}")
    return 0
