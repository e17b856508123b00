"""RangeNet++ (Darknet21/53): structure, parameter counts, shapes, skips, checkpoints, over-fitting."""
import numpy as np
import pytest
import torch
from torch import nn

import models
from lidarseg.errors import ConfigError, DataError
from models.rangenet import RangeNet, rangenet21, rangenet53

SMALL = dict(width=0.25, blocks=[1, 1, 1, 1, 1])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name, total, backbone", [("rangenet21", 24_712_980, 14_921_120),
                                                    ("rangenet53", 50_377_364, 40_585_504)])
def test_parameter_counts_match_rangenet(name, total, backbone):
    with torch.device("meta"):
        m = models.build_model(name, num_classes=20, in_channels=5)
    assert n_params(m) == total
    assert n_params(m.backbone) == backbone
    assert n_params(m.decoder) == 9_786_080
    assert n_params(m.head) == 5_780
    # buffers as in the reference (running mean/var + counters)
    assert sum(b.numel() for b in m.buffers()) == {"rangenet21": 20_259, "rangenet53": 43_715}[name]


def test_structure_follows_reference():
    with torch.device("meta"):
        m = rangenet53()
    keys = set(m.state_dict())
    for k in ["backbone.conv1.weight", "backbone.enc1.conv.weight", "backbone.enc1.residual_0.conv1.weight",
              "backbone.enc5.residual_3.conv2.weight", "decoder.dec5.upconv.weight", "decoder.dec5.upconv.bias",
              "decoder.dec5.residual.conv2.weight", "decoder.dec1.bn.running_mean", "head.1.weight", "head.1.bias"]:
        assert k in keys, k
    assert "backbone.enc1.conv.bias" not in keys          # encoder convs have no bias
    assert m.backbone.enc2.conv.stride == (1, 2)           # width-only striding
    up = m.decoder.dec5.upconv
    assert isinstance(up, nn.ConvTranspose2d) and up.kernel_size == (1, 4) and up.stride == (1, 2) \
        and up.padding == (0, 1)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert bns and all(b.momentum == 0.01 and b.eps == 1e-5 for b in bns)
    assert all(a.negative_slope == 0.1 for a in m.modules() if isinstance(a, nn.LeakyReLU))
    drops = [d for d in m.modules() if isinstance(d, nn.Dropout2d)]
    assert len(drops) == 3 and all(d.p == 0.01 for d in drops)   # backbone, decoder, head (darknet yamls)
    # decoder BasicBlock expands: 1x1 c_out -> c_in, then 3x3 c_in -> c_out
    assert m.decoder.dec5.residual.conv1.weight.shape == (1024, 512, 1, 1)
    assert m.backbone.enc5.residual_0.conv1.weight.shape == (512, 1024, 1, 1)
    assert m.input_mode == "range"


@pytest.mark.parametrize("shape", [(1, 5, 64, 64), (2, 5, 16, 128), (1, 5, 7, 96), (2, 5, 32, 256)])
def test_forward_shapes(shape):
    m = rangenet21(**SMALL).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        logits, feats = m(x, return_features=True)
    assert logits.shape == (shape[0], 20, shape[2], shape[3])
    assert feats.shape == (shape[0], 8, shape[2], shape[3])
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))  # logits, not probabilities


def test_other_classes_channels_and_output_stride():
    m = rangenet53(num_classes=7, in_channels=3, width=0.125, blocks=[1, 1, 1, 1, 1], output_stride=8).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 8, 24)).shape == (1, 7, 8, 24)       # only divisible by 8 needed
    assert isinstance(m.decoder.dec4, nn.Sequential) and hasattr(m.decoder.dec4, "conv")


def test_explicit_channel_profile():
    chans = [16, 32, 48, 64, 96, 128]
    m = rangenet21(channels=chans, blocks=[1, 1, 1, 1, 1]).eval()
    assert m.channels == chans
    assert m.backbone.conv1.out_channels == 16 and m.head[1].in_channels == 16
    for i in range(5):  # encoder stage i maps chans[i] -> chans[i+1]; the decoder mirrors it
        assert getattr(m.backbone, f"enc{i + 1}").conv.in_channels == chans[i]
        assert getattr(m.backbone, f"enc{i + 1}").conv.out_channels == chans[i + 1]
        assert getattr(m.decoder, f"dec{i + 1}").upconv.in_channels == chans[i + 1]
        assert getattr(m.decoder, f"dec{i + 1}").upconv.out_channels == chans[i]
    # width=0.25 is the same network as the channel list it rounds to
    assert n_params(rangenet21(channels=[8, 16, 32, 64, 128, 256], blocks=[1] * 5)) == n_params(rangenet21(**SMALL))
    with torch.no_grad():
        assert m(torch.randn(1, 5, 16, 64)).shape == (1, 20, 16, 64)
    for bad in ([16, 32], [16, 32, 48, 64, 96, 0], [16, 32, 48, 64, 96, 1.5]):
        with pytest.raises(ConfigError, match="channels"):
            rangenet21(channels=bad)
    with pytest.raises(ConfigError, match="give one of them"):
        rangenet21(channels=chans, width=0.5)


def test_width_not_divisible_by_32():
    m = rangenet21(**SMALL).eval()
    with pytest.raises(ConfigError, match="1000 is not divisible by 32"):
        m(torch.randn(1, 5, 8, 1000))
    mp = rangenet21(**SMALL, pad_width=True).eval()
    mp.load_state_dict(m.state_dict())
    x = torch.randn(1, 5, 8, 100)
    with torch.no_grad():
        out = mp(x)
        ref = m(torch.nn.functional.pad(x, (0, 28)))[..., :100]
    assert out.shape == (1, 20, 8, 100)
    torch.testing.assert_close(out, ref)


def test_gradients_reach_every_parameter_and_skips_are_detached():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, 64)
    grads = {}
    for detach in (True, False):
        torch.manual_seed(1)
        m = rangenet21(**SMALL, detach_skips=detach)
        assert m.detach_skips is detach
        out = m(x)
        out.square().mean().backward()
        missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert missing == [], missing   # with detached skips every parameter still learns through the main path
        grads[detach] = {n: p.grad.clone() for n, p in m.named_parameters()}
    # forward is identical; the stem's gradient differs (no gradient through the skips when detached)
    assert not torch.allclose(grads[True]["backbone.conv1.weight"], grads[False]["backbone.conv1.weight"])
    torch.testing.assert_close(grads[True]["head.1.weight"], grads[False]["head.1.weight"])


def test_build_model_from_config_and_errors():
    m = models.build_model_from_config({"model": {"name": "rangenet21", "width": 0.25, "blocks": [1, 1, 1, 1, 1],
                                                  "dropout": 0.05}}, num_classes=5)
    assert isinstance(m, RangeNet) and m.head[1].out_channels == 5 and m.head[0].p == 0.05
    assert m.in_channels == 5
    with pytest.raises(ConfigError, match="unknown model"):
        models.build_model("rangenet99")
    with pytest.raises(ConfigError, match="valid options"):
        models.build_model("rangenet21", 20, 5, widht=0.5)
    with pytest.raises(ConfigError, match="blocks"):
        models.build_model("rangenet21", 20, 5, blocks=[1, 1])
    with pytest.raises(ConfigError, match="name"):
        models.build_model_from_config({"width": 1})


def test_strict_loading_names_keys(tmp_path):
    a = rangenet21(**SMALL)
    b = rangenet21(**SMALL)
    state = a.state_dict()
    models.load_state_dict_strict(b, {"module." + k: v for k, v in state.items()})
    for k in state:
        torch.testing.assert_close(b.state_dict()[k], state[k])
    bad = dict(state)
    bad.pop("head.1.bias")
    bad["head.2.weight"] = torch.zeros(1)
    with pytest.raises(DataError, match=r"missing keys \(1\): head.1.bias.*unexpected keys \(1\): head.2.weight"):
        models.load_state_dict_strict(b, bad)
    bad = dict(state, **{"head.1.bias": torch.zeros(3)})
    with pytest.raises(DataError, match="shape mismatches"):
        models.load_state_dict_strict(b, bad)


def test_load_released_rangenet_files(tmp_path):
    """RangeNet++ saves backbone / segmentation_decoder / segmentation_head state dicts separately."""
    a = rangenet21(**SMALL).eval()
    torch.save(a.backbone.state_dict(), tmp_path / "backbone")
    torch.save(a.decoder.state_dict(), tmp_path / "segmentation_decoder")
    torch.save(a.head.state_dict(), tmp_path / "segmentation_head")
    assert "1.weight" in a.head.state_dict()  # the reference head's keys
    b = rangenet21(**SMALL).eval()
    models.load_rangenet_checkpoint(b, tmp_path)
    x = torch.randn(1, 5, 8, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    with pytest.raises(DataError, match="not found"):
        models.load_rangenet_checkpoint(b, tmp_path, suffix="_train")


def _synthetic_range_batch(B=2, H=16, W=128, seed=0):
    """Tiny structured range images: ground (road/sidewalk by side), a wall (building) with boxes (car) and empty
    sky. Input channels (range, x, y, z, remission), normalised roughly; labels 0 where empty."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(B):
        yaw = np.linspace(-np.pi, np.pi, W, endpoint=False)[None, :].repeat(H, 0)
        pitch = np.linspace(0.05, -0.43, H)[:, None].repeat(W, 1)
        wall = rng.uniform(8, 15)
        rng_ground = np.where(pitch < -0.02, 1.73 / np.maximum(np.sin(-pitch), 1e-3), np.inf)
        r = np.minimum(rng_ground, wall / np.maximum(np.cos(pitch), 1e-3))
        label = np.where(rng_ground < wall, np.where(np.sin(yaw) > 0, 9, 11), 13)
        for _k in range(3):  # boxes
            c0, w = rng.integers(0, W - 16), rng.integers(6, 14)
            d = rng.uniform(4, 7)
            rows = pitch > -0.35
            sel = np.zeros_like(r, bool)
            sel[:, c0:c0 + w] = True
            sel &= rows & (d < r)
            r[sel], label[sel] = d, 1
        empty = rng.random((H, W)) < 0.1
        r[empty], label[empty] = 0, 0
        x = r * np.cos(pitch) * np.cos(yaw)
        y = r * np.cos(pitch) * np.sin(yaw)
        z = r * np.sin(pitch)
        rem = np.where(label == 1, 0.6, 0.2) + rng.normal(0, 0.02, (H, W))
        img = np.stack([r / 10, x / 10, y / 10, z, rem * 3]) * (~empty)
        xs.append(img.astype(np.float32))
        ys.append(label)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)).long()


def test_small_rangenet_overfits_one_batch():
    torch.manual_seed(0)
    x, y = _synthetic_range_batch()
    m = rangenet21(**SMALL, dropout=0.0)   # channel dropout on 8 channels only adds noise here
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=0)
    for _ in range(50):
        opt.zero_grad()
        loss = loss_fn(m(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = m(x).argmax(1)
    valid = y > 0
    acc = (pred[valid] == y[valid]).float().mean().item()
    assert acc > 0.97, (acc, loss.item())


def test_channels_last_default_matches_contiguous():
    a = rangenet21(**SMALL).eval()
    b = rangenet21(**SMALL, channels_last=False).eval()
    assert a.channels_last and a.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 8, 64)
    with torch.no_grad():
        out = a(x)
        torch.testing.assert_close(out, b(x), rtol=1e-4, atol=1e-5)
    assert out.is_contiguous()
