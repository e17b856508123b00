"""Scene mixing (lidarseg.data.mixing): provenance and labels of every output point, each part against a plain
per-point transcription, determinism per (seed, epoch, index) across DataLoader workers, KPRNet ring order,
config errors."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from lidarseg.data.augment import rng_for
from lidarseg.data.mixing import SceneMixing, pitch_degrees, pixel_of, rotate_z
from lidarseg.data.projection import SensorGeometry, scan_unfolding
from lidarseg.errors import ConfigError

G = SensorGeometry(16, 64, 3.0, -25.0)
ALL = {"lasermix": {"prob": 1.0}, "rangemix": {"prob": 1.0}, "rangeunion": {"prob": 1.0},
       "rangeshift": {"prob": 1.0}, "polarmix": {"prob": 1.0}}


def random_scan(seed, n):
    rs = np.random.default_rng(seed)
    r = rs.uniform(2, 60, n)
    az = rs.uniform(-np.pi, np.pi, n)
    el = np.radians(rs.uniform(-27, 5, n))
    pts = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el), rs.random(n)], 1)
    return pts.astype(np.float32), rs.integers(0, 20, n)


def check_provenance(out, a, b, shift_a=0.0, shift_b=0.0):
    """Every output point is a point of A or B (up to the rotation of its scan) and carries that point's label."""
    for src, (pts, lab), ang in ((0, a, shift_a), (1, b, shift_b)):
        sel = out.source == src
        np.testing.assert_array_equal(out.labels[sel], lab[out.index[sel]])
        back = rotate_z(out.points[sel], -ang)
        np.testing.assert_allclose(back, pts[out.index[sel]], atol=1e-4)
    copy = out.source == 3  # polarmix's rotated copies of partner points: same label, z, remission, horizontal range
    np.testing.assert_array_equal(out.labels[copy], b[1][out.index[copy]])
    src = b[0][out.index[copy]]
    np.testing.assert_allclose(out.points[copy][:, 2:], src[:, 2:])
    np.testing.assert_allclose(np.hypot(*out.points[copy][:, :2].T), np.hypot(*src[:, :2].T), rtol=1e-5, atol=1e-5)
    assert np.all(np.isin(out.source, [0, 1, 3]))
    once = ~copy
    pairs = set(zip(out.source[once].tolist(), out.index[once].tolist()))
    assert len(pairs) == once.sum()  # no point of the scan or the partner twice


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n_a=st.integers(0, 400), n_b=st.integers(0, 400),
       parts=st.lists(st.sampled_from(sorted(ALL)), min_size=1, max_size=5, unique=True))
def test_every_point_keeps_its_source_label(seed, n_a, n_b, parts):
    a, b = random_scan(seed, n_a), random_scan(seed + 1, n_b)
    mix = SceneMixing({k: {**ALL[k], "prob": 1.0} for k in parts}, G)
    out = mix(a[0], a[1], rng_for(seed, 0, 0), partner=b)
    assert out.points.dtype == np.float32 and out.points.shape == (len(out.labels), 4)
    # the shift angles: replay the stream (rangeshift draws first, for A then B)
    rng = rng_for(seed, 0, 0)
    angles = [0.0, 0.0]
    if "rangeshift" in parts:
        lo = int(np.ceil(0.05 * G.width))
        for k in range(2):
            rng.random()
            angles[k] = 2 * np.pi * int(rng.integers(lo, G.width - lo + 1)) / G.width
    check_provenance(out, a, b, *angles)


def test_lasermix_against_transcription():
    a, b = random_scan(0, 3000), random_scan(1, 3000)
    mix = SceneMixing({"lasermix": {"prob": 1.0, "bands": [4], "pitch": [-25, 3]}}, G)
    out = mix(a[0], a[1], rng_for(5, 1, 2), partner=b)
    rng = rng_for(5, 1, 2)
    rng.random(), rng.choice([4])
    first = int(rng.integers(2))
    # plain transcription: band = floor((pitch + 25) / 7), clamped to 0..3
    band = lambda p: np.clip(np.floor((np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))) + 25) / 7), 0, 3)
    want_a = np.flatnonzero(band(a[0]) % 2 == first)
    want_b = np.flatnonzero(band(b[0]) % 2 != first)
    np.testing.assert_array_equal(out.index[out.source == 0], want_a)
    np.testing.assert_array_equal(out.index[out.source == 1], want_b)
    assert 0 < want_a.size < 3000 and 0 < want_b.size < 3000
    # no inclination band holds points of both scans
    bands_a, bands_b = set(band(a[0][want_a]).tolist()), set(band(b[0][want_b]).tolist())
    assert not bands_a & bands_b


def test_rangemix_blocks_and_rangeunion_pixels():
    a, b = random_scan(2, 4000), random_scan(3, 4000)
    out = SceneMixing({"rangemix": {"prob": 1.0, "grids": [[2, 2]]}}, G)(a[0], a[1], rng_for(0, 0, 0), partner=b)
    for src, pts in ((0, a[0]), (1, b[0])):
        row, col = pixel_of(pts[out.index[out.source == src]], G)
        colour = (row // 8 + col // 32) % 2
        assert np.unique(colour).size == 1
    ra, ca = pixel_of(a[0][out.index[out.source == 0]], G)
    rb, cb = pixel_of(b[0][out.index[out.source == 1]], G)
    assert (ra // 8 + ca // 32)[0] % 2 != (rb // 8 + cb // 32)[0] % 2
    # union: all of A, plus B's points in pixels with no point of A
    out = SceneMixing({"rangeunion": {"prob": 1.0}}, G)(a[0], a[1], rng_for(0, 0, 0), partner=b)
    np.testing.assert_array_equal(out.index[out.source == 0], np.arange(4000))
    ra, ca = pixel_of(a[0], G)
    occupied = set(zip(ra.tolist(), ca.tolist()))
    rb, cb = pixel_of(b[0], G)
    want = [i for i in range(4000) if (rb[i], cb[i]) not in occupied]
    np.testing.assert_array_equal(out.index[out.source == 1], want)
    assert 0 < len(want) < 4000


def test_rangeshift_rolls_the_range_image():
    a = random_scan(4, 2000)
    out = SceneMixing({"rangeshift": {"prob": 1.0}}, G)(a[0], a[1], rng_for(1, 0, 0))
    np.testing.assert_array_equal(out.index, np.arange(2000))
    r0, c0 = pixel_of(a[0], G)
    r1, c1 = pixel_of(out.points, G)
    np.testing.assert_array_equal(r1, r0)
    shift = (c0 - c1) % G.width
    vals, counts = np.unique(shift, return_counts=True)
    assert counts.max() > 0.98 * 2000 and 3 <= vals[counts.argmax()] <= G.width - 3  # rounding at column borders
    np.testing.assert_allclose(np.linalg.norm(out.points[:, :3], axis=1), np.linalg.norm(a[0][:, :3], axis=1),
                               rtol=1e-5)


def test_polarmix_against_transcription():
    a, b = random_scan(6, 3000), random_scan(7, 3000)
    b[1][:300] = 1  # some cars in the partner
    out = SceneMixing({"polarmix": {"prob": 1.0, "swap_prob": 1.0, "copy_prob": 1.0}}, G)(
        a[0], a[1], rng_for(3, 0, 0), partner=b)
    rng = rng_for(3, 0, 0)
    rng.random(), rng.random()
    start = (rng.random() - 1.0) * np.pi
    rng.random()
    u1, u2 = rng.random(), rng.random()
    yaw = lambda p: -np.arctan2(p[:, 1].astype(np.float64), p[:, 0].astype(np.float64))
    inside = lambda p: (yaw(p) > start) & (yaw(p) < start + np.pi)
    np.testing.assert_array_equal(out.index[out.source == 0], np.flatnonzero(~inside(a[0])))
    np.testing.assert_array_equal(out.index[out.source == 1], np.flatnonzero(inside(b[0])))
    cars = np.flatnonzero(np.isin(b[1], np.arange(1, 9)))
    np.testing.assert_array_equal(out.index[out.source == 3], np.r_[cars, cars])
    for k, angle in enumerate((u1 * 2 * np.pi / 3, (u2 + 1) * 2 * np.pi / 3)):
        c, s = np.cos(angle), np.sin(angle)
        q = b[0][cars].astype(np.float64)
        want = np.stack([q[:, 0] * c - q[:, 1] * s, q[:, 0] * s + q[:, 1] * c], 1)
        got = out.points[out.source == 3][k * cars.size:(k + 1) * cars.size, :2]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_probability_zero_is_identity():
    a, b = random_scan(0, 500), random_scan(1, 500)
    out = SceneMixing({k: {"prob": 0.0} for k in ALL}, G)(a[0], a[1], rng_for(0, 0, 0), partner=b)
    np.testing.assert_array_equal(out.points, a[0])
    np.testing.assert_array_equal(out.labels, a[1])


def test_ring_order_for_kprnet(make_synthetic_scan):
    a_pts, a_raw = make_synthetic_scan(sequence=0, index=0, azimuth_steps=256)
    b_pts, b_raw = make_synthetic_scan(sequence=0, index=1, azimuth_steps=256)
    ring_a, ring_b = scan_unfolding(a_pts).py, scan_unfolding(b_pts).py
    la, lb = a_raw.astype(np.int64) & 0xFFFF, b_raw.astype(np.int64) & 0xFFFF
    for cfg, floor in (({"lasermix": {"prob": 1.0}}, 1.0),
                       ({"lasermix": {"prob": 1.0}, "rangeshift": {"prob": 1.0}}, 0.9)):
        mix = SceneMixing(cfg, SensorGeometry(), ring_order=True)
        for seed in range(2):
            out = mix(a_pts, la, rng_for(seed, 0, 0), partner=(b_pts, lb))
            unf = scan_unfolding(out.points)
            a_side = out.source == 0
            src_ring = np.where(a_side, ring_a[np.where(a_side, out.index, 0)],
                                ring_b[np.where(a_side, 0, out.index)])
            # whole rings (lasermix): the unfolding finds every point's source ring; a rotation can move a ring's
            # gap onto the front seam, where the order-based ring detection merges two rings (documented)
            assert np.mean(unf.py == src_ring) >= floor
            np.testing.assert_array_equal(out.labels, np.where(a_side, la[np.where(a_side, out.index, 0)],
                                                                lb[np.where(a_side, 0, out.index)]))


@pytest.mark.parametrize("cfg, key", [
    ({"lasermix": {"prob": 1.5}}, "lasermix.prob"),
    ({"rangemix": {"prob": -0.1}}, "rangemix.prob"),
    ({"rangeunion": {"prob": "often"}}, "rangeunion.prob"),
    ({"lasermix": {"bands": [1]}}, "lasermix.bands"),
    ({"lasermix": {"pitch": [3, -25]}}, "lasermix.pitch"),
    ({"rangemix": {"grids": [[1, 1]]}}, "rangemix.grids"),
    ({"rangemix": {"grids": [[2, 100]]}}, "rangemix.grids"),
    ({"rangeshift": {"min_fraction": 0.7}}, "rangeshift.min_fraction"),
    ({"rangeshift": {"max": 3}}, "rangeshift"),
    ({"lasermix": 3}, "lasermix"),
    ({"polarmix": {"swap_prob": 2}}, "polarmix.swap_prob"),
    ({"polarmix": {"classes": ["car"]}}, "polarmix.classes"),
])
def test_config_errors(cfg, key):
    with pytest.raises(ConfigError, match=rf"augmentation\.{key}"):
        SceneMixing(cfg, G)


def test_dataset_bad_config_at_start_up(synthetic_root):
    from lidarseg.data.dataset import SemanticKITTI
    with pytest.raises(ConfigError, match=r"augmentation\.lasermix\.prob"):
        SemanticKITTI(synthetic_root, "train", sequences=[0], augmentation={"seed": 0, "lasermix": {"prob": 2}})
    with pytest.raises(ConfigError, match="unknown keys"):
        SemanticKITTI(synthetic_root, "train", sequences=[0], augmentation={"seed": 0, "lasermx": {}})


def _loader_samples(root, num_workers):
    from lidarseg.data.dataset import SemanticKITTI, collate
    ds = SemanticKITTI(root, "train", sequences=[0, 8], augmentation={
        "seed": 11, "lasermix": {"prob": 0.7}, "rangemix": {"prob": 0.5}, "rangeunion": {"prob": 0.5},
        "rangeshift": {"prob": 0.5}, "rotation": {}, "dropout": {}})
    ds.set_epoch(3)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=num_workers, collate_fn=collate)
    return [(b["xyz"][0].numpy(), b["points_label"][0].numpy(), b["px"][0].numpy()) for b in loader], ds


def test_dataset_deterministic_across_workers(synthetic_root):
    serial, ds = _loader_samples(synthetic_root, 0)
    workers, _ = _loader_samples(synthetic_root, 2)
    for s, w in zip(serial, workers):
        for x, y in zip(s, w):
            np.testing.assert_array_equal(x, y)
    # mixing happened: point counts differ from the raw scans for some samples, and labels match a replay
    raw_counts = [ds.load(i)[0].shape[0] for i in range(len(ds))]
    assert any(s[0].shape[0] != n for s, n in zip(serial, raw_counts))
    ds.set_epoch(4)
    assert any(not np.array_equal(ds[i]["xyz"].numpy(), serial[i][0]) for i in range(len(ds)))


def test_dataset_labels_follow_points(synthetic_root):
    """Replay the sample's stream by hand: the dataset's points and labels are the mixer's output."""
    from lidarseg.data.dataset import SemanticKITTI
    cfg = {"lasermix": {"prob": 1.0}, "rangeunion": {"prob": 1.0}}
    ds = SemanticKITTI(synthetic_root, "train", sequences=[0, 8], augmentation={"seed": 2, **cfg})
    ds.set_epoch(1)
    sample = ds[2]
    rng = rng_for(2, 1, 2)
    j = int(rng.integers(len(ds)))
    a, b = ds.load(2), ds.load(j)
    out = SceneMixing(cfg, ds.sensor)(a[0], a[1], rng, partner=b)
    np.testing.assert_array_equal(sample["xyz"].numpy(), out.points[:, :3])
    np.testing.assert_array_equal(sample["points_label"].numpy(), out.labels)
    check_provenance(out, a, b)
    # the label image is the label of each pixel's point
    m = sample["mask"].numpy()
    px, py = sample["px"].numpy(), sample["py"].numpy()
    on = px >= 0
    assert set(zip(py[on].tolist(), px[on].tolist())) >= set(zip(*np.nonzero(m)))
    assert np.all(sample["label"].numpy()[m] >= 0)


def test_kprnet_dataset_mixing(synthetic_root):
    from lidarseg.data.kprnet import KPRNetDataset, KPRNetGeometry
    geom = KPRNetGeometry(65, 257, 65, 513, 257)
    cfg = {"lasermix": {"prob": 1.0}, "rangeshift": {"prob": 1.0}}
    ds = KPRNetDataset(synthetic_root, "train", sequences=[0, 8], train=True, seed=4, geometry=geom, mixing=cfg)
    s1, s2 = ds[1], ds[1]
    for k in ("image", "xyz", "knn", "points_label"):
        assert torch.equal(s1[k], s2[k])
    # labels follow points: the kept points are the mixer's points at point_index
    rng = np.random.default_rng([4, 0, 1])
    j = int(rng.integers(len(ds)))
    a = (ds.source.read_points(ds.items[1]), ds.source.read_train_labels(ds.items[1], None))
    b = (ds.source.read_points(ds.items[j]), ds.source.read_train_labels(ds.items[j], None))
    out = ds.mixing(a[0], a[1], rng, partner=b)
    idx = s1["point_index"].numpy()
    np.testing.assert_array_equal(s1["points_label"].numpy(), out.labels[idx])
    np.testing.assert_allclose(s1["xyz"].numpy(), out.points[idx, :3])
    with pytest.raises(ConfigError, match=r"augmentation\.rangeshift\.prob"):
        KPRNetDataset(synthetic_root, "train", sequences=[0], mixing={"rangeshift": {"prob": 3}})


def test_kprnet_refuses_point_augmentation_keys(synthetic_root):
    """KPRNet draws its own crop and flip: range-image point augmentations in data.augment are refused when its
    training dataset is built (they used to be ignored silently); mixing keys and evaluation datasets pass."""
    from lidarseg.data.representation import get_representation
    from lidarseg.engine import builders
    from lidarseg.engine.config import load_config
    rep = get_representation("kprnet")
    kp = "data.kprnet={height: 65, width: 257, out_height: 65, out_width: 513, crop_width: 257}"
    base = [f"data.root={synthetic_root}", "model={name: kprnet}", kp, "data.sequences={train: [0], valid: [8]}"]
    cfg = load_config(None, [*base, "data.augment={rotation: {max_degrees: 180}, flip: {y: 0.5}, "
                                    "lasermix: {prob: 0.5}}"])
    lm = builders.label_map(cfg)
    with pytest.raises(ConfigError, match=r"data\.augment: \['flip', 'rotation'\] .*KPRNet"):
        builders.dataset(cfg, "train", rep, lm)
    assert len(builders.dataset(cfg, "val", rep, lm)) > 0
    ok = load_config(None, [*base, "data.augment={seed: 1, lasermix: {prob: 0.5}}"])
    assert builders.dataset(ok, "train", rep, lm).mixing is not None


def test_training_with_mixing_and_paste(training_root, tmp_path, keep_torch_threads, capsys):
    """One epoch through the engine with every mixing part and instance paste on; a bad value stops `lidarseg
    train` before any step, naming the key."""
    from lidarseg.cli import main
    from lidarseg.engine.config import load_config
    from lidarseg.engine.trainer import Trainer
    from test_engine_inference import TINY
    augment = ("data.augment={seed: 0, lasermix: {prob: 0.5}, rangemix: {prob: 0.5}, rangeunion: {prob: 0.5}, "
               "rangeshift: {prob: 0.5}, polarmix: {prob: 0.5, classes: [car, person]}, "
               "instancepaste: {prob: 1.0, classes: [car], cache_dir: "
               f"'{tmp_path / 'cache'}'}}, rotation: {{}}}}")
    cfg = load_config(None, [*TINY, f"data.root={training_root}", augment])
    result = Trainer(cfg, tmp_path / "run", log=lambda *a: None).fit()
    assert result is not None and (tmp_path / "run" / "last.pt").is_file()
    assert list((tmp_path / "cache").glob("instance-bank-*.bank"))
    bad = augment.replace("lasermix: {prob: 0.5}", "lasermix: {prob: 5}")
    from pathlib import Path
    base = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
    assert main(["train", "--config", str(base), "--data", str(training_root), "--out", str(tmp_path / "bad"),
                 *[x for o in [*TINY, bad] for x in ("--set", o)]]) == 2
    assert "augmentation.lasermix.prob: expected a probability in [0, 1], got 5" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "last.pt").exists()
