"""SubclassifiedLoss against a plain dense transcription of the published algorithm (written here from
shared/specs/subclassified-loss.md), on random logits and on range-image-like label maps."""
import math

import pytest
import torch
import torch.nn.functional as F

from lidarseg.losses.subclassified import SubclassifiedLoss, choose_path, dense_counts, subclass_counts

C = 20


# ---------------------------------------------------------------- inputs
def range_labels(B, H, W, seed=0, empty=0.15):
    """A range-image-like layout: empty rows on top, vegetation/buildings, sidewalk, road at the bottom, a few
    cars, thin poles, tiny persons/bicyclists/trunks, and randomly missing returns (label 0, ignored)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(B, H, W, dtype=torch.long)

    def ri(a, b):
        return int(torch.randint(a, max(b, a + 1), (1,), generator=g))

    for b in range(B):
        top = ri(H // 8, H // 5)
        y[b, top:H // 2] = 15
        for _ in range(4):
            x0 = ri(0, W)
            y[b, top + ri(0, 4):H // 2, x0:x0 + ri(W // 16, W // 4)] = 13
        y[b, H // 2:3 * H // 4] = 11
        y[b, 3 * H // 4:] = 9
        for _ in range(6):
            x0, r0 = ri(0, W - 8), ri(H // 3, 3 * H // 4)
            y[b, r0:r0 + ri(3, 10), x0:x0 + ri(6, W // 12)] = 1
        for _ in range(8):
            x0 = ri(0, W)
            y[b, ri(top, H // 2):3 * H // 4, x0:x0 + ri(1, 3)] = 18
        for _ in range(3):
            for c in (6, 7, 16):
                x0, r0 = ri(0, W - 3), ri(H // 3, 3 * H // 4)
                y[b, r0:r0 + ri(2, 6), x0:x0 + ri(1, 4)] = c
        y[b][torch.rand(H, W, generator=g) < empty] = 0
    return y


def clustered_logits(y, noise=0.3, seed=0):
    """Logits that cluster by class (a class mean vector), with a smooth field and pixel noise: realistic enough
    that many same-label pairs sit near the threshold."""
    g = torch.Generator().manual_seed(seed)
    B, H, W = y.shape
    means = torch.randn(C, C, generator=g) * 3.0
    s = means[y].permute(0, 3, 1, 2).contiguous()
    field = F.interpolate(torch.randn(B, C, H // 8 + 1, W // 8 + 1, generator=g), (H, W), mode="bilinear")
    return s + field * noise + torch.randn(B, C, H, W, generator=g) * noise * 0.3


# ---------------------------------------------------------------- the dense transcription of the spec
def dense_official(s, y, tau=0.98, eps=10.0, p=0.5, clamp=10.0, rs=8, qs=4):
    """Steps 1-6 of the spec, N_q x N_r at once. Returns (weight map [B,H,W], counts [B,Nq], sim [B,Nq,Nr],
    same-label mask)."""
    B, Cc, H, W = s.shape
    r = F.interpolate(s, (H // rs, W // rs), mode="bilinear")
    q = F.interpolate(s, (H // qs, W // qs), mode="bilinear")
    yr = F.interpolate(y[:, None].float(), (H // rs, W // rs), mode="nearest").reshape(B, -1).long()
    yq = F.interpolate(y[:, None].float(), (H // qs, W // qs), mode="nearest").reshape(B, -1).long()
    r, q = r.reshape(B, Cc, -1), q.reshape(B, Cc, -1)
    rn, qn = torch.sum(r * r, dim=1), torch.sum(q * q, dim=1)
    sim = torch.bmm(q.permute(0, 2, 1), r) / (torch.maximum(qn[:, :, None], rn[:, None, :]) + 1e-5)
    same = yq[:, :, None] == yr[:, None, :]
    k = ((sim > tau) & same).sum(2).float()
    wq = (k + eps) ** (-p)
    w = F.interpolate(wq.reshape(B, 1, H // qs, W // qs), (H, W), mode="bilinear")
    w = torch.clamp(w / w.mean(dim=(2, 3), keepdim=True), max=clamp)
    return w[:, 0], k, sim, same, (q, yq, r, yr)


def check_counts_against_dense(s, y, tau):
    """Our counts equal the dense counts, except possibly for pairs whose dense similarity lies within 4 ulp of tau
    (float reassociation of the dot product could flip those). Returns the number of such ambiguous pairs."""
    _, kd, sim, same, (q, yq, r, yr) = dense_official(s, y, tau=tau)
    ones_q, ones_r = torch.ones_like(yq, dtype=torch.bool), torch.ones_like(yr, dtype=torch.bool)
    k = subclass_counts(q, yq, ones_q, r, yr, ones_r, tau)
    ulp = 4 * torch.finfo(torch.float32).eps * max(abs(tau), 1e-30)
    ambiguous = (((sim - tau).abs() <= ulp) & same).sum(2).float()
    assert ((k - kd).abs() <= ambiguous).all()
    return int(ambiguous.sum()), k, kd


# ---------------------------------------------------------------- faithful to the published algorithm
@pytest.mark.parametrize("noise,tau", [(0.05, 0.98), (0.3, 0.98), (0.3, 0.9), (1.0, 0.98), (1.0, 0.5)])
def test_official_matches_dense_on_range_like_labels(noise, tau):
    y = range_labels(2, 64, 512, seed=int(noise * 10))
    s = clustered_logits(y, noise=noise, seed=3)
    wd, kd, *_ = dense_official(s, y, tau=tau)
    n_amb, k, _ = check_counts_against_dense(s, y, tau)
    assert kd.max() > 0 and kd.std() > 0          # non-trivial subclasses: the comparison can fail
    w = SubclassifiedLoss(threshold=tau, normalize="official").weights(s, y)
    assert w.dtype == torch.float32 and w.shape == y.shape
    if n_amb == 0:
        assert torch.equal(k, kd)
        torch.testing.assert_close(w, wd, rtol=1e-6, atol=1e-6)
    else:  # pragma: no cover - never observed on this platform; bounded by the tie count above
        assert (w - wd).abs().max() < 0.05


def test_official_matches_dense_on_random_logits_and_tiny_classes():
    g = torch.Generator().manual_seed(1)
    y = range_labels(2, 32, 256, seed=5)
    y[0, 5, 7] = 19          # a single-pixel class (may vanish from the grids, must not break anything)
    s = torch.randn(2, C, 32, 256, generator=g) * 0.2 + 1.0   # near-parallel vectors: many near-tau pairs
    for tau in (0.98, 0.99):
        wd, kd, *_ = dense_official(s, y, tau=tau)
        check_counts_against_dense(s, y, tau)
        assert kd.max() > 0
        w = SubclassifiedLoss(threshold=tau, normalize="official").weights(s, y)
        torch.testing.assert_close(w, wd, rtol=1e-6, atol=1e-6)


def test_sizes_not_multiple_of_strides_match_published_resizing():
    y = range_labels(1, 37, 101, seed=2)
    s = clustered_logits(y, noise=0.3)
    wd, *_ = dense_official(s, y)
    w = SubclassifiedLoss(normalize="official").weights(s, y)
    torch.testing.assert_close(w, wd, rtol=1e-6, atol=1e-6)
    # smaller than a stride: grids of size 1 instead of the published empty grid
    w = SubclassifiedLoss(normalize="official").weights(torch.randn(1, 3, 3, 5), torch.randint(0, 3, (1, 3, 5)))
    assert torch.isfinite(w).all() and torch.allclose(w, torch.ones_like(w))


def test_probs_similarity_equals_dense_on_softmax():
    y = range_labels(1, 32, 128, seed=4)
    s = clustered_logits(y, noise=1.0)
    wd, *_ = dense_official(torch.softmax(s, 1), y)
    w = SubclassifiedLoss(normalize="official", similarity_input="probs").weights(s, y)
    torch.testing.assert_close(w, wd, rtol=1e-6, atol=1e-6)


def test_memory_knobs_do_not_change_counts():
    y = range_labels(2, 32, 256, seed=6)
    s = clustered_logits(y, noise=0.3)
    ref = SubclassifiedLoss(normalize="official").weights(s, y)
    for chunk, max_pairs in ((1, 1 << 22), (7, 50), (4096, 1 << 30), (64, 1)):
        w = SubclassifiedLoss(normalize="official", chunk=chunk, max_pairs=max_pairs).weights(s, y)
        assert torch.equal(w, ref)


def test_each_image_weighted_by_its_own_map():
    y = range_labels(3, 32, 128, seed=7)
    s = clustered_logits(y, noise=0.3)
    for norm in ("official", "valid"):
        L = SubclassifiedLoss(normalize=norm)
        w = L.weights(s, y)
        for b in range(3):
            torch.testing.assert_close(w[b], L.weights(s[b:b + 1], y[b:b + 1])[0], rtol=0, atol=0)
        assert not torch.allclose(w[0], w[1])


# ---------------------------------------------------------------- the loss value and its gradient
def manual_grad(s, y, w, denom, cw=None, ignore=0):
    p = torch.softmax(s, 1)
    onehot = F.one_hot(y.clamp(min=0), C).permute(0, 3, 1, 2).float()
    per = torch.ones_like(y, dtype=torch.float32) if cw is None else cw[y]
    per = per * (y != ignore)
    return (p - onehot) * (w * per)[:, None] / denom


@pytest.mark.parametrize("normalize", ["official", "valid"])
def test_gradient_is_ce_gradient_times_weights(normalize):
    y = range_labels(2, 32, 128, seed=8)
    s = clustered_logits(y, noise=0.3).requires_grad_()
    cw = torch.rand(C) + 0.5
    L = SubclassifiedLoss(normalize=normalize, class_weight=cw)
    loss = L(s, y)
    loss.backward()
    w = L.weights(s, y)
    assert torch.equal(L.last_weight_map, w)
    denom = y.numel() if normalize == "official" else int((y != 0).sum())
    ce = F.cross_entropy(s.detach(), y, weight=cw, ignore_index=0, reduction="none")
    torch.testing.assert_close(loss.detach(), (ce * w).sum() / denom)
    torch.testing.assert_close(s.grad, manual_grad(s.detach(), y, w, denom, cw), rtol=1e-5, atol=1e-9)
    assert L.last_terms == {"subclassified": loss.detach()}


def test_threshold_above_one_is_plain_ce():
    y = range_labels(2, 32, 128, seed=9)
    s = clustered_logits(y, noise=0.05)        # near-duplicate vectors: tau=0.98 would give large subclasses
    for norm, ref in (("valid", lambda x: F.cross_entropy(x, y, ignore_index=0)),
                      ("official", lambda x: F.cross_entropy(x, y, ignore_index=0, reduction="sum") / y.numel())):
        a = s.clone().requires_grad_()
        b = s.clone().requires_grad_()
        L = SubclassifiedLoss(threshold=1.01, normalize=norm)
        la, lb = L(a, y), ref(b)
        la.backward()
        lb.backward()
        torch.testing.assert_close(la, lb)
        torch.testing.assert_close(a.grad, b.grad)
        assert not torch.allclose(SubclassifiedLoss(normalize=norm)(s, y), lb)   # tau=0.98 differs


def _bilinear_support(n_out, n_in):
    """The two source indices that F.interpolate(bilinear, align_corners=False) blends for each output index."""
    src = ((torch.arange(n_out) + 0.5) * n_in / n_out - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    return i0, (i0 + 1).clamp(max=n_in - 1)


def test_threshold_minus_inf_is_per_image_class_weighting():
    """tau=-inf: every same-label reference counts, k = n_c (the class's pixel count on the reference grid), so the
    query-grid weight is (n_c + eps)^-p. After bilinear upsampling and mean-normalisation, a pixel whose bilinear
    neighbours on the query grid all share its class has weight exactly (n_c + eps)^-p / mean(w) (clamped at 10);
    only pixels near class boundaries get blends. With labels constant on 8x8 blocks, n_c = (pixels of c) / 64."""
    g = torch.Generator().manual_seed(10)
    blocks = torch.randint(1, 6, (2, 6, 20), generator=g)
    blocks[:, :, :8] = 1                                       # a large class next to small ones
    y = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)  # [2,48,160], constant on 8x8 blocks
    s = torch.randn(2, 6, 48, 160, generator=g)
    eps, p = 10.0, 0.5
    w = SubclassifiedLoss(threshold=-math.inf, normalize="official", eps=eps, power=p).weights(s, y)
    for b in range(2):
        n = torch.bincount(y[b].flatten(), minlength=6).float() / 64
        wq_full = (n[y[b]] + eps) ** -p                          # per-pixel class weight at full resolution
        yq = y[b, ::4, ::4]                                       # query-grid labels (nearest, stride 4)
        up = F.interpolate((n[yq] + eps)[None, None] ** -p, (48, 160), mode="bilinear")[0, 0]
        mean = up.mean()
        # interior pixels: every query cell in the pixel's bilinear support has the pixel's label
        (r0, r1), (c0, c1) = _bilinear_support(48, 12), _bilinear_support(160, 40)
        same = torch.ones_like(y[b], dtype=torch.bool)
        for rr in (r0, r1):
            for cc in (c0, c1):
                same &= yq[rr][:, cc] == y[b]
        assert same.float().mean() > 0.4
        torch.testing.assert_close(w[b][same], torch.clamp(wq_full[same] / mean, max=10.0))
        torch.testing.assert_close(w[b], torch.clamp(up / mean, max=10.0))
        big, small = int(n.argmax()), int(n[1:].argmin()) + 1
        ratio = w[b][same & (y[b] == small)].mean() / w[b][same & (y[b] == big)].mean()
        torch.testing.assert_close(ratio, ((n[small] + eps) / (n[big] + eps)) ** -p)


# ---------------------------------------------------------------- valid mode, ignored pixels, empty images
def dense_valid(s, y, tau=0.98, eps=10.0, p=0.5, clamp=10.0):
    """The 'valid' choice: ignored pixels are neither queries nor references, the upsampling is normalised over valid
    query cells (cells with no valid neighbour take the image's mean query weight), per-image mean over valid
    pixels, weight 0 on ignored pixels."""
    B, Cc, H, W = s.shape
    _, _, sim, same, (q, yq, r, yr) = dense_official(s, y, tau=tau)
    vq, vr = yq != 0, yr != 0
    k = ((sim > tau) & same & vr[:, None, :]).sum(2).float()
    wq = ((k + eps) ** (-p)) * vq
    up = lambda t: F.interpolate(t.reshape(B, 1, H // 4, W // 4).float(), (H, W), mode="bilinear")[:, 0]
    num, den = up(wq), up(vq)
    fill = wq.sum(1) / vq.sum(1)
    w = torch.where(den > 0, num / den.clamp(min=1e-12), fill[:, None, None])
    v = y != 0
    mean = (w * v).sum((1, 2)) / v.sum((1, 2))
    return torch.clamp(w / mean[:, None, None], max=clamp) * v


def test_valid_mode_matches_its_transcription_and_differs_from_official():
    y = range_labels(2, 64, 256, seed=11, empty=0.3)
    s = clustered_logits(y, noise=0.3)
    w = SubclassifiedLoss(normalize="valid").weights(s, y)
    torch.testing.assert_close(w, dense_valid(s, y), rtol=1e-6, atol=1e-6)
    assert (w[y == 0] == 0).all()
    wo = SubclassifiedLoss(normalize="official").weights(s, y)
    assert (wo[y == 0] > 0).all() and not torch.allclose(w[y != 0], wo[y != 0], atol=1e-3)


@pytest.mark.parametrize("normalize", ["official", "valid"])
def test_image_without_valid_pixels(normalize):
    y = range_labels(2, 32, 128, seed=12)
    y[1] = 0
    s = clustered_logits(y, noise=0.3).requires_grad_()
    L = SubclassifiedLoss(normalize=normalize)
    loss = L(s, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert (s.grad[1] == 0).all()
    alone = L(s.detach()[:1], y[:1])
    scale = 0.5 if normalize == "official" else 1.0          # official: the empty image's pixels count in the mean
    torch.testing.assert_close(loss.detach(), alone * scale)
    # a batch with nothing valid: loss 0, zero gradient
    s2 = torch.randn(2, C, 32, 128, requires_grad=True)
    z = torch.zeros(2, 32, 128, dtype=torch.long)
    loss = L(s2, z)
    loss.backward()
    assert loss.item() == 0.0 and (s2.grad == 0).all()


def test_ignore_index_255_and_none():
    y = range_labels(1, 32, 128, seed=13)
    s = clustered_logits(y, noise=0.3)
    y255 = torch.where(y == 0, torch.tensor(255), y)
    a = SubclassifiedLoss(ignore_index=0)(s, y)
    b = SubclassifiedLoss(ignore_index=255)(s, y255)
    torch.testing.assert_close(a, b)
    c = SubclassifiedLoss(ignore_index=None)(s, y)
    assert torch.isfinite(c) and c > a * 0  # class 0 now trained


# ---------------------------------------------------------------- points, dtypes, devices
def test_point_logits_are_one_row_images():
    y = range_labels(2, 1, 512, seed=14, empty=0.2)[:, 0]        # [B,N]
    s = clustered_logits(y[:, None], noise=0.3)[:, :, 0]          # [B,C,N]
    L = SubclassifiedLoss()
    w = L.weights(s, y)
    assert w.shape == y.shape
    torch.testing.assert_close(w, L.weights(s[:, :, None], y[:, None])[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(L(s, y), L(s[:, :, None], y[:, None]))
    # strides 1: every point against every point of its label (itself included)
    L1 = SubclassifiedLoss(ref_stride=1, query_stride=1, normalize="official")
    sim = torch.einsum("bcn,bcm->bnm", s, s) / (torch.maximum((s * s).sum(1)[:, :, None], (s * s).sum(1)[:, None]) + 1e-5)
    k = ((sim > 0.98) & (y[:, :, None] == y[:, None, :])).sum(2).float()
    wd = (k + 10) ** -0.5
    torch.testing.assert_close(L1.weights(s, y), torch.clamp(wd / wd.mean(1, keepdim=True), max=10))


def test_autocast_weights_are_float32_and_equal():
    y = range_labels(1, 32, 128, seed=15)
    s = clustered_logits(y, noise=0.3)
    L = SubclassifiedLoss()
    ref = L.weights(s, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = L.weights(s, y)
        w16 = L.weights(s.bfloat16(), y)
        loss = L(s.bfloat16().requires_grad_(), y)
    assert w.dtype == w16.dtype == torch.float32
    assert torch.equal(w, ref)
    torch.testing.assert_close(w16, L.weights(s.bfloat16().float(), y), rtol=0, atol=0)
    assert torch.isfinite(loss) and loss.dtype == torch.float32


# ---------------------------------------------------------------- the two pair searches
@pytest.mark.parametrize("normalize", ["official", "valid"])
@pytest.mark.parametrize("tau", [0.98, 0.5, 0.0, -0.3])
def test_dense_and_windowed_paths_give_identical_weights(normalize, tau):
    y = range_labels(2, 64, 512, seed=21)
    s = clustered_logits(y, noise=0.3, seed=5)
    w = SubclassifiedLoss(threshold=tau, normalize=normalize, path="windowed").weights(s, y)
    wd = SubclassifiedLoss(threshold=tau, normalize=normalize, path="dense").weights(s, y)
    assert torch.equal(w, wd)
    assert w.std() > 0                               # a non-uniform map: the comparison can fail


def test_dense_counts_equal_windowed_in_every_piece_layout():
    """Whole images per step, one image per step and row blocks of one image all give the windowed counts, with
    inactive queries and references (ignored pixels in 'valid' mode)."""
    y = range_labels(3, 32, 256, seed=22)
    s = clustered_logits(y, noise=0.3, seed=6)
    q = F.interpolate(s, (8, 64), mode="bilinear").reshape(3, C, -1)
    r = F.interpolate(s, (4, 32), mode="bilinear").reshape(3, C, -1)
    yq, yr = y[:, ::4, ::4].reshape(3, -1), y[:, ::8, ::8].reshape(3, -1)
    aq, ar = yq != 0, yr != 0
    ref = subclass_counts(q, yq, aq, r, yr, ar, 0.98)
    assert ref.max() > 0 and (ref[~aq] == 0).all()
    n = q.shape[2] * r.shape[2]
    for max_elems in (1 << 30, 2 * n, n, n - 1, 1000, 1):
        assert torch.equal(dense_counts(q, yq, aq, r, yr, ar, 0.98, max_elems=max_elems), ref)


def test_point_logits_give_identical_weights_on_both_paths():
    y = range_labels(1, 1, 4096, seed=23)[:, 0]
    s = clustered_logits(range_labels(1, 8, 4096, seed=23), noise=0.3)[:, :, 0]
    for kw in ({}, {"ref_stride": 1, "query_stride": 1}):
        w = SubclassifiedLoss(path="windowed", **kw).weights(s, y)
        assert torch.equal(w, SubclassifiedLoss(path="dense", **kw).weights(s, y))


def test_auto_path_is_windowed_on_cpu_and_dense_on_cuda_up_to_the_measured_size():
    from lidarseg.losses.subclassified import DENSE_AUTO_MAX_PAIRS
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_path("auto", cpu, 16) == "windowed"
    limit = DENSE_AUTO_MAX_PAIRS["cuda"]
    assert choose_path("auto", cuda, limit, piece_pairs=1 << 26) == "dense"
    assert choose_path("auto", cuda, limit + 1, piece_pairs=1 << 26) == "windowed"
    assert choose_path("dense", cpu, 1 << 40) == "dense" and choose_path("windowed", cuda, 1) == "windowed"
    # too little free device memory for pieces of a useful size: windowed (forced dense still runs, in small pieces)
    assert choose_path("auto", cuda, 1 << 24, piece_pairs=(1 << 20) - 1) == "windowed"
    assert choose_path("auto", cuda, 1 << 24, piece_pairs=1 << 20) == "dense"
    assert choose_path("auto", cuda, 1000, piece_pairs=1000) == "dense"          # the whole image fits
    with pytest.raises(ValueError, match="path must be one of"):
        SubclassifiedLoss(path="fast")
    with pytest.raises(ValueError, match="compile_dense must be"):
        SubclassifiedLoss(compile_dense=None)


# ---------------------------------------------------------------- CUDA (run by scripts/gpu_check.sh on a GPU)
def exact_logits(y, seed=0):
    """Clustered logits on a 1/8 grid in [-8, 8]: the stride-4 and stride-8 bilinear grids average 2x2 pixels
    (multiples of 1/32), so every squared norm and dot product is a multiple of 1/1024 below 2^11, exact in float32
    whatever order a BLAS sums in. CPU and CUDA then decide every pair identically."""
    return (clustered_logits(y, noise=0.3, seed=seed) * 8).round().clamp(-64, 64) / 8


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("path", ["dense", "windowed"])
@pytest.mark.parametrize("normalize", ["official", "valid"])
def test_cuda_weights_and_gradients_equal_cpu(path, normalize):  # pragma: no cover - runs where a GPU exists
    y = range_labels(2, 64, 512, seed=16)
    s = exact_logits(y)
    L = SubclassifiedLoss(normalize=normalize, path="windowed")
    x = s.clone().requires_grad_()
    loss = L(x, y)
    loss.backward()
    Lc = SubclassifiedLoss(normalize=normalize, path=path).cuda()
    xc = s.cuda().requires_grad_()
    loss_c = Lc(xc, y.cuda())
    loss_c.backward()
    wc = Lc.last_weight_map.cpu()
    assert L.last_weight_map.std() > 0
    # same subclass counts -> the same weights up to float rounding of the bilinear resampling and means
    torch.testing.assert_close(wc, L.last_weight_map, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_c.cpu(), loss.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(xc.grad.cpu(), x.grad, rtol=1e-4, atol=1e-9)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_paths_agree_at_full_size_and_ignore_tf32():  # pragma: no cover - runs where a GPU exists
    y = range_labels(2, 64, 2048, seed=24).cuda()
    s = exact_logits(y.cpu(), seed=7).cuda()
    w = SubclassifiedLoss(path="windowed").weights(s, y)
    assert w.std() > 0
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")        # TF32 allowed: the loss must still compute in float32
    try:
        wd = SubclassifiedLoss(path="dense", compile_dense=True).weights(s, y)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(old)
    assert torch.equal(w, wd)
    assert torch.equal(w, SubclassifiedLoss(path="dense").weights(s, y))
    from lidarseg.losses.subclassified import _COMPILE_FAILED
    assert not _COMPILE_FAILED                       # the compiled comparison really ran


# ---------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    L = SubclassifiedLoss()
    s = torch.randn(2, C, 16, 32)
    with pytest.raises(ValueError, match=r"\[2, 16, 16\].*\[2, 20, 16, 32\]"):
        L(s, torch.zeros(2, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range.*0..19"):
        L(s, torch.full((2, 16, 32), 25))
    with pytest.raises(ValueError, match="out of range"):
        L(s, torch.full((2, 16, 32), -1))
    with pytest.raises(TypeError, match="integer"):
        L(s, torch.zeros(2, 16, 32))
    with pytest.raises(ValueError, match="class_weight has 3"):
        SubclassifiedLoss(class_weight=[1, 2, 3])(s, torch.zeros(2, 16, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="normalize"):
        SubclassifiedLoss(normalize="mean")
    with pytest.raises(ValueError, match="ref_stride"):
        SubclassifiedLoss(ref_stride=0)
    with pytest.raises(ValueError, match="eps"):
        SubclassifiedLoss(eps=0)


def test_module_imports_torch_only():
    import ast
    import inspect

    import lidarseg.losses.subclassified as mod
    tree = ast.parse(inspect.getsource(mod))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "functools", "math", "warnings", "torch"}   # standard library and torch only


def test_threshold_is_strict_at_exact_ties():
    """Identical score vectors: threshold = the attained similarity t counts nothing (strict >), the next float
    below t counts the pairs at t. Counts must equal the dense ones exactly here (same float32 formula; if a BLAS
    ever computed the block dot products differently from the dense bmm, this is where it would show)."""
    y = range_labels(1, 32, 64, seed=17)
    v = torch.linspace(-1.0, 2.0, C)
    s = v[None, :, None, None].expand(1, C, 32, 64).contiguous()
    _, _, sim, same, (q, yq, r, yr) = dense_official(s, y, tau=0.5)
    t = float(sim[same].max())
    below = float(torch.nextafter(torch.tensor(t), torch.tensor(-1.0)))
    ones_q, ones_r = torch.ones_like(yq, dtype=torch.bool), torch.ones_like(yr, dtype=torch.bool)
    for tau, expect_zero in ((t, True), (below, False)):
        _, kd, *_ = dense_official(s, y, tau=tau)
        assert (kd.max() == 0) == expect_zero
        assert torch.equal(subclass_counts(q, yq, ones_q, r, yr, ones_r, tau), kd)


def test_docs_examples_run():
    """docs/loss.md: the plug-in example and the mmsegmentation-style wrapper run as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "loss.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    ns = {}
    exec(compile(blocks[0], "docs/loss.md#plug-in", "exec"), ns)
    assert ns["weight_map"].shape == (2, 64, 256) and ns["logits"].grad is not None
    exec(compile(blocks[1], "docs/loss.md#mmseg", "exec"), ns)
    head_loss = ns["SubclassifiedCrossEntropyLoss"](loss_weight=0.5, threshold=0.9)
    y = range_labels(2, 32, 128, seed=18)
    y255 = torch.where(y == 0, torch.tensor(255), y)
    s = clustered_logits(y, noise=0.3).requires_grad_()
    out = head_loss(s, y255, weight=None, ignore_index=255)
    torch.testing.assert_close(out, 0.5 * SubclassifiedLoss(threshold=0.9)(s, y))
    out.backward()
    assert head_loss.loss_name == "loss_subcls" and torch.isfinite(s.grad).all()


# ---------------------------------------------------------------- the fast path's exact decision and knobs
def test_pass_threshold_decides_exactly_like_the_division():
    """d / D > tau  <=>  d > t(D), for floats d at and around the boundary, for positive and negative tau."""
    from lidarseg.losses.subclassified import _pass_threshold
    g = torch.Generator().manual_seed(19)
    den = torch.cat([torch.rand(2000, generator=g) * 300 + 1e-5, torch.tensor([1e-5, 1.0, 3.0, 1e6])])
    for tau in (0.98, 0.5, 0.0, -0.3, 1.01, 0.9800000190734863):
        t = _pass_threshold(den, tau)
        assert t is not None
        for d in (t, torch.nextafter(t, torch.tensor(math.inf)), torch.nextafter(t, torch.tensor(-math.inf)),
                  den * tau, torch.randn(den.shape, generator=g) * den):
            assert torch.equal((d / den) > tau, d > t)


@pytest.mark.parametrize("tau", [0.98, 0.0, -0.5, -math.inf])
def test_counts_equal_dense_for_all_threshold_signs(tau):
    """Same-label pairs only, also for tau <= 0 (the min-combined thresholds and the padding mask)."""
    y = range_labels(2, 32, 256, seed=20)
    s = clustered_logits(y, noise=1.0, seed=2) - 1.0       # mixed signs: negative similarities occur
    _, _, sim, same, (q, yq, r, yr) = dense_official(s, y, tau=0.98)
    kd = ((sim > tau) & same).sum(2).float()
    ones_q, ones_r = torch.ones_like(yq, dtype=torch.bool), torch.ones_like(yr, dtype=torch.bool)
    for chunk, max_pairs in ((64, 1 << 22), (5, 300)):
        k = subclass_counts(q, yq, ones_q, r, yr, ones_r, tau, chunk, max_pairs)
        assert torch.equal(k, kd)
    # inactive references and queries take no part
    act_q, act_r = yq != 0, yr != 0
    k = subclass_counts(q, yq, act_q, r, yr, act_r, tau)
    kd_valid = ((sim > tau) & same & act_r[:, None, :]).sum(2).float() * act_q
    assert torch.equal(k, kd_valid)


def test_cpu_threads_only_changes_speed():
    y = range_labels(2, 32, 128, seed=21)
    s = clustered_logits(y, noise=0.3)
    n = torch.get_num_threads()
    w1 = SubclassifiedLoss(cpu_threads=1).weights(s, y)
    assert torch.get_num_threads() == n
    assert torch.equal(w1, SubclassifiedLoss(cpu_threads=None).weights(s, y))
    with pytest.raises(ValueError, match="cpu_threads"):
        SubclassifiedLoss(cpu_threads=0)


def test_strided_nearest_labels_equal_interpolate():
    from lidarseg.losses.subclassified import _nearest_labels
    y = torch.randint(0, 20, (2, 64, 96))
    for size in ((16, 24), (8, 12), (64, 96), (1, 1), (32, 3)):
        ref = F.interpolate(y[:, None].double(), size=size, mode="nearest").reshape(2, -1).long()
        assert torch.equal(_nearest_labels(y, size), ref)


def test_class_weight_is_not_in_the_state_dict():
    """Configuration, not learned state: a module holding the loss loads checkpoints written without it."""
    L = SubclassifiedLoss(class_weight=[1.0] * C)
    assert "class_weight" not in L.state_dict() and L.class_weight.shape == (C,)
    holder = torch.nn.Sequential(torch.nn.Conv2d(5, C, 1))
    state = holder.state_dict()
    holder.add_module("loss", L)
    holder.load_state_dict(state)                    # strict: no missing key for the loss
