"""`lidarseg bench knn`: KNN back-projection of a ~120k-point scan at 64x2048, numba vs a transcription of
RangeNet++'s torch KNN (F.unfold + topk, run in this process), both on one CPU thread.

The scan comes from the synthetic generator (`lidarseg.data.synthetic.generate_scan`: ray-cast street scenes with
empty pixels, occlusions and several points per pixel), projected with `lidarseg.data.projection`; the "network
prediction" is the pixel's true class with 10% of the pixels (and every empty pixel) given a random class.
`make_knn_inputs` and `reference_knn_torch` are also used by the tests.
"""
from __future__ import annotations

import datetime
import platform

import numpy as np

from .common import median_ms, print_table, time_call



def add_arguments(parser):
    parser.add_argument("--sequence", type=int, default=8, help="synthetic sequence of the scan (default 8)")
    parser.add_argument("--index", type=int, default=0, help="scan index in the sequence (default 0)")
    parser.add_argument("--azimuth-steps", type=int, default=None,
                        help="sensor azimuth steps (default: the synthetic sensor's 2048, ~118k points)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)


def make_knn_inputs(points, labels, height=64, width=2048, seed=0, num_classes=20, noise=0.1):
    """A realistic KNN input from a scan (points float32 [N,4], train ids [N]): RangeNet++'s spherical projection
    and a "network prediction" that is the winning point's class with `noise` of the pixels (and every empty
    pixel) given a random class. Returns (proj_range, unproj_range, proj_argmax, px, py)."""
    from ..data.projection import spherical_projection

    proj = spherical_projection(points, height, width)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed + 1)
    proj_argmax = np.where(proj.idx >= 0, labels[np.maximum(proj.idx, 0)], 0)
    flip = (rng.random((height, width)) < noise) | (proj.idx < 0)
    proj_argmax = np.where(flip, rng.integers(0, num_classes, (height, width)), proj_argmax).astype(np.int64)
    return proj.range, proj.unproj_range, proj_argmax, proj.px, proj.py


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

    from ..data.labels import LabelMap
    from ..data.synthetic import generate_scan
    from ..postproc.knn import knn_refine_numpy, knn_refine_torch

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    points, raw = generate_scan(args.sequence, args.index, seed=args.seed, azimuth_steps=args.azimuth_steps)
    proj_range, unproj_range, proj_argmax, px, py = make_knn_inputs(points, LabelMap.from_yaml().to_train(raw),
                                                                    args.height, args.width, args.seed)
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
    t_general = time_call(lambda: knn_refine_numpy(proj_range, unproj_range, proj_argmax, px, py,
                                                   fast_path_off=True), repeat=max(3, args.repeat // 3))
    t_torch = time_call(lambda: knn_refine_torch(*t_args), repeat=max(3, args.repeat // 3))
    ref_ms = median_ms(t_ref)
    rows = [["RangeNet++ torch KNN (reference transcription)", f"{ref_ms:.1f}", "1.0x"],
            ["lidarseg numba (knn_refine on numpy)", f"{median_ms(t_numba):.2f}",
             f"{ref_ms / median_ms(t_numba):.1f}x"],
            ["lidarseg numba, general kernel (fast_path_off)", f"{median_ms(t_general):.1f}",
             f"{ref_ms / median_ms(t_general):.1f}x"],
            ["lidarseg torch (knn_refine_torch, CPU)", f"{median_ms(t_torch):.1f}",
             f"{ref_ms / median_ms(t_torch):.1f}x"]]
    print_table(rows, ["implementation (1 thread)", "median ms", "speed-up"])
    print(f"{datetime.date.today()}  python {platform.python_version()}  torch {torch.__version__}  "
          f"numba {numba.__version__}")
    return 0 if (ours == ref).all() and (ours_t == ref).all() else 1
