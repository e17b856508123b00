"""`lidarseg bench knn`: KNN back-projection of a ~120k-point street-like scan at 64x2048, numba vs a transcription
of RangeNet++'s torch KNN (F.unfold + topk, run in this process), both on one CPU thread.

The scan is ray-cast from a simple street scene (road, sidewalks, kerbs, building facades, parked cars, poles,
trees, sky), so the range image has empty pixels, occlusions, border pixels and several points per pixel; the
"network prediction" is the pixel's true class with 10% of the pixels (and every empty pixel) given a random class.
`make_street_scan` and `spherical_projection_f32` are also used by the tests.
"""
from __future__ import annotations

import datetime
import platform

import numpy as np

from .common import median_ms, print_table, time_call

# train ids of the synthetic scene's surfaces (SemanticKITTI learning_map order)
CAR, ROAD, SIDEWALK, BUILDING, FENCE, VEGETATION, TRUNK, TERRAIN, POLE = 1, 9, 11, 13, 14, 15, 16, 17, 18


def add_arguments(parser):
    parser.add_argument("--points", type=int, default=120_000, help="approximate number of points (default 120000)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)


def make_street_scan(num_points: int = 120_000, seed: int = 0):
    """Ray-cast a street scene with a 64-beam sensor at 1.73 m. Returns (points float32 [N,4], train ids int64 [N]).

    Rays that hit nothing within 80 m (sky) give no point, so N is a little below `num_points`; about 3% of the
    points are duplicated with a small jitter (several points per pixel, as in real scans)."""
    rng = np.random.default_rng(seed)
    n_az = max(8, int(round(num_points / 64 / 0.95)))
    pitch = np.deg2rad(np.linspace(2.0, -24.8, 64))[:, None] + rng.normal(0, 0.0006, (64, n_az))
    yaw = np.linspace(-np.pi, np.pi, n_az, endpoint=False)[None, :] + rng.uniform(0, 2 * np.pi / n_az, (64, n_az))
    d = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], -1).reshape(-1, 3)
    h = 1.73
    t_best = np.full(d.shape[0], np.inf)
    lab = np.zeros(d.shape[0], dtype=np.int64)

    def hit(t, c):
        nonlocal t_best
        t = np.where((t > 0.5) & np.isfinite(t), t, np.inf)
        better = t < t_best
        t_best = np.where(better, t, t_best)
        lab[better] = c

    with np.errstate(divide="ignore", invalid="ignore"):
        # ground: road for |y| < 6, kerb + sidewalk 6..9, terrain beyond the gaps; z = -h (sidewalk + 0.15)
        tg = -h / d[:, 2]
        yg = tg * d[:, 1]
        hit(np.where(np.abs(yg) < 6.0, tg, np.inf), ROAD)
        ts = -(h - 0.15) / d[:, 2]
        ys = np.abs(ts * d[:, 1])
        xs = ts * d[:, 0]
        hit(np.where((ys >= 6.0) & (ys < 9.0), ts, np.inf), SIDEWALK)
        hit(np.where((ys >= 9.0) & (np.sin(xs / 7.0) > 0.6), ts, np.inf), TERRAIN)
        # facades at |y| = 9..11 with gaps (side streets), and a fence in one gap
        for side in (-1.0, 1.0):
            wall_y = side * (9.0 + 2.0 * (side > 0))
            tw = wall_y / d[:, 1]
            xw, zw = tw * d[:, 0], tw * d[:, 2] + h
            hit(np.where((np.abs(np.sin(xw / 11.0)) < 0.93) & (zw < 12.0), tw, np.inf), BUILDING)
            hit(np.where((np.abs(np.sin(xw / 11.0)) >= 0.93) & (zw < 1.2), tw + 0.0, np.inf), FENCE)
        # parked cars: axis-aligned boxes (slab test)
        for cx in rng.uniform(-40, 40, 14):
            cy = rng.choice([-4.5, 4.5]) + rng.normal(0, 0.2)
            lo = np.array([cx - 2.2, cy - 0.9, -h])
            hi = np.array([cx + 2.2, cy + 0.9, -h + 1.5])
            t1, t2 = (lo - 0.0) / d, (hi - 0.0) / d
            tmin = np.max(np.minimum(t1, t2), axis=1)
            tmax = np.min(np.maximum(t1, t2), axis=1)
            hit(np.where(tmax >= np.maximum(tmin, 0), tmin, np.inf), CAR)
        # poles and tree trunks (vertical cylinders), tree crowns (spheres)
        dxy2 = d[:, 0] ** 2 + d[:, 1] ** 2
        for k, cx in enumerate(rng.uniform(-50, 50, 24)):
            cy = rng.choice([-7.5, 7.5]) + rng.normal(0, 0.3)
            rad, top, cls = (0.08, 6.0, POLE) if k % 2 else (0.2, 3.0, TRUNK)
            b = d[:, 0] * cx + d[:, 1] * cy
            disc = b * b - dxy2 * (cx * cx + cy * cy - rad * rad)
            tc = (b - np.sqrt(disc)) / dxy2
            zc = tc * d[:, 2] + h
            hit(np.where((disc >= 0) & (zc < top), tc, np.inf), cls)
            if cls == TRUNK:
                c = np.array([cx, cy, -h + 4.2])
                bs = d @ c
                ds = bs * bs - (c @ c - 2.0 ** 2)
                hit(np.where(ds >= 0, bs - np.sqrt(ds), np.inf), VEGETATION)
    keep = t_best < 80.0
    t = t_best[keep] + rng.normal(0, 0.01, keep.sum())
    xyz = (d[keep] * t[:, None]).astype(np.float32)
    labels = lab[keep]
    dup = rng.random(xyz.shape[0]) < 0.03
    xyz = np.concatenate([xyz, xyz[dup] + rng.normal(0, 0.02, (dup.sum(), 3)).astype(np.float32)])
    labels = np.concatenate([labels, labels[dup]])
    perm = rng.permutation(xyz.shape[0])
    xyz, labels = xyz[perm], labels[perm]
    remission = rng.uniform(0, 1, xyz.shape[0]).astype(np.float32)
    return np.concatenate([xyz, remission[:, None]], 1), labels


def spherical_projection_f32(points, H=64, W=2048, fov_up=3.0, fov_down=-25.0):
    """RangeNet++'s projection in float32 (spec §1.3; nearest point wins a pixel). Returns
    (proj_range [H,W] (-1 empty), proj_idx [H,W] (-1 empty), unproj_range [N], px [N], py [N] int64)."""
    xyz = np.asarray(points, dtype=np.float32)[:, :3]
    fu = np.float32(fov_up / 180.0 * np.pi)
    fd = np.float32(fov_down / 180.0 * np.pi)
    fov = abs(fd) + abs(fu)
    depth = np.linalg.norm(xyz, 2, axis=1)
    yaw = -np.arctan2(xyz[:, 1], xyz[:, 0])
    pitch = np.arcsin(xyz[:, 2] / depth)
    u = 0.5 * (yaw / np.float32(np.pi) + np.float32(1.0)) * np.float32(W)
    v = (np.float32(1.0) - (pitch + abs(fd)) / fov) * np.float32(H)
    px = np.clip(np.floor(u), 0, W - 1).astype(np.int64)
    py = np.clip(np.floor(v), 0, H - 1).astype(np.int64)
    order = np.argsort(depth, kind="stable")[::-1]
    proj_range = np.full((H, W), -1, dtype=np.float32)
    proj_idx = np.full((H, W), -1, dtype=np.int64)
    proj_range[py[order], px[order]] = depth[order]
    proj_idx[py[order], px[order]] = order
    return proj_range, proj_idx, depth.astype(np.float32), px, py


def make_knn_inputs(num_points=120_000, H=64, W=2048, seed=0, num_classes=20, noise=0.1):
    """A realistic KNN input: (proj_range, unproj_range, proj_argmax, px, py, point_labels)."""
    points, labels = make_street_scan(num_points, seed)
    proj_range, proj_idx, unproj_range, px, py = spherical_projection_f32(points, H, W)
    rng = np.random.default_rng(seed + 1)
    proj_argmax = np.where(proj_idx >= 0, labels[np.maximum(proj_idx, 0)], 0)
    flip = (rng.random((H, W)) < noise) | (proj_idx < 0)
    proj_argmax = np.where(flip, rng.integers(0, num_classes, (H, W)), proj_argmax).astype(np.int64)
    return proj_range, unproj_range, proj_argmax, px, py, labels


def reference_knn_torch(proj_range, unproj_range, proj_argmax, px, py, k=5, search=5, sigma=1.0, cutoff=1.0,
                        num_classes=20):
    """RangeNet++'s KNN forward (spec §6) transcribed step by step in torch: unfold, gather, inf for empty, own
    range in the centre, (1 - Gaussian) weighting, topk(sorted=False), dummy class beyond the cutoff,
    scatter_add votes, argmax over classes 1..C-1."""
    import math

    import torch
    import torch.nn.functional as F

    H, W = proj_range.shape
    P = unproj_range.shape
    pad = (search - 1) // 2
    unfold_rng = F.unfold(proj_range[None, None], kernel_size=(search, search), padding=(pad, pad))
    idx = py * W + px
    neigh = unfold_rng[:, :, idx]
    neigh[neigh < 0] = float("inf")
    centre = (search * search - 1) // 2
    neigh[:, centre, :] = unproj_range
    dist = torch.abs(neigh - unproj_range)
    coords = torch.arange(search)
    x_grid = coords.repeat(search).view(search, search)
    xy = torch.stack([x_grid, x_grid.t()], dim=-1).float()
    var = sigma ** 2.0
    g = (1.0 / (2.0 * math.pi * var)) * torch.exp(-torch.sum((xy - (search - 1) / 2.0) ** 2.0, dim=-1) / (2 * var))
    g = g / torch.sum(g)
    dist = dist * (1 - g).view(1, -1, 1)
    _, knn_idx = dist.topk(k, dim=1, largest=False, sorted=False)
    unfold_lab = F.unfold(proj_argmax[None, None].float(), kernel_size=(search, search), padding=(pad, pad)).long()
    knn_lab = torch.gather(unfold_lab[:, :, idx], 1, knn_idx)
    if cutoff > 0:
        knn_lab[torch.gather(dist, 1, knn_idx) > cutoff] = num_classes
    votes = torch.zeros((1, num_classes + 1, P[0]), dtype=proj_range.dtype)
    votes.scatter_add_(1, knn_lab, torch.ones_like(knn_lab, dtype=proj_range.dtype))
    return (votes[:, 1:-1].argmax(dim=1) + 1).view(P)


def run(args) -> int:
    import numba
    import torch

    from ..postproc.knn import knn_refine_numpy, knn_refine_torch

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    proj_range, unproj_range, proj_argmax, px, py, _ = make_knn_inputs(args.points, args.height, args.width,
                                                                        args.seed)
    n = unproj_range.shape[0]
    filled = float((proj_range >= 0).mean())
    print(f"scan: {n} points, {args.height}x{args.width} image, {100 * filled:.1f}% pixels filled, "
          f"{n - int((proj_range >= 0).sum())} points occluded (share a pixel)")
    t_args = [torch.from_numpy(a) for a in (proj_range, unproj_range, proj_argmax, px, py)]
    ref = reference_knn_torch(*t_args).numpy()
    ours = knn_refine_numpy(proj_range, unproj_range, proj_argmax, px, py)
    ours_t = knn_refine_torch(*t_args).numpy()
    print(f"identical to the reference: numba {int((ours == ref).sum())}/{n}, "
          f"torch {int((ours_t == ref).sum())}/{n} points")
    t_ref = time_call(lambda: reference_knn_torch(*t_args), repeat=max(3, args.repeat // 3))
    t_numba = time_call(lambda: knn_refine_numpy(proj_range, unproj_range, proj_argmax, px, py),
                        repeat=args.repeat)
    t_torch = time_call(lambda: knn_refine_torch(*t_args), repeat=max(3, args.repeat // 3))
    ref_ms = median_ms(t_ref)
    rows = [["RangeNet++ torch KNN (reference transcription)", f"{ref_ms:.1f}", "1.0x"],
            ["lidarseg numba (knn_refine on numpy)", f"{median_ms(t_numba):.2f}",
             f"{ref_ms / median_ms(t_numba):.1f}x"],
            ["lidarseg torch (knn_refine_torch, CPU)", f"{median_ms(t_torch):.1f}",
             f"{ref_ms / median_ms(t_torch):.1f}x"]]
    print_table(rows, ["implementation (1 thread)", "median ms", "speed-up"])
    print(f"{datetime.date.today()}  python {platform.python_version()}  torch {torch.__version__}  "
          f"numba {numba.__version__}")
    return 0 if (ours == ref).all() and (ours_t == ref).all() else 1
