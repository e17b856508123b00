"""KPRNet: parameter counts (on the meta device), shapes, KPConv maths, kernel points, padding, over-fitting."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import models
from lidarseg.data.kprnet import KPRNetGeometry, KPRNetTransform, collate_kprnet
from models.kpconv import KPConv, kernel_points
from models.kprnet import KPRNet, kprnet

SMALL = dict(backbone="resnext26_32x4d", width=0.25, head_width=0.25)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(module, trainable=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def test_parameter_count_matches_kprnet():
    with torch.device("meta"):                      # no 850 MB allocation
        m = models.build_model("kprnet", num_classes=19, in_channels=2)
    assert isinstance(m, KPRNet) and m.input_mode == "kprnet"
    assert n_params(m) == 213_186_496
    assert n_params(m, trainable=True) == 213_186_451   # the 45 kernel point coordinates are frozen
    b = m.backbone
    assert n_params(b) == 191_974_656
    assert [n_params(getattr(b, f"layer{i}")) for i in range(1, 5)] == [933_888, 5_264_384, 123_314_176, 62_455_808]
    assert n_params(m.classifier) == 20_223_360
    assert n_params(m.classifier.aspp.convs) == 15_206_912 and n_params(m.classifier.aspp.project) == 656_384
    assert n_params(m.kpclassifier) == 983_597 and n_params(m.final) == 4_883
    assert sum(x.numel() for x in m.buffers()) == 339_059
    # structure: 2-channel stride-4 stem, no max-pool, dilated layer4, ASPP rates
    assert b.conv1.in_channels == 2 and b.conv1.stride == (4, 4) and b.conv1.kernel_size == (7, 7)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    assert b.layer4[0].conv2.dilation == (1, 1) and b.layer4[1].conv2.dilation == (2, 2)
    assert b.layer4[0].conv2.stride == (1, 1) and b.layer4[0].conv2.groups == 32
    assert [c[0].dilation[0] for c in list(m.classifier.aspp.convs)[1:4]] == [12, 24, 36]
    assert m.classifier.dropout.p == 0.2
    keys = set(m.state_dict())
    for k in ("backbone.layer3.22.conv3.weight", "classifier.aspp.project.0.weight", "classifier.mix_lv1.0.weight",
              "kpclassifier.kpconv.weights", "kpclassifier.kpconv.kernel_points", "kpclassifier.bn.running_var",
              "final.bias"):
        assert k in keys, k


@pytest.mark.parametrize("H, W, N", [(73, 257, 50), (65, 129, 7), (64, 256, 100)])
def test_forward_shapes(H, W, N):
    m = kprnet(num_classes=20, **SMALL).eval()
    B = 2
    image = torch.randn(B, 2, H, W)
    l1, l2, l4 = m.backbone(image)
    assert l1.shape[-2:] == (math.ceil(H / 4), math.ceil(W / 4))
    assert l2.shape[-2:] == (math.ceil(H / 8), math.ceil(W / 8))
    assert l4.shape[-2:] == (math.ceil(H / 16), math.ceil(W / 16))
    px, py = torch.rand(B, N) * 2 - 1, torch.rand(B, N) * 2 - 1
    xyz = torch.randn(B, N, 3) * 3
    knn = torch.randint(0, N, (B, N, 7))
    with torch.no_grad():
        logits, feats = m(image, px, py, xyz, knn, return_features=True)
    assert logits.shape == (B, 20, N) and feats.shape == (B, 64, N)


def test_kernel_points_deterministic_and_in_state_dict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = kernel_points(0.6, 15, seed=0)
    assert np.array_equal(a, kernel_points(0.6, 15, seed=0))
    assert not np.allclose(a, kernel_points(0.6, 15, seed=1))
    r = np.linalg.norm(a, axis=1)
    assert r[0] < 0.05                                       # centre point (plus the 0.01 noise, times 0.6)
    assert 0.36 < r[1:].min() and r[1:].max() < 0.43 and abs(r[1:].mean() - 0.66 * 0.6) < 0.01
    conv = KPConv(8, 4, seed=0)
    assert "kernel_points" in conv.state_dict() and not conv.kernel_points.requires_grad
    torch.testing.assert_close(conv.kernel_points, torch.from_numpy(a))
    assert list(tmp_path.iterdir()) == []                    # nothing written to the working directory
    other = KPConv(8, 4, seed=7)
    other.load_state_dict(conv.state_dict())                 # a checkpoint fixes the kernel points
    torch.testing.assert_close(other.kernel_points, conv.kernel_points)


def test_kpconv_matches_formula():
    """out_i = sum_k sum_j max(0, 1 - |(p_j - p_i) - x_k| / 1.2) f_j W_k (kprnet.md 2.5), by loops."""
    torch.manual_seed(0)
    conv = KPConv(5, 3, num_kernel_points=15, radius=0.6, extent=1.2).double()
    B, N = 2, 9
    xyz = torch.randn(B, N, 3, dtype=torch.float64)
    feats = torch.randn(B, N, 5, dtype=torch.float64)
    knn = torch.randint(0, N, (B, N, 7))
    out = conv(xyz, knn, feats)
    kp, W = conv.kernel_points.double(), conv.weights.detach()
    ref = torch.zeros(B, N, 3, dtype=torch.float64)
    for b in range(B):
        for i in range(N):
            for j in knn[b, i]:
                y = xyz[b, j] - xyz[b, i]
                for k in range(15):
                    h = max(0.0, 1.0 - torch.linalg.norm(y - kp[k]).item() / 1.2)
                    ref[b, i] += h * feats[b, j] @ W[k]
    torch.testing.assert_close(out, ref)
    bound = 1 / 256
    big = KPConv(256, 256)
    assert big.weights.abs().max() <= bound + 1e-6           # kaiming_uniform(a=sqrt(5)), fan_in = 256*256


def test_features_sampled_with_align_corners_false():
    m = kprnet(**SMALL).eval()
    captured = {}
    m.kpclassifier.kpconv.register_forward_hook(lambda mod, inp, out: captured.update(feats=inp[2]))
    image = torch.randn(1, 2, 33, 65)
    feat = m.classifier(m.backbone(image))                   # [1,C,9,17]
    h, w = feat.shape[-2:]
    rows, cols = torch.tensor([0, 4, 8]), torch.tensor([0, 7, 16])
    px = (2 * (cols.double() + 0.5) / w - 1).float()[None]   # pixel centres
    py = (2 * (rows.double() + 0.5) / h - 1).float()[None]
    with torch.no_grad():
        m(image, px, py, torch.zeros(1, 3, 3), torch.zeros(1, 3, 7, dtype=torch.long))
    torch.testing.assert_close(captured["feats"][0], feat[0, :, rows, cols].T)


def test_padded_points_do_not_change_valid_outputs():
    torch.manual_seed(0)
    m = kprnet(**SMALL).train()
    B, N, P = 2, 40, 15
    image = torch.randn(B, 2, 33, 65)
    px, py = torch.rand(B, N) * 2 - 1, torch.rand(B, N) * 2 - 1
    xyz = torch.randn(B, N, 3)
    knn = torch.randint(0, N, (B, N, 7))
    torch.manual_seed(1)
    ref = m(image, px, py, xyz, knn)
    pad = lambda t, v=0: torch.cat([t, torch.full((B, P, *t.shape[2:]), v, dtype=t.dtype)], 1)  # noqa: E731
    mask = torch.arange(N + P)[None].expand(B, -1) < N
    torch.manual_seed(1)
    out = m(image, pad(px), pad(py), pad(xyz), pad(knn), point_mask=mask)
    torch.testing.assert_close(out[:, :, :N], ref, rtol=1e-4, atol=1e-5)
    assert out[:, :, N:].eq(0).all()
    torch.manual_seed(1)
    unmasked = m(image, pad(px), pad(py), pad(xyz), pad(knn))   # reference behaviour: padding enters BN stats
    assert not torch.allclose(unmasked[:, :, :N], ref, atol=1e-4)


def test_gradients_reach_every_trainable_parameter():
    torch.manual_seed(0)
    m = kprnet(**SMALL).train()
    B, N = 2, 60
    out = m(torch.randn(B, 2, 33, 65), torch.rand(B, N) * 2 - 1, torch.rand(B, N) * 2 - 1, torch.randn(B, N, 3),
            torch.randint(0, N, (B, N, 7)))
    out.square().mean().backward()
    names = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert names == []
    assert m.kpclassifier.kpconv.kernel_points.grad is None


def test_build_from_config_variants():
    m = models.build_model_from_config({"name": "kprnet", "backbone": "resnext26_32x4d", "width": 0.25,
                                        "head_width": 0.25, "kernel_seed": 3}, num_classes=20)
    assert m.final.out_channels == 20 and m.in_channels == 2
    torch.testing.assert_close(m.kpclassifier.kpconv.kernel_points, torch.from_numpy(kernel_points(seed=3)))
    with torch.device("meta"):
        r50 = models.build_model("kprnet", 19, 2, backbone="resnext50_32x4d")
    assert len(r50.backbone.layer3) == 6 and r50.backbone.layer1[0].conv2.out_channels == 128


def test_small_kprnet_overfits_one_batch():
    """A fixed batch of two synthetic scans through the real input pipeline (small geometry), a tiny KPRNet."""
    from test_kprnet_data import SMALL_GEOM, ring_scan
    t = KPRNetTransform(train=True, geometry=KPRNetGeometry(**SMALL_GEOM))
    samples = [t(*ring_scan(rings=16, per_ring=160, seed=s), rng=np.random.default_rng(s)) for s in (0, 1)]
    batch = collate_kprnet(samples)
    torch.manual_seed(0)
    m = kprnet(num_classes=20, **SMALL, dropout=0.0)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    y, mask = batch["points_label"], batch["point_mask"]
    args = (batch["image"], batch["px"], batch["py"], batch["xyz"], batch["knn"], mask)
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(*args), y, ignore_index=0)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = m(*args).argmax(1)
    valid = mask & (y > 0)
    acc = (pred[valid] == y[valid]).float().mean().item()
    assert acc > 0.97, (acc, loss.item())
