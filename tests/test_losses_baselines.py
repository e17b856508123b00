"""Baseline losses against transcriptions of their published definitions (RangeNet++ wCE, Berman's Lovasz-softmax,
focal loss, KPRNet's OHEM), on range-image-like labels and on point logits."""
import pytest
import torch
import torch.nn.functional as F

from lidarseg.data.labels import LabelMap
from lidarseg.losses import CrossEntropyLoss, FocalLoss, LovaszSoftmaxLoss, OhemCrossEntropy, SubclassifiedLoss

C = 20


def inputs(B=2, H=16, W=64, seed=0, empty=0.2):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(1, C, (B, H // 4, W // 8), generator=g).repeat_interleave(4, 1).repeat_interleave(8, 2)
    y[:, -3:] = 9                                                     # a large road class
    y[torch.rand(B, H, W, generator=g) < empty] = 0
    s = torch.randn(B, C, H, W, generator=g) * 2
    return s, y


# ---------------------------------------------------------------- CE / RangeNet++ weighted CE
def test_weighted_ce_equals_rangenet_nll_with_content_weights():
    lm = LabelMap.from_yaml()
    w = torch.tensor(lm.class_weights(), dtype=torch.float32)
    s, y = inputs()
    ours = CrossEntropyLoss(class_weight=w)(s, y)
    # RangeNet++: NLLLoss(weight=w)(log(softmax.clamp(min=1e-8)), labels), no ignore_index, w[0] = 0
    ref = F.nll_loss(torch.log(torch.softmax(s, 1).clamp(min=1e-8)), y, weight=w)
    torch.testing.assert_close(ours, ref)
    assert w[0] == 0 and w[9] < w[6]          # road weighs less than person


def test_ce_matches_torch_and_handles_empty_batch():
    s, y = inputs(seed=1)
    x = s.clone().requires_grad_()
    loss = CrossEntropyLoss()(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(s, y, ignore_index=0))
    z = torch.zeros_like(y)
    for cw in (None, torch.rand(C)):
        x = s.clone().requires_grad_()
        loss = CrossEntropyLoss(class_weight=cw)(x, z)
        loss.backward()
        assert loss.item() == 0 and (x.grad == 0).all()


# ---------------------------------------------------------------- Lovasz-softmax
def lovasz_reference(probs, labels, ignore=0):
    """Berman et al.: per present class, sort errors |fg - p_c| descending, weight by the discrete derivative of the
    Jaccard loss of the sorted prefix, sum; mean over present classes. Loops, no vectorisation."""
    p = probs.movedim(1, -1).reshape(-1, probs.shape[1])
    lab = labels.reshape(-1)
    keep = lab != ignore
    p, lab = p[keep], lab[keep]
    losses = []
    for c in range(p.shape[1]):
        fg = (lab == c).float()
        if fg.sum() == 0:
            continue
        err = (fg - p[:, c]).abs()
        order = torch.argsort(err, descending=True)
        err, fg = err[order], fg[order]
        total, prev, acc = fg.sum(), 0.0, 0.0
        for i in range(len(fg)):
            inter = total - fg[: i + 1].sum()
            union = total + (1 - fg[: i + 1]).sum()
            jac = 1 - inter / union
            acc = acc + err[i] * (jac - prev)
            prev = jac
        losses.append(acc)
    return torch.stack(losses).mean()


def test_lovasz_matches_reference():
    s, y = inputs(B=1, H=8, W=32, seed=2)
    ours = LovaszSoftmaxLoss()(s, y)
    torch.testing.assert_close(ours, lovasz_reference(torch.softmax(s, 1), y), rtol=1e-5, atol=1e-6)


def test_lovasz_on_hard_predictions_is_one_minus_iou():
    """The Lovasz extension is exact at the vertices: with one-hot probabilities it equals the mean over present
    classes of 1 - IoU_c (IoU over valid pixels, classes present in the ground truth)."""
    s, y = inputs(seed=3)
    pred = s.argmax(1)
    pred[:, -3:] = 9                            # make some classes partly right
    logits = F.one_hot(pred, C).permute(0, 3, 1, 2).float() * 100.0
    v = y != 0
    ious = []
    for c in torch.unique(y[v]).tolist():
        inter = ((pred == c) & (y == c) & v).sum()
        union = (((pred == c) | (y == c)) & v).sum()
        ious.append(inter / union)
    torch.testing.assert_close(LovaszSoftmaxLoss()(logits, y), 1 - torch.stack(ious).float().mean())
    assert 0.1 < LovaszSoftmaxLoss()(logits, y) < 0.99


def test_lovasz_gradient_and_empty():
    s, y = inputs(seed=4)
    x = s.clone().requires_grad_()
    LovaszSoftmaxLoss()(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    x = s.clone().requires_grad_()
    loss = LovaszSoftmaxLoss()(x, torch.zeros_like(y))
    loss.backward()
    assert loss.item() == 0 and (x.grad == 0).all()


# ---------------------------------------------------------------- focal
def test_focal_matches_definition_and_gamma0_is_ce():
    s, y = inputs(seed=5)
    cw = torch.rand(C) + 0.5
    for gamma in (0.0, 2.0):
        p = torch.softmax(s, 1)
        pt = p.gather(1, y[:, None])[:, 0]
        fl = -cw[y] * (1 - pt) ** gamma * torch.log(pt)
        ref = fl[y != 0].mean()
        torch.testing.assert_close(FocalLoss(gamma=gamma, class_weight=cw)(s, y), ref)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(s, y), F.cross_entropy(s, y, ignore_index=0))
    assert FocalLoss(gamma=2.0)(s, y) < FocalLoss(gamma=0.0)(s, y)


# ---------------------------------------------------------------- OHEM (KPRNet)
def ohem_reference(logits, target, thresh=0.9, min_kept=10000, ignore=0):
    """kprnet.md 3.4: per-point CE; p = GT probability; sort valid p ascending; min_value = p_sorted[min(min_kept,
    n_valid - 1)]; threshold = max(min_value, thresh); mean CE over valid points with p < threshold."""
    ce = F.cross_entropy(logits, target, ignore_index=ignore, reduction="none").flatten()
    p = torch.softmax(logits, 1).gather(1, target[:, None])[:, 0].flatten()
    valid = target.flatten() != ignore
    ps, _ = torch.sort(p[valid])
    min_value = ps[min(min_kept, len(ps) - 1)]
    threshold = max(float(min_value), thresh)
    keep = valid & (p < threshold)
    return ce[keep].mean(), int(keep.sum())


def test_ohem_matches_kprnet_on_points():
    g = torch.Generator().manual_seed(6)
    B, N = 2, 3000
    y = torch.randint(0, C, (B, N), generator=g)
    s = torch.randn(B, C, N, generator=g) * 3
    for min_kept in (100, 5000, 10000):
        ref, n_kept = ohem_reference(s, y, min_kept=min_kept)
        torch.testing.assert_close(OhemCrossEntropy(min_kept=min_kept)(s, y), ref)
    # confident logits: only min_kept points are kept
    conf = F.one_hot(y, C).permute(0, 2, 1).float() * 6 + torch.randn(B, C, N, generator=g) * 0.1
    ref, n_kept = ohem_reference(conf, y, min_kept=1000)
    assert n_kept == 1000
    torch.testing.assert_close(OhemCrossEntropy(min_kept=1000)(conf, y), ref)
    # KPRNet's (B,C,1,N) layout gives the same value
    torch.testing.assert_close(OhemCrossEntropy(min_kept=1000)(conf[:, :, None], y[:, None]), ref)


def test_ohem_empty_batch_is_zero():
    s, y = inputs(seed=7)
    x = s.clone().requires_grad_()
    loss = OhemCrossEntropy()(x, torch.zeros_like(y))
    loss.backward()
    assert loss.item() == 0 and (x.grad == 0).all()


@pytest.mark.parametrize("bad, true_class", [(float("nan"), False), (float("inf"), False), (-float("inf"), True)])
def test_ohem_propagates_non_finite_logits(bad, true_class):
    """KPRNet's OHEM drops a point whose probability is NaN (NaN < threshold is false) and returned a finite loss
    (0.0 when nothing else was kept); a NaN/inf logit that makes a valid point's CE non-finite must give a
    non-finite loss. (-inf on another class is a probability of 0: finite, as in CE.)"""
    s, y = inputs(seed=3)
    confident = torch.nn.functional.one_hot(y, C).movedim(-1, 1).float() * 50  # every point easy: none kept
    b, h, w = (y != 0).nonzero()[5].tolist()
    c = int(y[b, h, w]) if true_class else (int(y[b, h, w]) + 1) % C
    confident[b, c, h, w] = bad
    assert OhemCrossEntropy(thresh=0.7, min_kept=0)(confident, y).isfinite().item() is False
    s_bad = s.clone()
    s_bad[b, c, h, w] = bad
    assert not OhemCrossEntropy(min_kept=100)(s_bad, y).isfinite()
    # on an ignored point it changes nothing (that point takes no part, as in CE)
    b0, h0, w0 = (y == 0).nonzero()[0].tolist()
    clean = OhemCrossEntropy(min_kept=100)(s, y)
    s2 = s.clone()
    s2[b0, c, h0, w0] = bad
    torch.testing.assert_close(OhemCrossEntropy(min_kept=100)(s2, y), clean)


# ---------------------------------------------------------------- shared interface
@pytest.mark.parametrize("make", [CrossEntropyLoss, LovaszSoftmaxLoss, FocalLoss, OhemCrossEntropy,
                                  SubclassifiedLoss])
def test_points_and_images_and_last_terms(make):
    s, y = inputs(seed=8)
    loss = make()
    v = loss(s, y)
    assert v.dim() == 0 and torch.isfinite(v)
    assert list(loss.last_terms) == [loss.name] and torch.equal(loss.last_terms[loss.name], v.detach())
    pts_s, pts_y = s[:, :, 0], y[:, 0]                              # [B,C,N], [B,N]
    torch.testing.assert_close(loss(pts_s, pts_y), loss(pts_s[:, :, None], pts_y[:, None]))
    with pytest.raises(ValueError, match=r"target shape \[2, 64\] does not match logits shape \[2, 20, 16, 64\]"):
        loss(s, y[:, 0])
    with pytest.raises(ValueError, match="out of range"):
        loss(s, y + C)
