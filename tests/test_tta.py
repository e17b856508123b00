"""Test-time augmentation (lidarseg.engine.tta, `lidarseg infer --tta`): each vote's input is the range image of the
mirrored / rotated scan, a model symmetric by construction predicts the same with and without TTA, the mean over
votes against a plain transcription, the protocol in the infer JSON, the manifest and the evaluate header."""
import json

import numpy as np
import pytest
import torch

from lidarseg.cli import main
from lidarseg.data.dataset import RANGENET_MEAN, RANGENET_STD
from lidarseg.data.mixing import rotate_z
from lidarseg.data.projection import normalised_input, spherical_projection
from lidarseg.engine.tta import TTA, transform_input, tta_probs
from lidarseg.errors import ConfigError

from test_engine_inference import trained  # noqa: F401  (module fixture: a one-epoch checkpoint)

pytestmark = pytest.mark.usefixtures("keep_torch_threads")
H, W = 32, 256


def image(points):
    proj = spherical_projection(points, H, W, 3.0, -25.0)
    x = torch.from_numpy(normalised_input(proj, RANGENET_MEAN, RANGENET_STD))
    return x[None], torch.from_numpy(proj.mask)[None]


@pytest.fixture(scope="module")
def scan(make_synthetic_scan):
    return make_synthetic_scan(sequence=8, index=0, azimuth_steps=512)[0]


def test_parse():
    assert TTA.parse("flip,shift:4").votes == 8 and TTA.parse("shift:3").transforms(256) == [
        (False, 0), (False, 85), (False, 171)]
    assert TTA.parse("flip").transforms(10) == [(False, 0), (True, 0)]
    assert not TTA.parse("none").active and TTA.parse(None).votes == 1
    for bad in ("flop", "shift:0", "shift:x", "flip,flip", "shift:2,shift:3"):
        with pytest.raises(ConfigError, match="--tta"):
            TTA.parse(bad)


@pytest.mark.parametrize("flip, shift", [(False, 64), (True, 0), (True, 100)])
def test_vote_input_is_the_image_of_the_transformed_scan(scan, flip, shift):
    x, mask = image(scan)
    pts = scan.copy()
    if flip:
        pts[:, 1] *= -1
    pts = rotate_z(pts, -2 * np.pi * shift / W)
    want, want_mask = image(pts)
    got = transform_input(x, mask, RANGENET_MEAN, RANGENET_STD, flip, shift)
    # the same pixels hold points (up to points on column borders) and carry the same values
    same = (want_mask == torch.roll(torch.flip(mask, [-1]) if flip else mask, shift, -1))
    assert same.float().mean() > 0.999
    both = want_mask & (got != 0).any(1)
    close = (got - want).abs().amax(1)[both] < 1e-3
    assert close.float().mean() > 0.999


class Symmetric(torch.nn.Module):
    """Per-pixel logits from range, z and remission only: invariant under mirroring and rotation about z."""
    input_mode = "range"

    def __init__(self, num_classes=20):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(5, num_classes, 1)
        with torch.no_grad():
            self.conv.weight[:, 1:3] = 0

    def forward(self, x):
        return self.conv(x) * 5


def test_symmetric_model_same_with_and_without_tta(scan):
    x, mask = image(scan)
    model = Symmetric().eval()
    plain = torch.softmax(model(x), 1)
    votes = tta_probs(model, x, mask, RANGENET_MEAN, RANGENET_STD, TTA.parse("flip,shift:4"))
    torch.testing.assert_close(votes, plain, atol=1e-5, rtol=1e-5)


def test_mean_of_votes_against_transcription(scan):
    x, mask = image(scan)
    torch.manual_seed(1)
    model = torch.nn.Conv2d(5, 4, 3, padding=1).eval()
    got = tta_probs(model, x, mask, RANGENET_MEAN, RANGENET_STD, TTA.parse("flip,shift:2"))
    want = torch.zeros_like(got)
    for flip in (False, True):
        for s in (0, W // 2):
            p = torch.softmax(model(transform_input(x, mask, RANGENET_MEAN, RANGENET_STD, flip, s)), 1)
            p = torch.roll(p, -s, -1)
            want += torch.flip(p, [-1]) if flip else p
    torch.testing.assert_close(got, want / 4)
    assert not torch.allclose(got, torch.softmax(model(x), 1), atol=1e-3)  # the votes differ for this model


def test_infer_tta_protocol(trained, tmp_path, capsys, monkeypatch):
    root, ckpt = trained
    import lidarseg.engine.inference as inference
    real = inference.load_model

    def symmetric(checkpoint, device):
        _, cfg, label_map = real(checkpoint, device)
        return Symmetric(label_map.num_classes).eval(), cfg, label_map

    monkeypatch.setattr(inference, "load_model", symmetric)
    common = ["infer", "--checkpoint", str(ckpt), "--data", str(root), "--split", "valid", "--no-progress",
              "--device", "cpu", "--knn"]
    assert main([*common, "--out", str(tmp_path / "plain"), "--json", str(tmp_path / "plain.json")]) == 0
    assert main([*common, "--out", str(tmp_path / "tta"), "--json", str(tmp_path / "tta.json"),
                 "--tta", "flip,shift:4"]) == 0
    out = capsys.readouterr().out
    assert "TTA 8 votes (horizontal flip x 4 azimuth shifts)" in out
    for f in sorted((tmp_path / "plain" / "sequences" / "08" / "predictions").glob("*.label")):
        np.testing.assert_array_equal(np.fromfile(f, np.uint32),
                                      np.fromfile(tmp_path / "tta" / "sequences" / "08" / "predictions" / f.name,
                                                  np.uint32))
    plain, tta = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "tta"))
    assert plain["protocol"] == {"knn": {"k": 5, "search": 5, "sigma": 1.0, "cutoff": 1.0}, "votes": 1,
                                 "tta": False, "mc_samples": 0}
    assert tta["protocol"]["votes"] == 8 and tta["protocol"]["tta"] == {"votes": 8, "flip": True, "shifts": 4}
    assert tta["metrics"]["miou"] == pytest.approx(plain["metrics"]["miou"])
    manifest = json.loads((tmp_path / "tta" / "lidarseg-predictions.json").read_text())
    assert manifest["writer"]["tta"] == {"votes": 8, "flip": True, "shifts": 4}
    assert main(["evaluate", "--data", str(root), "--predictions", str(tmp_path / "tta"), "--sequences", "08",
                 "--no-progress"]) == 0
    assert "Protocol: KNN on (k=5, search=5, sigma=1.0, cutoff=1.0); TTA 8 votes (flip on, 4 shift(s))" in \
        capsys.readouterr().out
    # TTA changes the writer: the plain folder refuses TTA predictions without --overwrite
    assert main([*common, "--out", str(tmp_path / "plain"), "--tta", "flip"]) == 2
    assert main([*common, "--out", str(tmp_path / "x"), "--tta", "flop"]) == 2
    assert main([*common, "--out", str(tmp_path / "y"), "--tta", "flip", "--mc-samples", "2"]) == 2


class PointsOnly(torch.nn.Module):
    """KPRNet-shaped model whose logits depend on xyz only: a flip of the image and px cannot change them."""
    input_mode = "kprnet"

    def __init__(self, num_classes=5):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, num_classes)

    def forward(self, image, px, py, xyz, knn, point_mask=None):
        return self.lin(xyz).transpose(1, 2)


class SidedPoints(PointsOnly):
    """Logits that depend on the sign of px (which side of the crop a point samples)."""

    def forward(self, image, px, py, xyz, knn, point_mask=None):
        return (self.lin(xyz) * (1 + px[..., None])).transpose(1, 2) + image.mean((1, 2, 3))[:, None, None]


def kprnet_batch(n=50):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(1, 2, 8, 16, generator=g), "px": torch.rand(1, n, generator=g) * 2 - 1,
            "py": torch.rand(1, n, generator=g) * 2 - 1, "xyz": torch.randn(1, n, 3, generator=g),
            "knn": torch.zeros(1, n, 7, dtype=torch.int64), "point_mask": torch.ones(1, n, dtype=torch.bool)}


def test_kprnet_flip_votes():
    from lidarseg.data.representation import get_representation
    rep = get_representation("kprnet")
    batch = kprnet_batch()
    model = PointsOnly().eval()
    plain = torch.softmax(rep.forward(model, batch, "cpu"), 1)
    torch.testing.assert_close(rep.tta_probs(model, batch, "cpu", TTA.parse("flip"), None), plain)
    sided = SidedPoints().eval()
    got = rep.tta_probs(sided, batch, "cpu", TTA.parse("flip"), None)
    flipped = sided(torch.flip(batch["image"], [-1]), -batch["px"], batch["py"], batch["xyz"], batch["knn"])
    torch.testing.assert_close(got, (torch.softmax(sided(batch["image"], batch["px"], batch["py"], batch["xyz"],
                                                         batch["knn"]), 1) + torch.softmax(flipped, 1)) / 2)
    with pytest.raises(ConfigError, match="KPRNet takes flip votes only"):
        rep.check_tta(TTA.parse("flip,shift:2"))
    rep.check_tta(TTA.parse("flip"))
