"""The subclassified loss (Qiu et al., "Subclassified Loss: Rethinking Data Imbalance from Subclass Perspective for
Semantic Segmentation"), faithful to the published algorithm and fast.

This module depends on torch only (no lidarseg import), so it can be copied into any training code base.

Per image, the weight of a pixel is the inverse square root of the size of its "subclass": the number of
reference-grid pixels with the same label whose score vector is nearly identical to the pixel's:

    r = bilinear(s, H//ref_stride, W//ref_stride)       q = bilinear(s, H//query_stride, W//query_stride)
    sim_ij = <q_i, r_j> / (max(|q_i|^2, |r_j|^2) + 1e-5)
    k_i = #{ j : y_j == y_i and sim_ij > threshold }            (strict >, same label only)
    w_q = (k_i + eps) ** -power  ->  bilinear upsample to H x W  ->  w / mean(w), clamped at max_weight
    loss = mean( CE_pixel(s, y) * w )                            (gradient through the CE only)

The published code builds the B x N_q x N_r similarity matrix. Here only same-label pairs are compared: the pixels
are sorted by (image, label, squared norm), and because sim_ij <= sqrt(min(|q|^2,|r|^2) / max(|q|^2,|r|^2)), a
query can only match references whose squared norm lies within a factor threshold^2 of its own. Blocks of `chunk`
sorted queries are each compared with one contiguous window of sorted references, all blocks batched into a few
padded matmuls; the published float32 test is decided exactly without dividing (see `_pass_threshold`). The
N_q x N_r matrix is never built.
"""
from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SubclassifiedLoss", "subclass_counts", "dense_counts", "choose_path", "dense_piece_pairs"]

SIM_EPS = 1e-5          # the similarity's denominator epsilon, as published
_BAND_SLACK = 1e-3      # relative widening of the norm band: pruning must never drop a pair that could count
_GROUP_PAIRS = 1 << 18  # pairs per batched step at most (cache-sized: 1 MB per float buffer); max_pairs may lower it
DENSE_STEP_PAIRS = 1 << 26  # pairs per step of the dense path (about 650 MB of temporaries measured on CUDA)
DENSE_BYTES_PER_PAIR = 32   # free device memory asked per pair of a dense piece (twice the temporaries' ~14 B)
DENSE_MIN_PIECE = 1 << 20   # auto leaves the dense path when less free memory than this many pairs' worth is left
# path="auto" picks the dense comparison when an image has at most this many (query, reference) pairs on the
# device type (absent or 0: never), from the benchmarks in docs/benchmarks.md. On CPU dense wins only below about
# 2^16 pairs (a 32x256 image), smaller than any real range image, so auto stays windowed there. On an H200 dense
# was faster at every size measured, up to 512x1024 images (2^28 pairs); beyond that it is unmeasured.
DENSE_AUTO_MAX_PAIRS = {"cuda": 1 << 28}
PATHS = ("auto", "dense", "windowed")


def _as_image(logits: torch.Tensor, target: torch.Tensor, num_classes_hint: str = "C"):
    """Check shapes; return 4-D logits, 3-D target and whether the input was point-shaped ([B,C,N])."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"logits and target must be torch tensors, got {type(logits).__name__} and "
                        f"{type(target).__name__}")
    if logits.dim() not in (3, 4):
        raise ValueError(f"logits must be [B,C,H,W] or [B,C,N], got shape {list(logits.shape)}")
    expected = [logits.shape[0], *logits.shape[2:]]
    if list(target.shape) != expected:
        layout = "[B,H,W]" if logits.dim() == 4 else "[B,N]"
        raise ValueError(f"target shape {list(target.shape)} does not match logits shape {list(logits.shape)}: "
                         f"expected target {layout} = {expected}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor of class ids, got {target.dtype}")
    if target.device != logits.device:
        raise ValueError(f"logits on {logits.device} but target on {target.device}")
    points = logits.dim() == 3
    if points:
        logits, target = logits.unsqueeze(2), target.unsqueeze(1)
    return logits, target.long(), points


def check_target_range(target: torch.Tensor, num_classes: int, ignore_index) -> None:
    """Raise ValueError if a target value is neither a class id in 0..C-1 nor ignore_index."""
    if target.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(target))
    if lo >= 0 and hi < num_classes:                       # the common case: one pass, no masking
        return
    t = target if ignore_index is None else target[target != ignore_index]
    if t.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(t))
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"target value {bad} out of range: class ids must lie in 0..{num_classes - 1} "
                         f"(or equal ignore_index={ignore_index}); logits have C={num_classes}")


def check_ignore_index(ignore_index) -> None:
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")


def class_weight_tensor(class_weight):
    """None -> None; a sequence of finite weights >= 0 -> float32 [C] tensor (else a ValueError naming it)."""
    if class_weight is None:
        return None
    cw = torch.as_tensor(class_weight, dtype=torch.float32).flatten()
    if cw.numel() == 0 or not torch.isfinite(cw).all() or (cw < 0).any():
        raise ValueError(f"class_weight must be a non-empty list of finite weights >= 0, got {class_weight}")
    return cw


def _nearest_labels(target: torch.Tensor, size) -> torch.Tensor:
    """Labels resized with mode='nearest' on float, as published; [B,H,W] long -> [B,h*w] long."""
    B, H, W = target.shape
    h, w = size
    if H % h == 0 and W % w == 0:
        # integer factor: interpolate's source index floor(i * (H / h)) is exactly i * (H // h), so nearest
        # resizing is plain strided sampling
        return target[:, ::H // h, ::W // w].reshape(B, -1)
    t = F.interpolate(target[:, None].double(), size=size, mode="nearest")
    return t.reshape(B, -1).long()


def _bilinear(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _pass_threshold(den: torch.Tensor, tau: float):
    """t(D): the largest float32 c with NOT (c / D > tau), for every D of `den` (float32, > 0, finite).

    Correctly rounded division is monotone in c, so {d : d / D > tau} is an up-set of floats and, for every float32
    dot product d, `d / D > tau` <=> `d > t(D)` -- exactly, with the same torch division and comparison as the
    published `sim > tau`. t is found from fl(tau * D) by stepping a few ulps, or, where that does not settle
    (underflow, e.g. tau = 0), by bisection over the ordered float32 bit patterns. None for non-finite D (the
    caller then divides pair by pair)."""
    if not bool(torch.isfinite(den).all()):
        return None
    c = den * tau
    down = torch.tensor(-math.inf, device=den.device)
    up = torch.tensor(math.inf, device=den.device)
    for _ in range(8):                                     # step down while c itself passes
        bad = (c / den) > tau
        if not bool(bad.any()):
            break
        c = torch.where(bad, torch.nextafter(c, down), c)
    else:
        return _bisect_threshold(den, tau)
    for _ in range(8):                                     # step up while the next float still fails
        nxt = torch.nextafter(c, up)
        ok = ~((nxt / den) > tau) & (nxt != c)
        if not bool(ok.any()):
            return c
        c = torch.where(ok, nxt, c)
    return _bisect_threshold(den, tau)


def _bisect_threshold(den: torch.Tensor, tau: float) -> torch.Tensor:
    """_pass_threshold by bisection: float32 values are mapped to integers in the same order (sign-magnitude
    bits -> two's complement); -inf always fails (-inf / D > tau is false) and +inf always passes for finite tau."""
    def key(f):
        b = f.view(torch.int32).to(torch.int64)
        return torch.where(b >= 0, b, -(b & 0x7FFFFFFF))

    def value(k):
        b = torch.where(k >= 0, k, (-k) | 0x80000000)
        b = torch.where(b >= 1 << 31, b - (1 << 32), b)
        return b.to(torch.int32).view(torch.float32)

    lo = key(torch.full_like(den, -math.inf))
    hi = key(torch.full_like(den, math.inf))
    while bool((hi - lo > 1).any()):
        mid = torch.div(lo + hi, 2, rounding_mode="floor")
        passes = (value(mid) / den) > tau
        hi, lo = torch.where(passes, mid, hi), torch.where(passes, lo, mid)
    return value(lo)


def _pixel_thresholds(qd: torch.Tensor, rd: torch.Tensor, tau: float):
    """Per-pixel decision thresholds (t(qd), t(rd)) of `_pass_threshold` for the denominators qd = |q|^2 + 1e-5,
    rd = |r|^2 + 1e-5, so that the published test is `dot > max(tq, tr)` (`min` for tau < 0), exactly:
    fl(max(a, b) + e) == max(fl(a + e), fl(b + e)) since rounding is monotone. (None, None) where a denominator is
    not finite (the caller then divides pair by pair)."""
    if tau == -math.inf:
        return torch.full_like(qd, -math.inf), torch.full_like(rd, -math.inf)
    tq, tr = _pass_threshold(qd, tau), _pass_threshold(rd, tau)
    return (None, None) if tq is None or tr is None else (tq, tr)


def subclass_counts(q: torch.Tensor, q_lab: torch.Tensor, q_active: torch.Tensor,
                    r: torch.Tensor, r_lab: torch.Tensor, r_active: torch.Tensor,
                    threshold: float, chunk: int = 64, max_pairs: int = 1 << 22) -> torch.Tensor:
    """k_i = #{j : r_active_j, lab_j == lab_i, sim(q_i, r_j) > threshold} for every active query, per image.

    q [B,C,Nq], r [B,C,Nr] float32 feature grids (channels first, as the published code); labels [B,N*] long;
    active masks [B,N*] bool. Returns float32 [B,Nq] (0 for inactive queries).

    Queries and references are sorted by (image, label, squared norm). The queries of each (image, label) are cut
    into blocks of at most `chunk` consecutive ones; a block can only match the contiguous window of same-key
    references whose squared norm lies within a factor threshold^2 of the block's norms (for threshold > 0). All
    blocks are processed together: padded to a common window width, one batched matmul per group of at most
    `max_pairs` pairs (a window longer than that is cut into column pieces). The decision is the published float32
    test `dot / (max(|q|^2, |r|^2) + 1e-5) > threshold`, evaluated exactly as
    `dot > max(t(|q|^2 + 1e-5), t(|r|^2 + 1e-5))` with per-pixel thresholds t from `_pass_threshold`
    (min(...) for threshold < 0)."""
    B, C, Nq = q.shape
    Nr = r.shape[2]
    device = q.device
    counts = torch.zeros(B * Nq, dtype=torch.float32, device=device)
    tau = float(threshold)
    if math.isnan(tau) or tau == math.inf:                 # nothing is > +inf or > nan
        return counts.reshape(B, Nq)
    # squared norms summed over the channel dim of the channels-first grid, exactly like the published form
    qn_all = torch.sum(q * q, dim=1).reshape(-1)
    rn_all = torch.sum(r * r, dim=1).reshape(-1)

    def active_index(mask):
        flat = mask.reshape(-1)
        if bool(flat.all()):
            return torch.arange(flat.numel(), device=device)
        return flat.nonzero().squeeze(1)

    qi, ri = active_index(q_active), active_index(r_active)
    if qi.numel() == 0 or ri.numel() == 0:
        return counts.reshape(B, Nq)
    take = torch.index_select                              # (much faster than advanced indexing on CPU)
    q_lab, r_lab = take(q_lab.reshape(-1), 0, qi), take(r_lab.reshape(-1), 0, ri)
    lab_min, lab_max = (int(v) for v in torch.aminmax(torch.cat([q_lab, r_lab])))
    span = lab_max - lab_min + 1
    n_keys = B * span
    key_q = torch.div(qi, Nq, rounding_mode="floor") * span + (q_lab - lab_min)
    key_r = torch.div(ri, Nr, rounding_mode="floor") * span + (r_lab - lab_min)
    qn, rn = take(qn_all, 0, qi), take(rn_all, 0, ri)

    # one integer sort per side on key * 2^32 + (bits of the float32 norm): norms are >= 0 (or nan), and the bit
    # patterns of non-negative floats are ordered like the floats, so this is the (key, norm) order
    def composite(key, norm):
        return key * (1 << 32) + norm.view(torch.int32).to(torch.int64)

    cq, oq = torch.sort(composite(key_q, qn))
    cr, orr = torch.sort(composite(key_r, rn))
    qi, key_q, qn = take(qi, 0, oq), take(key_q, 0, oq), take(qn, 0, oq)
    ri, rn = take(ri, 0, orr), take(rn, 0, orr)
    n_q, n_r = qi.numel(), ri.numel()

    # blocks of at most m consecutive queries of one key; keys without references are skipped
    m = min(chunk, n_q)
    cnt_q = torch.bincount(key_q, minlength=n_keys)
    cnt_r = torch.bincount(key_r, minlength=n_keys)
    start_q, start_r = torch.cumsum(cnt_q, 0) - cnt_q, torch.cumsum(cnt_r, 0) - cnt_r
    nb = torch.where(cnt_r > 0, (cnt_q + m - 1) // m, torch.zeros_like(cnt_q))
    n_blocks = int(nb.sum())
    if n_blocks == 0:
        return counts.reshape(B, Nq)
    bkey = torch.repeat_interleave(torch.arange(n_keys, device=device), nb)
    bpos = torch.arange(n_blocks, device=device) - (torch.cumsum(nb, 0) - nb)[bkey]
    bs = start_q[bkey] + bpos * m                          # first query of each block (sorted position)
    bl = torch.clamp(cnt_q[bkey] - bpos * m, max=m)        # its number of queries
    key_lo, key_hi = start_r[bkey], start_r[bkey] + cnt_r[bkey]
    if tau > 0:                                            # norm band: |r|^2 within a factor tau^2 of |q|^2
        t2 = tau * tau
        q_lo, q_hi = take(qn, 0, bs), take(qn, 0, bs + bl - 1)
        lo = (q_lo.double() * t2 * (1.0 - _BAND_SLACK)).float()
        hi = (q_hi.double() / t2 * (1.0 + _BAND_SLACK)).float()
        base = bkey * (1 << 32)
        a = torch.searchsorted(cr, base + lo.view(torch.int32).to(torch.int64), right=False)
        b = torch.searchsorted(cr, base + hi.view(torch.int32).to(torch.int64), right=True)
        a, b = torch.maximum(a, key_lo), torch.minimum(b, key_hi)
        whole = ~(torch.isfinite(q_lo) & torch.isfinite(q_hi))
        if bool(whole.any()):                              # non-finite norms: no pruning for those blocks
            a, b = torch.where(whole, key_lo, a), torch.where(whole, key_hi, b)
    else:                                                  # no norm pruning: the whole same-key block
        a, b = key_lo, key_hi
    width = torch.clamp(b - a, min=0)

    # tasks: (block, column piece) of at most `cap` pairs, sorted by width so that groups need little padding
    cap = max(min(max_pairs, _GROUP_PAIRS), m)
    colmax = max(1, cap // m)
    pieces = (width + colmax - 1) // colmax
    tb = torch.repeat_interleave(torch.arange(n_blocks, device=device), pieces)
    n_t = tb.numel()
    if n_t == 0:
        return counts.reshape(B, Nq)
    tpos = torch.arange(n_t, device=device) - (torch.cumsum(pieces, 0) - pieces)[tb]
    tw = torch.clamp(width[tb] - tpos * colmax, max=colmax)
    tw, order = torch.sort(tw, descending=True, stable=True)
    tb, tpos = tb[order], tpos[order]
    ta = a[tb] + tpos * colmax
    widths = tw.tolist()
    groups, g0 = [], 0
    while g0 < n_t:
        g1 = min(n_t, g0 + max(1, cap // (m * widths[g0])))
        groups.append((g0, g1, widths[g0]))
        g0 = g1

    qd, rd = qn + SIM_EPS, rn + SIM_EPS
    tq, tr = _pixel_thresholds(qd, rd, tau)
    exact_div = tq is None                                 # fall back to dividing pair by pair
    if exact_div:
        tq, tr = qd, rd                                    # the same gathers serve the denominators
    combine = torch.maximum if (tau >= 0 or exact_div) else torch.minimum   # t(D) rises with D iff tau >= 0
    masked = exact_div or tau < 0                          # padding columns need an explicit mask

    # gathered operands, channels first (cheap gathers along contiguous rows); bmm takes the strided views
    trows = (bs[tb, None] + torch.minimum(torch.arange(m, device=device), bl[tb, None] - 1)).reshape(-1)
    q_cf = q.permute(1, 0, 2).reshape(C, B * Nq).index_select(1, take(qi, 0, trows))          # [C, n_t * m]
    tq_t = take(tq, 0, trows).view(n_t, m)
    r_rows = r.permute(0, 2, 1).reshape(B * Nr, C)
    r_rows = torch.cat([take(r_rows, 0, ri), r_rows.new_zeros(1, C)])                          # + sentinel row
    tr_x = torch.cat([tr, tr.new_full((1,), math.inf)])                                        # sentinel: never
    biggest = max(m * w * (g1 - g0) for g0, g1, w in groups)
    buf_dot = torch.empty(biggest, dtype=torch.float32, device=device)   # reused: no allocation per group
    buf_thr = torch.empty(biggest, dtype=torch.float32, device=device)
    cnt_t = torch.empty(n_t, m, dtype=torch.float32, device=device)
    for g0, g1, w in groups:
        G = g1 - g0
        cols = torch.arange(w, device=device)
        valid = cols < tw[g0:g1, None]                                          # [G, w]
        ridx = torch.where(valid, ta[g0:g1, None] + cols, n_r).reshape(-1)
        shape = (G, m, w)
        Q = q_cf[:, g0 * m:g1 * m].view(C, G, m).permute(1, 2, 0)              # [G, m, C]
        R = take(r_rows, 0, ridx).view(G, w, C).transpose(1, 2)                   # [G, C, w]
        dot = torch.bmm(Q, R, out=buf_dot[:G * m * w].view(shape))
        thr = combine(tq_t[g0:g1, :, None], take(tr_x, 0, ridx).view(G, 1, w),
                      out=buf_thr[:G * m * w].view(shape))
        if exact_div:                                      # published formula: sim = dot / den > tau
            hit = torch.gt(dot.div_(thr), tau, out=thr)
        else:
            hit = torch.gt(dot, thr, out=thr)              # 0/1 as float32: fast compare, exact sums
        if masked:
            hit.mul_(valid[:, None, :])
        torch.sum(hit, 2, out=cnt_t[g0:g1])
    out = torch.zeros(n_blocks, m, dtype=torch.float32, device=device)
    out.index_add_(0, tb, cnt_t)
    # back to the queries: the query at sorted position bs[b] + t is row b, slot t
    pos_block = torch.repeat_interleave(torch.arange(n_blocks, device=device), bl)
    pos_slot = torch.arange(pos_block.numel(), device=device) - (torch.cumsum(bl, 0) - bl)[pos_block]
    counts[qi[bs[pos_block] + pos_slot]] = out[pos_block, pos_slot]
    return counts.reshape(B, Nq)


def _dense_piece(qt, r, tq, tr, q_lab, r_lab, r_keep, minimum: bool):
    """int32 [b, n] counts of one piece: dot_ij > max(tq_i, tr_j) (min for a negative threshold), same label, active
    reference. Only exact operations after the matmul (comparisons, max), so fusing them changes nothing."""
    dot = torch.bmm(qt, r)                                              # [b, n, Nr]
    thr = (torch.minimum if minimum else torch.maximum)(tq[:, :, None], tr[:, None, :])
    hit = (dot > thr) & (q_lab[:, :, None] == r_lab[:, None, :]) & r_keep
    return hit.sum(2, dtype=torch.int32)


def _dense_piece_div(qt, r, qd, rd, tau: float, q_lab, r_lab, r_keep):
    """`_dense_piece` by the published division (for non-finite norms, where no threshold t(D) exists)."""
    sim = torch.bmm(qt, r).div_(torch.maximum(qd[:, :, None], rd[:, None, :]))
    hit = (sim > tau) & (q_lab[:, :, None] == r_lab[:, None, :]) & r_keep
    return hit.sum(2, dtype=torch.int32)


@functools.lru_cache(maxsize=None)
def _compiled_dense_piece():
    # dynamic shapes: one graph serves every piece size (a new image size does not recompile)
    return torch.compile(_dense_piece, dynamic=True)


_COMPILE_FAILED: list = []     # the reason torch.compile failed once in this process (then eager is used)


def _run_piece(compiled: bool, *args):
    if compiled and not _COMPILE_FAILED:
        try:
            return _compiled_dense_piece()(*args)
        except Exception as exc:  # noqa: BLE001 - no Triton / compiler: same result in eager mode
            _COMPILE_FAILED.append(f"{type(exc).__name__}: {exc}")
            warnings.warn(f"subclassified loss: torch.compile of the dense pair comparison failed "
                          f"({_COMPILE_FAILED[0][:200]}); using eager mode (same result, slower)")
    return _dense_piece(*args)


def dense_counts(q: torch.Tensor, q_lab: torch.Tensor, q_active: torch.Tensor,
                 r: torch.Tensor, r_lab: torch.Tensor, r_active: torch.Tensor,
                 threshold: float, max_elems: int = DENSE_STEP_PAIRS, compiled: bool = False) -> torch.Tensor:
    """`subclass_counts` by the published dense comparison: every query against every reference of its image,
    `sim = dot / (max(|q|^2, |r|^2) + 1e-5) > threshold` on the same-label, active pairs.

    Same arguments and result as `subclass_counts`: the test is decided exactly, without dividing, as
    `dot > max(t(|q|^2 + 1e-5), t(|r|^2 + 1e-5))` (see `_pass_threshold`). The [b, n, N_r] dot products are built in
    pieces of at most `max_elems` pairs (whole images batched together where they fit, else rows of one image), so
    peak memory is about 6 bytes x max_elems whatever the image size. `compiled=True` runs each piece through
    torch.compile (the comparisons fused into one pass over the dot products; the matmul stays torch's), falling
    back to eager mode, with a warning, where compilation fails. Fast where a B x N_q x N_r matmul is cheap (a GPU);
    the windowed path wins where it is not."""
    B, C, Nq = q.shape
    Nr = r.shape[2]
    counts = torch.zeros(B, Nq, dtype=torch.float32, device=q.device)
    tau = float(threshold)
    if math.isnan(tau) or tau == math.inf or Nq == 0 or Nr == 0:
        return counts
    qn, rn = torch.sum(q * q, dim=1), torch.sum(r * r, dim=1)          # [B,Nq], [B,Nr], as published
    qd, rd = qn + SIM_EPS, rn + SIM_EPS
    tq, tr = _pixel_thresholds(qd, rd, tau)
    exact_div = tq is None
    qt = q.transpose(1, 2)                                              # [B,Nq,C]
    q_lab, r_lab = q_lab.reshape(B, Nq), r_lab.reshape(B, Nr)
    r_keep = r_active.reshape(B, 1, Nr)
    per_image = Nq * Nr
    if per_image <= max_elems:                                          # several whole images per step
        pieces = [(b0, min(B, b0 + max(1, max_elems // per_image)), 0, Nq)
                  for b0 in range(0, B, max(1, max_elems // per_image))]
    else:                                                               # row blocks of one image
        rows = max(1, max_elems // Nr)
        pieces = [(b, b + 1, i0, min(Nq, i0 + rows)) for b in range(B) for i0 in range(0, Nq, rows)]
    for b0, b1, i0, i1 in pieces:
        ql, rl, rk = q_lab[b0:b1, i0:i1], r_lab[b0:b1], r_keep[b0:b1]
        if exact_div:
            k = _dense_piece_div(qt[b0:b1, i0:i1], r[b0:b1], qd[b0:b1, i0:i1], rd[b0:b1], tau, ql, rl, rk)
        else:
            k = _run_piece(compiled, qt[b0:b1, i0:i1], r[b0:b1], tq[b0:b1, i0:i1], tr[b0:b1], ql, rl, rk, tau < 0)
        counts[b0:b1, i0:i1] = k.float()
    return counts * q_active.reshape(B, Nq)


def dense_piece_pairs(device) -> int:
    """Pairs per piece of the dense path on `device`: DENSE_STEP_PAIRS, or fewer where a CUDA device has less than
    DENSE_BYTES_PER_PAIR bytes free per pair (memory torch's allocator holds in its cache counts as used)."""
    device = torch.device(device)
    if device.type != "cuda":
        return DENSE_STEP_PAIRS
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(DENSE_STEP_PAIRS, free // DENSE_BYTES_PER_PAIR))


def choose_path(path: str, device, pairs_per_image: int, piece_pairs: int | None = None) -> str:
    """The pair search to use: `path` if forced, else "dense" where the B x N_q x N_r comparison was measured to be
    faster (DENSE_AUTO_MAX_PAIRS per device type) and pieces of at least DENSE_MIN_PIECE pairs fit in memory
    (`piece_pairs`, from `dense_piece_pairs`), "windowed" elsewhere."""
    if path != "auto":
        return path
    limit = DENSE_AUTO_MAX_PAIRS.get(torch.device(device).type, 0)
    if pairs_per_image > limit:
        return "windowed"
    if piece_pairs is None:
        piece_pairs = dense_piece_pairs(device)
    return "dense" if piece_pairs >= min(DENSE_MIN_PIECE, pairs_per_image) else "windowed"


class SubclassifiedLoss(nn.Module):
    """Cross-entropy weighted per pixel by the inverse size of the pixel's subclass (see the module docstring).

    threshold: similarity threshold tau (strict >). Above 1 every subclass is empty -> uniform weights -> plain CE;
        -inf -> the subclass is the whole class in the reference grid -> per-image class weighting.
    eps, power: w = (k + eps) ** -power.      max_weight: clamp after per-image mean normalisation (None: no clamp).
    ref_stride, query_stride: grid strides; grid sizes are H // stride and W // stride (at least 1), like the
        published `F.interpolate(size=(H // 8, W // 8))`, so an H or W that is not a multiple of the stride is
        resampled by bilinear interpolation with scale in/out (align_corners=False); nothing is cropped or padded.
    similarity_input: "logits" (published) or "probs" (softmax over classes, as the paper's figure draws).
    normalize: "official" -- ignored pixels are counted like a label of their own, take part in the per-image mean
        and in the final mean (CE 0 there), exactly as published; "valid" -- ignored pixels take no part: they are
        neither queries nor references, the upsampling is normalised over valid query cells, the per-image mean is
        over valid pixels and the loss is the mean over the valid pixels of the batch.
    class_weight: optional [C] weights multiplying the per-pixel CE (mmseg / torch `weight=` semantics per pixel).
    ignore_index: target value to ignore (None: none).
    chunk, max_pairs: speed/memory knobs of the pair search (results do not depend on them): blocks of at most
        `chunk` sorted queries, at most `max_pairs` pairs compared at a time (at most 2^18 in any case).
    path: the pair search: "windowed" (sorted by label and norm, only same-label pairs of similar norm are compared:
        fewest operations, fastest on CPU), "dense" (the published B x N_q x N_r comparison in bounded pieces: one
        matmul per piece, faster on a GPU at range-image sizes), or "auto" (dense on CUDA up to
        DENSE_AUTO_MAX_PAIRS pairs per image, windowed otherwise). Both give the same counts: the published float32
        test, decided exactly.
    compile_dense: run the dense comparison through torch.compile (fused into one pass over the dot products; the
        first call compiles for a few seconds; falls back to eager with a warning where compilation fails). Off by
        default: its speed and exactness on a GPU are not yet measured (see docs/benchmarks.md).
    cpu_threads: intra-op threads for the weight computation on CPU (torch.set_num_threads around it, restored
        afterwards; results do not depend on it). Default 1: the weight computation is a chain of small ops whose
        fork/join costs more than a second thread gains, and on a loaded machine every parallel op can stall on a
        descheduled worker (measured: 2 threads took 3-10x longer than 1 under load). None: leave torch's setting
        (for a quiet many-core CPU). The cross-entropy always uses torch's setting.

    Point logits [B,C,N] with target [B,N] are treated as images of one row, [B,C,1,N]: the strides apply along
    the point order (set ref_stride=query_stride=1 to compare every point with every same-label point).
    Each image is weighted by its own weight map (the published code broadcasts [B,H,W] x [B,1,H,W] to [B,B,H,W],
    i.e. weights every image by the batch-mean map; that is not reproduced -- it is exact for batch 1).
    """

    name = "subclassified"

    def __init__(self, threshold: float = 0.98, eps: float = 10.0, power: float = 0.5, max_weight=10.0,
                 ref_stride: int = 8, query_stride: int = 4, similarity_input: str = "logits",
                 normalize: str = "valid", class_weight=None, ignore_index=0, chunk: int = 64,
                 max_pairs: int = 1 << 22, cpu_threads=1, path: str = "auto", compile_dense: bool = False):
        super().__init__()
        if similarity_input not in ("logits", "probs"):
            raise ValueError(f"similarity_input must be 'logits' or 'probs', got {similarity_input!r}")
        if normalize not in ("valid", "official"):
            raise ValueError(f"normalize must be 'valid' or 'official', got {normalize!r}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {list(PATHS)}, got {path!r}")
        for key, v in (("ref_stride", ref_stride), ("query_stride", query_stride), ("chunk", chunk),
                       ("max_pairs", max_pairs)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a positive integer, got {v!r}")
        threshold, eps, power = float(threshold), float(eps), float(power)
        if math.isnan(threshold):
            raise ValueError("threshold must be a number or +-inf, got nan")
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a positive finite number, got {eps}")
        if not (power >= 0 and math.isfinite(power)):
            raise ValueError(f"power must be >= 0, got {power}")
        if cpu_threads is not None and (isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int)
                                        or cpu_threads < 1):
            raise ValueError(f"cpu_threads must be a positive integer or None, got {cpu_threads!r}")
        if max_weight is not None and not float(max_weight) > 0:
            raise ValueError(f"max_weight must be > 0 or None, got {max_weight}")
        check_ignore_index(ignore_index)
        self.threshold, self.eps, self.power = threshold, eps, power
        self.max_weight = None if max_weight is None else float(max_weight)
        self.ref_stride, self.query_stride = ref_stride, query_stride
        self.similarity_input, self.normalize = similarity_input, normalize
        self.ignore_index = ignore_index
        self.chunk, self.max_pairs = chunk, max_pairs
        self.cpu_threads = cpu_threads
        self.path = path
        if not isinstance(compile_dense, bool):
            raise ValueError(f"compile_dense must be true or false, got {compile_dense!r}")
        self.compile_dense = compile_dense
        # not persistent: configuration, not learned state (a CE-trained checkpoint of a model that holds this loss,
        # such as an mmseg decode head, then loads without missing keys)
        self.register_buffer("class_weight", class_weight_tensor(class_weight), persistent=False)
        self.last_terms: dict = {}
        self.last_weight_map = None

    def extra_repr(self) -> str:
        return (f"threshold={self.threshold}, eps={self.eps}, power={self.power}, max_weight={self.max_weight}, "
                f"ref_stride={self.ref_stride}, query_stride={self.query_stride}, "
                f"similarity_input={self.similarity_input!r}, normalize={self.normalize!r}, "
                f"ignore_index={self.ignore_index}, path={self.path!r}")

    # ------------------------------------------------------------------------------------------------------
    def _prepare(self, logits, target):
        x, y, points = _as_image(logits, target)
        C = x.shape[1]
        if self.class_weight is not None and self.class_weight.numel() != C:
            raise ValueError(f"class_weight has {self.class_weight.numel()} entries but logits have C={C} classes")
        check_target_range(y, C, self.ignore_index)
        return x, y, points

    def _valid(self, y):
        if self.ignore_index is None:
            return torch.ones_like(y, dtype=torch.bool)
        return y != self.ignore_index

    def _weight_map(self, x: torch.Tensor, y: torch.Tensor, valid=None) -> torch.Tensor:
        """float32 [B,H,W] weight map of 4-D logits x and 3-D target y (no checks); `valid`: y != ignore_index
        if the caller has it. On CPU it runs with `cpu_threads` intra-op threads, on CUDA with float32 (not TF32)
        matmuls (both restored afterwards)."""
        if x.device.type == "cuda" and torch.get_float32_matmul_precision() != "highest":
            # TF32 matmuls (set_float32_matmul_precision("high"), common with AMP) would change the similarities;
            # the published test is float32
            old = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("highest")
            try:
                return self._weight_map_impl(x, y, valid)
            finally:
                torch.set_float32_matmul_precision(old)
        n = torch.get_num_threads()
        if x.device.type != "cpu" or self.cpu_threads is None or self.cpu_threads == n:
            return self._weight_map_impl(x, y, valid)
        torch.set_num_threads(self.cpu_threads)
        try:
            return self._weight_map_impl(x, y, valid)
        finally:
            torch.set_num_threads(n)

    @torch.no_grad()
    def _weight_map_impl(self, x: torch.Tensor, y: torch.Tensor, valid=None) -> torch.Tensor:
        B, C, H, W = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            s = x.detach().float()
            if self.similarity_input == "probs":
                s = torch.softmax(s, dim=1)
            rsz = (max(1, H // self.ref_stride), max(1, W // self.ref_stride))
            qsz = (max(1, H // self.query_stride), max(1, W // self.query_stride))
            r = _bilinear(s, rsz).reshape(B, C, -1)
            q = _bilinear(s, qsz).reshape(B, C, -1)
            yr, yq = _nearest_labels(y, rsz), _nearest_labels(y, qsz)
            if self.normalize == "official" or self.ignore_index is None:
                aq = torch.ones_like(yq, dtype=torch.bool)
                ar = torch.ones_like(yr, dtype=torch.bool)
            else:
                aq, ar = yq != self.ignore_index, yr != self.ignore_index
            piece = dense_piece_pairs(x.device) if self.path != "windowed" else 0
            if choose_path(self.path, x.device, q.shape[2] * r.shape[2], piece) == "dense":
                k = dense_counts(q, yq, aq, r, yr, ar, self.threshold, max(1, piece), compiled=self.compile_dense)
            else:
                k = subclass_counts(q, yq, aq, r, yr, ar, self.threshold, self.chunk, self.max_pairs)
            wq = torch.pow(k + self.eps, -self.power).reshape(B, 1, *qsz)
            if self.normalize == "official":
                w = _bilinear(wq, (H, W))[:, 0]
                w.div_(w.mean(dim=(1, 2), keepdim=True))
            else:                                          # in place: the full-resolution passes dominate here
                vq = aq.reshape(B, 1, *qsz).float()
                wv = wq * vq
                w = _bilinear(wv, (H, W))[:, 0]            # numerator: weights of the valid query cells
                den = _bilinear(vq, (H, W))[:, 0]          # their share of the bilinear support
                hole = den == 0                            # no valid query cell around: the image's mean weight
                w.div_(den.clamp_(min=1e-12))
                if bool(hole.any()):
                    nq_valid = vq.sum(dim=(1, 2, 3))
                    fill = torch.where(nq_valid > 0, wv.sum(dim=(1, 2, 3)) / nq_valid.clamp(min=1),
                                       torch.ones_like(nq_valid))
                    w = torch.where(hole, fill[:, None, None], w)
                if valid is None:
                    valid = self._valid(y)
                w.masked_fill_(~valid, 0.0)                # 0 on ignored pixels
                nv = valid.sum(dim=(1, 2))
                mean = torch.where(nv > 0, w.sum(dim=(1, 2)) / nv.clamp(min=1), torch.ones_like(w[:, 0, 0]))
                w.div_(mean[:, None, None])
            if self.max_weight is not None:
                w.clamp_(max=self.max_weight)
        return w

    def image_weights(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The hook the trainer calls for its TensorBoard panels: this loss's per-pixel weight map (`weights`)."""
        return self.weights(logits, target)

    def weights(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Detached float32 per-pixel weight map: [B,H,W] for [B,C,H,W] logits, [B,N] for [B,C,N] point logits.
        In normalize='valid' mode ignored pixels get weight 0."""
        x, y, points = self._prepare(logits, target)
        w = self._weight_map(x, y)
        return w[:, 0] if points else w

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y, points = self._prepare(logits, target)
        valid = self._valid(y)
        w = self._weight_map(x, y, valid)
        ii = -100 if self.ignore_index is None else self.ignore_index
        cw = None if self.class_weight is None else self.class_weight.to(device=x.device)
        ce = F.cross_entropy(x, y, weight=cw, ignore_index=ii, reduction="none")   # [B,H,W], 0 where ignored
        weighted = ce.float() * w
        if self.normalize == "official":
            loss = weighted.mean()
        else:
            loss = weighted.sum() / valid.sum().clamp(min=1)
        self.last_weight_map = w[:, 0] if points else w
        self.last_terms = {self.name: loss.detach()}
        return loss
