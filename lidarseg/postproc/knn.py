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
def _padded_images(proj_range, proj_argmax, pad, wrap):
    """The range and label images with `pad` pixels on every side, flattened row-major (width W + 2 pad):
    empty pixels (range < 0) get range +inf; the padding is range 0, label 0 (zero padding), except that with
    `wrap` the left/right padding repeats the columns of the other side (the rows above and below stay zero).
    Built once per call, so the kernels read any window entry with one load and no border test."""
    H, W = proj_range.shape
    Wp = W + 2 * pad
    rng = np.zeros((H + 2 * pad) * Wp, dtype=np.float32)
    lab = np.zeros((H + 2 * pad) * Wp, dtype=np.int32)
    inf = np.float32(np.inf)
    for y in range(H):
        row = (y + pad) * Wp + pad
        for x in range(W):
            v = proj_range[y, x]
            rng[row + x] = inf if v < 0 else v
            lab[row + x] = proj_argmax[y, x]
        if wrap:
            for c in range(pad):
                rng[row - pad + c] = rng[row + W - pad + c]
                lab[row - pad + c] = lab[row + W - pad + c]
                rng[row + W + c] = rng[row + c]
                lab[row + W + c] = lab[row + c]
    return rng, lab


@numba.njit(cache=True, nogil=True)
def _window_offsets(search, padded_width):
    """Flat offsets of the S x S window entries (row-major) from the window's top-left corner."""
    off = np.empty(search * search, dtype=np.int64)
    for a in range(search):
        for b in range(search):
            off[a * search + b] = a * padded_width + b
    return off


@numba.njit(cache=True, nogil=True, inline="always")
def _window_start(x, y, W, H, padded_width):
    """Flat index of the top-left corner of the window around pixel (x, y) in the padded images; -1 for a point
    that is not projected (x or y < 0), -2 for a pixel outside the image."""
    if x < 0 or y < 0:
        return -1
    if x >= W or y >= H:
        return -2
    return y * padded_width + x


@numba.njit(cache=True, nogil=True)
def _knn_kernel(rng, lab, W, H, unproj_range, px, py, weights, k, search, cutoff, num_classes, out):
    """General kernel (any odd search, any k, NaN ranges) on the padded images of `_padded_images`."""
    Wp = W + search - 1
    centre = (search * search - 1) // 2
    off = _window_offsets(search, Wp)
    use_cutoff = cutoff > 0
    best_d = np.empty(k, dtype=np.float32)
    best_l = np.empty(k, dtype=np.int64)
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    bad = 0
    for i in range(px.shape[0]):
        start = _window_start(px[i], py[i], W, H, Wp)
        if start < 0:
            out[i] = 0
            bad += start == -2
            continue
        r = unproj_range[i]
        m = 0
        for j in range(search * search):
            nr = r if j == centre else rng[start + off[j]]
            d = abs(nr - r) * weights[j]
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
            best_l[pos] = lab[start + off[j]]
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


_BATCH = 32  # points per batch of the 5x5 kernel (the SIMD lanes run over the points of a batch)


@numba.njit(cache=True, nogil=True)
def _knn_kernel_5x5(rng, lab, W, H, unproj_range, px, py, weights, cutoff, num_classes, out):
    """Fast path for search = 5, k = 5 and finite distances (no NaN range, finite point ranges); same result as
    `_knn_kernel`.

    Points are processed in batches of `_BATCH`, each step a loop over the points of the batch without branches,
    which the compiler vectorises: (1) the 25 distances of every point, stored [entry, point]; (2) the 5
    smallest: the distances are non-negative floats, whose IEEE bit patterns sort like the values, so each window
    entry becomes the uint64 key (bits << 32 | window index), ordering these keys is the (distance, index) order
    of the tie-break convention, and a min/max insertion network keeps the 5 smallest; (3) their labels (the
    dummy class C beyond the cutoff); (4) the vote: score = count * (C + 1) + (C - label) for labels in 1..C-1,
    the highest score wins (most votes, then lowest id), no valid vote -> class 1."""
    B = _BATCH
    Wp = W + 4
    off = _window_offsets(5, Wp)
    n = px.shape[0]
    dist = np.zeros((25, B), dtype=np.float32)
    bits = dist.view(np.uint32)
    start = np.full(B, -1, dtype=np.int64)
    keys = np.empty((5, B), dtype=np.uint64)
    labs = np.empty((5, B), dtype=np.int32)
    score = np.empty(B, dtype=np.int32)
    top = np.uint64(0xFFFFFFFFFFFFFFFF)
    sh = np.uint64(32)
    low = np.uint64(31)
    cut_bits = np.full(1, cutoff if cutoff > 0 else np.inf, dtype=np.float32).view(np.uint32)[0]
    C = np.int32(num_classes)
    C1 = np.int32(num_classes + 1)
    bad = 0
    for s in range(0, n, B):
        m = min(B, n - s)
        for p in range(m):
            i = s + p
            st = _window_start(px[i], py[i], W, H, Wp)
            bad += st == -2
            start[p] = st
            st = max(st, 0)
            r = unproj_range[i]
            for a in range(5):
                row = st + a * Wp
                for b in range(5):
                    dist[a * 5 + b, p] = abs(rng[row + b] - r) * weights[a * 5 + b]
            dist[12, p] = abs(r - r) * weights[12]
        for p in range(m, B):
            start[p] = -1
        for p in range(B):
            for t in range(5):
                keys[t, p] = top
        for j in range(25):
            jj = np.uint64(j)
            for p in range(B):
                v = (np.uint64(bits[j, p]) << sh) | jj
                for t in range(4):
                    kt = keys[t, p]
                    keys[t, p] = min(kt, v)
                    v = max(kt, v)
                keys[4, p] = min(keys[4, p], v)
        for p in range(B):
            st = max(start[p], 0)
            for t in range(5):
                key = keys[t, p]
                lt = lab[st + off[key & low]]
                labs[t, p] = lt if (key >> sh) <= cut_bits else C
        for p in range(B):
            best = np.int32(0)
            for t in range(5):
                lt = labs[t, p]
                cnt = np.int32(0)
                for u in range(5):
                    cnt += labs[u, p] == lt
                best = max(best, cnt * C1 + (C - lt) if (lt >= 1) & (lt < C) else np.int32(0))
            score[p] = best
        for p in range(m):
            sc = score[p]
            out[s + p] = 0 if start[p] < 0 else (C - sc % C1 if sc > 0 else 1)
    return bad


def knn_refine_numpy(proj_range, unproj_range, proj_argmax, px, py, k=5, search=5, sigma=1.0, cutoff=1.0,
                     num_classes=20, wrap=False, fast_path_off=False) -> np.ndarray:
    """numba implementation on numpy arrays (one thread); returns int64 [N] train ids. Ranges are used as
    float32. search = k = 5 without NaN (or infinite point) ranges takes a vectorised fast path
    (`fast_path_off=True` forces the general kernel; both give the same result)."""
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
    if num_classes > 2 ** 24:
        raise ValueError(f"num_classes must be <= 2^24 for the numba implementation, got {num_classes}")
    proj_range = np.ascontiguousarray(proj_range, dtype=np.float32)
    unproj_range = np.ascontiguousarray(unproj_range, dtype=np.float32)
    proj_argmax = np.ascontiguousarray(proj_argmax, dtype=np.int64)
    px = np.ascontiguousarray(px, dtype=np.int64)
    py = np.ascontiguousarray(py, dtype=np.int64)
    if proj_argmax.size:
        _check_values(int(proj_argmax.min()), int(proj_argmax.max()), num_classes, 0)
    out = np.empty(px.shape[0], dtype=np.int64)
    weights = _weights_cached(search, float(sigma))
    rng, lab = _padded_images(proj_range, proj_argmax, (search - 1) // 2, bool(wrap))
    # the fast path reads (and discards) the window at pixel (0, 0) for points that are not projected
    if search == 5 and k == 5 and not fast_path_off and proj_range.size and not np.isnan(proj_range).any() \
            and np.isfinite(unproj_range).all():
        bad = _knn_kernel_5x5(rng, lab, W, H, unproj_range, px, py, weights, np.float32(cutoff), int(num_classes),
                              out)
    else:
        bad = _knn_kernel(rng, lab, W, H, unproj_range, px, py, weights, int(k), int(search), np.float32(cutoff),
                          int(num_classes), out)
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
