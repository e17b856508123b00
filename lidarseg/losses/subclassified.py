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
query can only match references whose squared norm lies within a factor threshold^2 of its own. Each chunk of
sorted queries is therefore compared with one contiguous window of sorted references, in pieces of at most
`max_pairs` pairs, with the same float32 formula as the published code. The N_q x N_r matrix is never built.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SubclassifiedLoss", "subclass_counts"]

SIM_EPS = 1e-5          # the similarity's denominator epsilon, as published
_BAND_SLACK = 1e-3      # relative widening of the norm band: pruning must never drop a pair that could count


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
    t = target if ignore_index is None else target[target != ignore_index]
    if t.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(t))
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"target value {bad} out of range: class ids must lie in 0..{num_classes - 1} "
                         f"(or equal ignore_index={ignore_index}); logits have C={num_classes}")


def _nearest_labels(target: torch.Tensor, size) -> torch.Tensor:
    """Labels resized with mode='nearest' on float, as published; [B,H,W] long -> [B,h*w] long."""
    B, H, W = target.shape
    if (H, W) == tuple(size):
        return target.reshape(B, -1)
    t = F.interpolate(target[:, None].double(), size=size, mode="nearest")
    return t.reshape(B, -1).long()


def _bilinear(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def subclass_counts(q: torch.Tensor, q_lab: torch.Tensor, q_active: torch.Tensor,
                    r: torch.Tensor, r_lab: torch.Tensor, r_active: torch.Tensor,
                    threshold: float, chunk: int = 512, max_pairs: int = 1 << 22) -> torch.Tensor:
    """k_i = #{j : r_active_j, lab_j == lab_i, sim(q_i, r_j) > threshold} for every active query, per image.

    q [B,C,Nq], r [B,C,Nr] float32 feature grids (channels first, as the published code); labels [B,N*] long;
    active masks [B,N*] bool. Returns float32 [B,Nq] (0 for inactive queries). Same-label pairs only; queries and
    references are sorted by (image, label, squared norm) and compared chunk by chunk within the norm band that
    can possibly pass the threshold, at most `max_pairs` pairs at a time."""
    B, C, Nq = q.shape
    Nr = r.shape[2]
    device = q.device
    counts = torch.zeros(B * Nq, dtype=torch.float32, device=device)
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
    lab_min, lab_max = (int(v) for v in torch.aminmax(torch.cat([q_lab.reshape(-1)[qi], r_lab.reshape(-1)[ri]])))
    span = lab_max - lab_min + 1
    key_q = (torch.arange(B, device=device).repeat_interleave(Nq) * span + (q_lab.reshape(-1) - lab_min))[qi]
    key_r = (torch.arange(B, device=device).repeat_interleave(Nr) * span + (r_lab.reshape(-1) - lab_min))[ri]
    qn, rn = qn_all[qi], rn_all[ri]

    def lex_order(key, norm):                 # sort by key, then by norm within a key
        o = torch.argsort(norm)
        return o[torch.argsort(key[o], stable=True)]

    oq, orr = lex_order(key_q, qn), lex_order(key_r, rn)
    qi, key_q, qn = qi[oq], key_q[oq], qn[oq]
    ri, key_r, rn = ri[orr], key_r[orr], rn[orr]
    qf = q.permute(0, 2, 1).reshape(B * Nq, C)[qi]          # [n_q, C]
    rf = r.permute(0, 2, 1).reshape(B * Nr, C)[ri]          # [n_r, C]

    # A monotone float64 composite (key, norm) of the sorted references lets one searchsorted find every window.
    big = 2.0 * float(max(qn.max(), rn.max())) + 1.0      # every norm < big / 2
    n_keys = B * span
    margin = big * n_keys * 1e-12                          # >> float64 rounding of the composite
    r_comp = key_r.double() * big + rn.double()
    n_q = qi.numel()
    starts = torch.arange(0, n_q, chunk, device=device)
    ends = (starts + chunk).clamp(max=n_q) - 1
    tau = float(threshold)
    if tau > 0:
        t2 = tau * tau
        lo = qn[starts].double() * t2 * (1.0 - _BAND_SLACK)
        hi = (qn[ends].double() / t2 * (1.0 + _BAND_SLACK)).clamp(max=0.5 * big)
    else:                                                  # no norm pruning: the whole label block
        lo = torch.full_like(starts, -0.25 * big, dtype=torch.float64)
        hi = torch.full_like(starts, 0.5 * big, dtype=torch.float64)
    lo_c = key_q[starts].double() * big + lo - margin
    hi_c = key_q[ends].double() * big + hi + margin
    a = torch.searchsorted(r_comp, lo_c, right=False)
    b = torch.searchsorted(r_comp, hi_c, right=True)
    mixed = key_q[starts] != key_q[ends]
    plan = torch.stack([starts, ends + 1, a, b, mixed.long()], 1).tolist()

    # fl(max(a, b) + e) == max(fl(a + e), fl(b + e)) (rounding is monotone): add the epsilon once per pixel.
    qd, rd = qn + SIM_EPS, rn + SIM_EPS
    rf_t = rf.T                                            # [C, n_r] view; column windows are strided views
    out = torch.zeros(n_q, dtype=torch.float32, device=device)
    cap = max(min(max_pairs, chunk * rd.numel()), min(chunk, n_q))    # at least one column of a chunk
    buf_sim = torch.empty(cap, dtype=torch.float32, device=device)   # reused: no allocation per chunk
    buf_den = torch.empty(cap, dtype=torch.float32, device=device)
    buf_hit = torch.empty(cap, dtype=torch.bool, device=device)
    for s, e, a0, b0, mix in plan:
        if b0 <= a0:
            continue
        m = e - s
        step = max(1, cap // m)
        qc, qdc = qf[s:e], qd[s:e, None]
        for c0 in range(a0, b0, step):
            c1 = min(b0, c0 + step)
            n = m * (c1 - c0)
            sim = torch.mm(qc, rf_t[:, c0:c1], out=buf_sim[:n].view(m, c1 - c0))
            den = torch.maximum(qdc, rd[None, c0:c1], out=buf_den[:n].view(m, c1 - c0))
            sim.div_(den)
            hit = torch.gt(sim, tau, out=buf_hit[:n].view(m, c1 - c0))
            if mix:
                hit &= key_q[s:e, None] == key_r[None, c0:c1]
            out[s:e] += hit.sum(1)
    counts[qi] = out
    return counts.reshape(B, Nq)


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
    chunk, max_pairs: speed/memory knobs of the pair search (results do not depend on them).

    Point logits [B,C,N] with target [B,N] are treated as images of one row, [B,C,1,N]: the strides apply along
    the point order (set ref_stride=query_stride=1 to compare every point with every same-label point).
    Each image is weighted by its own weight map (the published code broadcasts [B,H,W] x [B,1,H,W] to [B,B,H,W],
    i.e. weights every image by the batch-mean map; that is not reproduced -- it is exact for batch 1).
    """

    name = "subclassified"

    def __init__(self, threshold: float = 0.98, eps: float = 10.0, power: float = 0.5, max_weight=10.0,
                 ref_stride: int = 8, query_stride: int = 4, similarity_input: str = "logits",
                 normalize: str = "valid", class_weight=None, ignore_index=0, chunk: int = 512,
                 max_pairs: int = 1 << 22):
        super().__init__()
        if similarity_input not in ("logits", "probs"):
            raise ValueError(f"similarity_input must be 'logits' or 'probs', got {similarity_input!r}")
        if normalize not in ("valid", "official"):
            raise ValueError(f"normalize must be 'valid' or 'official', got {normalize!r}")
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
        if max_weight is not None and not float(max_weight) > 0:
            raise ValueError(f"max_weight must be > 0 or None, got {max_weight}")
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")
        self.threshold, self.eps, self.power = threshold, eps, power
        self.max_weight = None if max_weight is None else float(max_weight)
        self.ref_stride, self.query_stride = ref_stride, query_stride
        self.similarity_input, self.normalize = similarity_input, normalize
        self.ignore_index = ignore_index
        self.chunk, self.max_pairs = chunk, max_pairs
        if class_weight is not None:
            cw = torch.as_tensor(class_weight, dtype=torch.float32).flatten()
            if cw.numel() == 0 or not torch.isfinite(cw).all() or (cw < 0).any():
                raise ValueError(f"class_weight must be a non-empty list of finite weights >= 0, got {class_weight}")
            self.register_buffer("class_weight", cw)
        else:
            self.class_weight = None
        self.last_terms: dict = {}
        self.last_weight_map = None

    def extra_repr(self) -> str:
        return (f"threshold={self.threshold}, eps={self.eps}, power={self.power}, max_weight={self.max_weight}, "
                f"ref_stride={self.ref_stride}, query_stride={self.query_stride}, "
                f"similarity_input={self.similarity_input!r}, normalize={self.normalize!r}, "
                f"ignore_index={self.ignore_index}")

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

    @torch.no_grad()
    def _weight_map(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """float32 [B,H,W] weight map of 4-D logits x and 3-D target y (no checks)."""
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
            k = subclass_counts(q, yq, aq, r, yr, ar, self.threshold, self.chunk, self.max_pairs)
            wq = torch.pow(k + self.eps, -self.power).reshape(B, 1, *qsz)
            if self.normalize == "official":
                w = _bilinear(wq, (H, W))
                w = w / w.mean(dim=(2, 3), keepdim=True)
            else:
                vq = aq.reshape(B, 1, *qsz).float()
                num = _bilinear(wq * vq, (H, W))
                den = _bilinear(vq, (H, W))
                nq_valid = vq.sum(dim=(2, 3), keepdim=True)
                fill = torch.where(nq_valid > 0, (wq * vq).sum(dim=(2, 3), keepdim=True) / nq_valid.clamp(min=1),
                                   torch.ones_like(nq_valid))
                w = torch.where(den > 0, num / den.clamp(min=1e-12), fill)
                v = self._valid(y)[:, None].float()
                nv = v.sum(dim=(2, 3), keepdim=True)
                mean = (w * v).sum(dim=(2, 3), keepdim=True) / nv.clamp(min=1)
                w = torch.where(nv > 0, w / mean, torch.zeros_like(w)) * v
            if self.max_weight is not None:
                w = w.clamp(max=self.max_weight)
        return w[:, 0]

    def weights(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Detached float32 per-pixel weight map: [B,H,W] for [B,C,H,W] logits, [B,N] for [B,C,N] point logits.
        In normalize='valid' mode ignored pixels get weight 0."""
        x, y, points = self._prepare(logits, target)
        w = self._weight_map(x, y)
        return w[:, 0] if points else w

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y, points = self._prepare(logits, target)
        w = self._weight_map(x, y)
        ii = -100 if self.ignore_index is None else self.ignore_index
        cw = None if self.class_weight is None else self.class_weight.to(device=x.device)
        ce = F.cross_entropy(x, y, weight=cw, ignore_index=ii, reduction="none")   # [B,H,W], 0 where ignored
        weighted = ce.float() * w
        if self.normalize == "official":
            loss = weighted.mean()
        else:
            n_valid = self._valid(y).sum()
            loss = weighted.sum() / n_valid.clamp(min=1)
        self.last_weight_map = w[:, 0] if points else w
        self.last_terms = {self.name: loss.detach()}
        return loss
