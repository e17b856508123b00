"""RangeNet++'s KNN back-projection (lidar-bonnetal `postproc/KNN.py`), re-implemented.

For every point, the S x S window of the range image around its pixel is searched; each window entry gets the
distance ``|neighbour range - point range| * (1 - G)`` with G the normalised S x S Gaussian (sigma). The centre entry
uses the point's *own* range (distance 0, even for an occluded point), pixels outside the image have range 0 and
label 0 (zero padding, as ``F.unfold``), empty pixels (range < 0) have range +inf. The k smallest distances vote with
the pixel labels (``proj_argmax``); a vote whose distance is > cutoff (when cutoff > 0) goes to a dummy class, and
the result is the most voted class among 1..C-1 (ties -> lowest id; no valid vote -> 1). Points with px or py = -1
(not projected / padding) get class 0.

Tie-break among equal distances (documented convention): when several window entries have the same distance at
the k-th place, the ones that come first in the window's row-major order (dy, then dx) are chosen, i.e. the first k
of a *stable* ascending sort; NaN sorts last. RangeNet++ uses ``topk(sorted=False)``, whose choice among ties is an
implementation detail (CUDA keeps the lowest indices, as here; the CPU kernel's selection algorithm varies between
torch versions). With cutoff > 0 the choice can only change the result when the tied distances are finite and
<= cutoff and their pixels carry different labels, which needs exactly equal float32 ranges; on real or realistic
scans the output is identical to the reference (see docs/bench/knn.md). With cutoff <= 0, inf-distance (empty)
neighbours vote too and the convention matters.

Implementations: `knn_refine_numpy` (numba, one CPU thread) for numpy arrays and CPU tensors, `knn_refine_torch`
(device-agnostic torch, used for CUDA tensors; runs on CPU too). `knn_refine` picks by input type.
"""
from __future__ import annotations

import functools

import numba
import numpy as np
import torch

from ..errors import DataError

__all__ = ["knn_refine", "knn_refine_numpy", "knn_refine_torch", "gaussian_inverse_weights"]


def gaussian_inverse_weights(search: int = 5, sigma: float = 1.0) -> np.ndarray:
    """``1 - G`` flattened row-major, float32 [S*S], computed in float32 with torch exactly as RangeNet++ does
    (``exp(-((i-m)^2 + (j-m)^2) / (2 sigma^2))`` times 1/(2 pi sigma^2), normalised to sum 1)."""
    coords = torch.arange(search)
    x_grid = coords.repeat(search).view(search, search)
    xy = torch.stack([x_grid, x_grid.t()], dim=-1).float()
    mean = (search - 1) / 2.0
    var = float(sigma) ** 2.0
    g = (1.0 / (2.0 * np.pi * var)) * torch.exp(-torch.sum((xy - mean) ** 2.0, dim=-1) / (2 * var))
    g = g / torch.sum(g)
    return (1 - g).reshape(-1).numpy().astype(np.float32)


@functools.lru_cache(maxsize=16)
def _weights_cached(search: int, sigma: float) -> np.ndarray:
    w = gaussian_inverse_weights(search, sigma)
    w.flags.writeable = False
    return w


def _check_params(k, search, num_classes, wrap, width):
    if search < 1 or search % 2 == 0:
        raise ValueError(f"KNN search window must be odd and >= 1, got {search}")
    if not 1 <= k <= search * search:
        raise ValueError(f"KNN k must lie in 1..search^2 = {search * search}, got {k}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if wrap and (search - 1) // 2 > width:
        raise ValueError(f"wrap-around needs image width >= {(search - 1) // 2}, got {width}")


def _check_shapes(proj_range, unproj_range, proj_argmax, px, py):
    if proj_range.ndim != 2:
        raise DataError(f"KNN: proj_range must be [H,W], got shape {tuple(proj_range.shape)}")
    if tuple(proj_argmax.shape) != tuple(proj_range.shape):
        raise DataError(f"KNN: proj_argmax shape {tuple(proj_argmax.shape)} != proj_range shape "
                        f"{tuple(proj_range.shape)}")
    if unproj_range.ndim != 1 or px.ndim != 1 or py.ndim != 1:
        raise DataError(f"KNN: unproj_range, px, py must be 1-D [N], got shapes {tuple(unproj_range.shape)}, "
                        f"{tuple(px.shape)}, {tuple(py.shape)}")
    if not (unproj_range.shape[0] == px.shape[0] == py.shape[0]):
        raise DataError(f"KNN: unproj_range, px, py lengths differ: {unproj_range.shape[0]}, {px.shape[0]}, "
                        f"{py.shape[0]}")


def _check_values(lab_min, lab_max, num_classes, bad_pixels):
    if lab_min < 0 or lab_max >= num_classes:
        raise DataError(f"KNN: proj_argmax values must lie in 0..{num_classes - 1}, got {lab_min}..{lab_max}")
    if bad_pixels:
        raise DataError(f"KNN: {bad_pixels} points have px/py outside the range image (expected -1 for "
                        f"points that are not projected, else 0 <= px < W and 0 <= py < H)")


@numba.njit(cache=True, nogil=True)
def _less(a, b):
    # a < b with NaN ordered after every number (as torch's topk/sort).
    return a < b or (np.isnan(b) and not np.isnan(a))


@numba.njit(cache=True, nogil=True)
def _knn_kernel(proj_range, unproj_range, proj_argmax, px, py, weights, k, search, cutoff, num_classes, wrap, out):
    H, W = proj_range.shape
    pad = (search - 1) // 2
    centre = (search * search - 1) // 2
    inf = np.float32(np.inf)
    zero = np.float32(0.0)
    use_cutoff = cutoff > 0
    best_d = np.empty(k, dtype=np.float32)
    best_l = np.empty(k, dtype=np.int64)
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    bad = 0
    for i in range(px.shape[0]):
        x = px[i]
        y = py[i]
        if x < 0 or y < 0:
            out[i] = 0
            continue
        if x >= W or y >= H:
            out[i] = 0
            bad += 1
            continue
        r = unproj_range[i]
        m = 0
        j = 0
        for dy in range(-pad, pad + 1):
            yy = y + dy
            row_in = 0 <= yy < H
            for dx in range(-pad, pad + 1):
                if j == centre:
                    nr = r
                    lab = proj_argmax[y, x]
                else:
                    xx = x + dx
                    if wrap:
                        if xx < 0:
                            xx += W
                        elif xx >= W:
                            xx -= W
                    if row_in and 0 <= xx < W:
                        nr = proj_range[yy, xx]
                        if nr < zero:
                            nr = inf
                        lab = proj_argmax[yy, xx]
                    else:
                        nr = zero
                        lab = 0
                d = abs(nr - r) * weights[j]
                j += 1
                # keep the k smallest, sorted; strict comparisons keep the earliest entry among equals
                if m < k:
                    pos = m
                    m += 1
                elif _less(d, best_d[k - 1]):
                    pos = k - 1
                else:
                    continue
                while pos > 0 and _less(d, best_d[pos - 1]):
                    best_d[pos] = best_d[pos - 1]
                    best_l[pos] = best_l[pos - 1]
                    pos -= 1
                best_d[pos] = d
                best_l[pos] = lab
        for c in range(num_classes + 1):
            counts[c] = 0
        for t in range(m):
            if use_cutoff and best_d[t] > cutoff:
                continue  # dummy class: discarded
            counts[best_l[t]] += 1
        best = 1
        best_count = counts[1]
        for c in range(2, num_classes):
            if counts[c] > best_count:
                best_count = counts[c]
                best = c
        out[i] = best
    return bad


@numba.njit(cache=True, nogil=True)
def _knn_kernel_5x5(proj_range, unproj_range, proj_argmax, px, py, weights, cutoff, num_classes, wrap, out):
    """Fast path for search = 5, k = 5 and NaN-free ranges; same result as `_knn_kernel`.

    The 25 distances are non-negative floats, whose IEEE bit patterns sort like the values, so each window entry
    becomes the uint64 key (bits << 32 | window index): ordering these keys is the (distance, index) order of the
    tie-break convention, and the 5 smallest are kept with a branch-free min/max insertion network."""
    H, W = proj_range.shape
    inf = np.float32(np.inf)
    zero = np.float32(0.0)
    top = np.uint64(0xFFFFFFFFFFFFFFFF)
    sh = np.uint64(32)
    low = np.uint64(31)
    dist = np.empty(25, dtype=np.float32)
    bits = dist.view(np.uint32)
    labs = np.empty(26, dtype=np.int64)
    labs[25] = num_classes  # the label of an invalid (beyond-cutoff) vote
    cut_bits = np.full(1, cutoff if cutoff > 0 else inf, dtype=np.float32).view(np.uint32)[0]
    sel = np.empty(5, dtype=np.int64)
    bad = 0
    for i in range(px.shape[0]):
        x = px[i]
        y = py[i]
        if x < 0 or y < 0:
            out[i] = 0
            continue
        if x >= W or y >= H:
            out[i] = 0
            bad += 1
            continue
        r = unproj_range[i]
        if 2 <= y < H - 2 and 2 <= x < W - 2:
            for a in range(5):
                row = proj_range[y - 2 + a]
                lrow = proj_argmax[y - 2 + a]
                for b in range(5):
                    nr = row[x - 2 + b]
                    nr = inf if nr < zero else nr
                    dist[a * 5 + b] = abs(nr - r) * weights[a * 5 + b]
                    labs[a * 5 + b] = lrow[x - 2 + b]
        else:
            for a in range(5):
                yy = y - 2 + a
                for b in range(5):
                    xx = x - 2 + b
                    if wrap:
                        if xx < 0:
                            xx += W
                        elif xx >= W:
                            xx -= W
                    if 0 <= yy < H and 0 <= xx < W:
                        nr = proj_range[yy, xx]
                        nr = inf if nr < zero else nr
                        labs[a * 5 + b] = proj_argmax[yy, xx]
                    else:
                        nr = zero
                        labs[a * 5 + b] = 0
                    dist[a * 5 + b] = abs(nr - r) * weights[a * 5 + b]
        dist[12] = abs(r - r) * weights[12]
        labs[12] = proj_argmax[y, x]
        b0 = top
        b1 = top
        b2 = top
        b3 = top
        b4 = top
        for j in range(25):
            v = (np.uint64(bits[j]) << sh) | np.uint64(j)
            lo = min(b0, v)
            v = max(b0, v)
            b0 = lo
            lo = min(b1, v)
            v = max(b1, v)
            b1 = lo
            lo = min(b2, v)
            v = max(b2, v)
            b2 = lo
            lo = min(b3, v)
            v = max(b3, v)
            b3 = lo
            b4 = min(b4, v)
        # window index of each selected entry, or 25 (-> dummy label) when its distance is beyond the cutoff
        sel[0] = (b0 & low) if (b0 >> sh) <= cut_bits else 25
        sel[1] = (b1 & low) if (b1 >> sh) <= cut_bits else 25
        sel[2] = (b2 & low) if (b2 >> sh) <= cut_bits else 25
        sel[3] = (b3 & low) if (b3 >> sh) <= cut_bits else 25
        sel[4] = (b4 & low) if (b4 >> sh) <= cut_bits else 25
        # mode of the 5 labels over classes 1..C-1: score = count * (C + 1) + (C - label), highest wins
        best_score = -1
        best = 1
        for t in range(5):
            lt = labs[sel[t]]
            cnt = 0
            for u in range(5):
                cnt += labs[sel[u]] == lt
            score = cnt * (num_classes + 1) + (num_classes - lt)
            if lt >= 1 and lt < num_classes and score > best_score:
                best_score = score
                best = lt
        out[i] = best
    return bad


def knn_refine_numpy(proj_range, unproj_range, proj_argmax, px, py, k=5, search=5, sigma=1.0, cutoff=1.0,
                     num_classes=20, wrap=False, fast_path_off=False) -> np.ndarray:
    """numba implementation on numpy arrays (one thread); returns int64 [N] train ids. Ranges are used as
    float32. search = k = 5 without NaN ranges takes a branch-free fast path (`fast_path_off=True` forces the
    general kernel; both give the same result)."""
    proj_range = np.asarray(proj_range)
    unproj_range = np.asarray(unproj_range)
    proj_argmax = np.asarray(proj_argmax)
    px = np.asarray(px)
    py = np.asarray(py)
    _check_shapes(proj_range, unproj_range, proj_argmax, px, py)
    for name, a in (("proj_range", proj_range), ("unproj_range", unproj_range)):
        if not np.issubdtype(a.dtype, np.floating):
            raise DataError(f"KNN: {name} must be floating point, got {a.dtype}")
    for name, a in (("proj_argmax", proj_argmax), ("px", px), ("py", py)):
        if not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"KNN: {name} must be integer, got {a.dtype}")
    H, W = proj_range.shape
    _check_params(k, search, num_classes, wrap, W)
    proj_range = np.ascontiguousarray(proj_range, dtype=np.float32)
    unproj_range = np.ascontiguousarray(unproj_range, dtype=np.float32)
    proj_argmax = np.ascontiguousarray(proj_argmax, dtype=np.int64)
    px = np.ascontiguousarray(px, dtype=np.int64)
    py = np.ascontiguousarray(py, dtype=np.int64)
    if proj_argmax.size:
        _check_values(int(proj_argmax.min()), int(proj_argmax.max()), num_classes, 0)
    out = np.empty(px.shape[0], dtype=np.int64)
    weights = _weights_cached(search, float(sigma))
    if search == 5 and k == 5 and not fast_path_off and not (np.isnan(proj_range).any()
                                                            or np.isnan(unproj_range).any()):
        bad = _knn_kernel_5x5(proj_range, unproj_range, proj_argmax, px, py, weights, np.float32(cutoff),
                              int(num_classes), bool(wrap), out)
    else:
        bad = _knn_kernel(proj_range, unproj_range, proj_argmax, px, py, weights, int(k), int(search),
                          np.float32(cutoff), int(num_classes), bool(wrap), out)
    _check_values(0, 0, num_classes, int(bad))
    return out


def knn_refine_torch(proj_range, unproj_range, proj_argmax, px, py, k=5, search=5, sigma=1.0, cutoff=1.0,
                     num_classes=20, wrap=False) -> torch.Tensor:
    """Device-agnostic torch implementation (used for CUDA tensors); same semantics and tie-break as the numba
    one. Returns int64 [N] on the input's device."""
    _check_shapes(proj_range, unproj_range, proj_argmax, px, py)
    H, W = proj_range.shape
    _check_params(k, search, num_classes, wrap, W)
    device = proj_range.device
    pad = (search - 1) // 2
    centre = (search * search - 1) // 2
    rng = proj_range.to(torch.float32)
    rng = torch.where(rng < 0, torch.full_like(rng, float("inf")), rng)
    lab = proj_argmax.to(device=device, dtype=torch.int64)
    px = px.to(device=device, dtype=torch.int64)
    py = py.to(device=device, dtype=torch.int64)
    r_all = unproj_range.to(device=device, dtype=torch.float32)
    projected = (px >= 0) & (py >= 0)
    bad = projected & ((px >= W) | (py >= H))
    if lab.numel():
        stats = torch.stack([lab.min(), lab.max(), bad.sum()]).tolist()
        _check_values(stats[0], stats[1], num_classes, stats[2])
    if wrap and pad:
        rng = torch.cat([rng[:, W - pad:], rng, rng[:, :pad]], dim=1)
        lab = torch.cat([lab[:, W - pad:], lab, lab[:, :pad]], dim=1)
        rng = torch.nn.functional.pad(rng, (0, 0, pad, pad), value=0.0)
        lab = torch.nn.functional.pad(lab, (0, 0, pad, pad), value=0)
    else:
        rng = torch.nn.functional.pad(rng, (pad, pad, pad, pad), value=0.0)
        lab = torch.nn.functional.pad(lab, (pad, pad, pad, pad), value=0)
    wp = W + 2 * pad
    sel = projected.nonzero().squeeze(1)
    r = r_all[sel]
    base = (py[sel] + pad) * wp + (px[sel] + pad)
    d = torch.arange(-pad, pad + 1, device=device)
    offsets = (d[:, None] * wp + d[None, :]).reshape(-1)
    nidx = base[:, None] + offsets[None, :]                        # [P, S*S]
    neigh = rng.reshape(-1)[nidx]
    neigh[:, centre] = r
    weights = torch.from_numpy(gaussian_inverse_weights(search, sigma)).to(device)
    dist = (neigh - r[:, None]).abs() * weights[None, :]
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]    # lowest window index first among ties
    knn_lab = torch.gather(lab.reshape(-1)[nidx], 1, order)
    if cutoff > 0:
        knn_dist = torch.gather(dist, 1, order)
        knn_lab = torch.where(knn_dist > torch.tensor(cutoff, dtype=torch.float32, device=device),
                              torch.full_like(knn_lab, num_classes), knn_lab)
    counts = torch.zeros(sel.shape[0], num_classes + 1, dtype=torch.int32, device=device)
    counts.scatter_add_(1, knn_lab, torch.ones_like(knn_lab, dtype=torch.int32))
    out = torch.zeros(px.shape[0], dtype=torch.int64, device=device)
    out[sel] = counts[:, 1:num_classes].argmax(dim=1) + 1
    return out


def knn_refine(proj_range, unproj_range, proj_argmax, px, py, k=5, search=5, sigma=1.0, cutoff=1.0,
               num_classes=20, wrap=False):
    """RangeNet++ KNN back-projection of pixel labels `proj_argmax` [H,W] to the N points.

    proj_range [H,W] raw ranges (-1 = empty); unproj_range [N] point ranges; px, py [N] pixel of each point
    (-1 = not projected -> class 0). numpy arrays -> numba, int64 numpy [N]; CPU tensors -> numba, int64 tensor;
    tensors on another device (CUDA) -> the torch implementation on that device. `wrap=True` wraps the window
    around horizontally (the 360-degree seam) instead of zero padding; off by default, as published."""
    kwargs = dict(k=k, search=search, sigma=sigma, cutoff=cutoff, num_classes=num_classes, wrap=wrap)
    if isinstance(proj_range, torch.Tensor):
        if proj_range.device.type != "cpu":
            return knn_refine_torch(proj_range, unproj_range, proj_argmax, px, py, **kwargs)
        arrays = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
                  for a in (proj_range, unproj_range, proj_argmax, px, py)]
        return torch.from_numpy(knn_refine_numpy(*arrays, **kwargs))
    return knn_refine_numpy(proj_range, unproj_range, proj_argmax, px, py, **kwargs)
