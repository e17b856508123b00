"""CENet's boundary loss against a transcription of the published formula (huixiancheng/CENet,
modules/losses/boundary_loss.py), which takes the network's softmax output."""
import pytest
import torch
import torch.nn.functional as F

from lidarseg.errors import ConfigError
from lidarseg.losses import BoundaryLoss, build_loss


def reference_boundary_loss(pred, gt, theta0=3):
    """The published forward on probabilities `pred` [N,C,H,W] and labels `gt` [N,H,W]."""
    n, c, _, _ = pred.shape
    one_hot_gt = torch.eye(c)[gt].transpose(1, 3).transpose(2, 3)
    gt_b = F.max_pool2d(1 - one_hot_gt, kernel_size=theta0, stride=1, padding=(theta0 - 1) // 2)
    gt_b -= 1 - one_hot_gt
    pred_b = F.max_pool2d(1 - pred, kernel_size=theta0, stride=1, padding=(theta0 - 1) // 2)
    pred_b -= 1 - pred
    gt_b = gt_b.view(n, c, -1)
    pred_b = pred_b.view(n, c, -1)
    P = torch.sum(pred_b * gt_b, dim=2) / (torch.sum(pred_b, dim=2) + 1e-7)
    R = torch.sum(pred_b * gt_b, dim=2) / (torch.sum(gt_b, dim=2) + 1e-7)
    BF1 = 2 * P * R / (P + R + 1e-7)
    return torch.mean(1 - BF1)


def blocky_labels(n, h, w, c, seed):
    """Labels constant on random rectangles (realistic boundaries), all classes, 0 included."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n, h // 4, w // 8), generator=g)
    return y.repeat_interleave(4, 1).repeat_interleave(8, 2)


@pytest.mark.parametrize("theta0", [3, 5])
def test_equals_published_formula_values_and_gradients(theta0):
    torch.manual_seed(0)
    y = blocky_labels(2, 16, 64, 20, seed=1)
    logits = (torch.randn(2, 20, 16, 64) * 3 + 4 * F.one_hot(y, 20).permute(0, 3, 1, 2)).requires_grad_()
    ours = BoundaryLoss(theta0)(logits, y)
    ours.backward()
    g_ours = logits.grad.clone()
    logits.grad = None
    ref = reference_boundary_loss(torch.softmax(logits, 1), y, theta0)
    ref.backward()
    assert 0.05 < float(ref.detach()) < 1.0
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_ours, logits.grad, rtol=1e-5, atol=1e-9)


def test_perfect_prediction_has_loss_near_zero_and_registry():
    y = blocky_labels(1, 16, 32, 5, seed=2)
    logits = 50.0 * F.one_hot(y, 5).permute(0, 3, 1, 2).float()
    loss = build_loss({"name": "boundary"})
    assert isinstance(loss, BoundaryLoss) and loss.theta0 == 3
    present = len(torch.unique(y))
    # classes absent from the image have P = R = 0 -> 1 - BF1 = 1 (published behaviour)
    assert float(loss(logits, y)) == pytest.approx((5 - present) / 5, abs=1e-5)
    assert set(loss.last_terms) == {"boundary"}


def test_point_logits_and_bad_options():
    y = torch.randint(0, 4, (2, 50))
    logits = torch.randn(2, 4, 50)
    ref = reference_boundary_loss(torch.softmax(logits, 1)[:, :, None], y[:, None])
    torch.testing.assert_close(BoundaryLoss()(logits, y), ref)
    with pytest.raises(ConfigError, match="theta0"):
        build_loss({"name": "boundary", "theta0": 4})
    with pytest.raises(ConfigError, match="unknown key"):
        build_loss({"name": "boundary", "theta": 5})
    with pytest.raises(ValueError, match="out of range"):
        BoundaryLoss()(logits, y + 10)
