"""KPRNet input pipeline (lidarseg.data.kprnet) against transcriptions of kprnet.md sections 1.3-1.8."""
import numpy as np
import pytest
import torch

from lidarseg.data.kprnet import (KPRNetDataset, KPRNetGeometry, KPRNetTransform, collate_kprnet, knn_indices,
                                  normalise_channels, upsample_bilinear)
from lidarseg.data.projection import scan_unfolding
from lidarseg.errors import ConfigError, DataError

# train ids of configs/semantic-kitti.yaml used by the synthetic scene, and their raw ids
CAR, ROAD, BUILDING = 1, 9, 13
RAW = {CAR: 10, ROAD: 40, BUILDING: 50}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ring_scan(rings=16, per_ring=300, seed=0):
    """A HDL-64E-like scan in KITTI .bin order: ring-major, each ring counter-clockwise from just left of the front
    (u increasing from 0 to 1). Ground (road) below, a circular wall (building) and boxes (car).
    Returns points float32 [N,4] and train ids int64 [N]."""
    rng = np.random.default_rng(seed)
    wall = rng.uniform(12, 18)
    boxes = [(rng.uniform(0.02, 0.95), rng.uniform(0.02, 0.05), rng.uniform(4, 8)) for _ in range(4)]
    pts, lab = [], []
    for r, elev in enumerate(np.linspace(np.radians(2.0), np.radians(-24.0), rings)):
        u = np.sort(rng.uniform(0.001, 0.999, per_ring))
        theta = (1.0 - 2.0 * u) * np.pi                     # atan2(y, -x) = -yaw = (1 - 2u) pi
        dist = np.full(per_ring, wall / np.cos(elev))
        label = np.full(per_ring, BUILDING)
        if elev < 0:
            ground = 1.73 / np.sin(-elev)
            label = np.where(ground < dist, ROAD, label)
            dist = np.minimum(dist, ground)
        for u0, w, d in boxes:
            hit = (np.abs(u - u0) < w) & (elev > np.radians(-12)) & (d < dist)
            dist[hit], label[hit] = d, CAR
        dist = dist * (1 + rng.normal(0, 0.002, per_ring))
        x = -dist * np.cos(elev) * np.cos(theta)
        y = dist * np.cos(elev) * np.sin(theta)
        z = dist * np.sin(elev)
        refl = np.where(label == CAR, 0.7, 0.25) + rng.normal(0, 0.02, per_ring)
        pts.append(np.stack([x, y, z, refl], 1))
        lab.append(label)
    return np.concatenate(pts).astype(np.float32), np.concatenate(lab).astype(np.int64)


SMALL_GEOM = dict(height=17, width=257, out_height=65, out_width=513, crop_width=129)


def cv2_linear_resize(img, out_h, out_w):
    """Transcription of OpenCV INTER_LINEAR (float input): per axis fx = (dx + 0.5) * in/out - 0.5, sx = floor(fx),
    weight fx - sx; sx < 0 -> (0, weight 0); sx >= in - 1 -> (in - 1, weight 0)."""
    def axis(n_in, n_out):
        f = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        s = np.floor(f).astype(np.int64)
        w = f - s
        low = s < 0
        s[low], w[low] = 0, 0.0
        high = s >= n_in - 1
        s[high], w[high] = n_in - 1, 0.0
        return s, np.minimum(s + 1, n_in - 1), w
    y0, y1, wy = axis(img.shape[0], out_h)
    x0, x1, wx = axis(img.shape[1], out_w)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bot = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bot * wy[:, None]


@pytest.mark.parametrize("src, dst", [((5, 9), (19, 17)), ((65, 2049), (289, 4097)), ((4, 4), (4, 4))])
def test_upsampling_matches_opencv_inter_linear(src, dst):
    img = np.random.default_rng(0).random((2, *src))
    out = upsample_bilinear(img.astype(np.float32), *dst).numpy()
    assert out.shape == (2, *dst) and out.dtype == np.float32
    for c in range(2):
        np.testing.assert_allclose(out[c], cv2_linear_resize(img[c], *dst), atol=1e-5)


def test_normalisation_constants():
    d, r = normalise_channels(np.array([0.0, 1 / 2.5, 1.0]), np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(d, [-10.0, 0.0, 15.0])
    np.testing.assert_allclose(r, [-10.0, 0.0, 10.0])


def brute_knn(xyz, k):
    d = ((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def test_evaluation_transform_full_scan():
    pts, lab = ring_scan()
    s = KPRNetTransform(train=False)(pts, lab)
    n = len(pts)
    assert s["image"].shape == (2, 289, 4097) and s["image"].dtype == torch.float32
    assert s["num_points"] == n and s["crop_offset"] == -1 and not s["flipped"]
    unf = scan_unfolding(pts, 65, 2049)
    assert unf.num_rings == 16
    np.testing.assert_allclose(s["px"].numpy(), 2 * (unf.px / 2049 - 0.5), rtol=0, atol=1e-6)
    np.testing.assert_allclose(s["py"].numpy(), 2 * (unf.py / 65 - 0.5), rtol=0, atol=1e-6)   # top edge of row
    # image: normalise, then cv2-style resize
    ch0 = cv2_linear_resize(25 * (unf.inv_depth.astype(np.float64) - 0.4), 289, 4097)
    ch1 = cv2_linear_resize(20 * (unf.reflectance.astype(np.float64) - 0.5), 289, 4097)
    np.testing.assert_allclose(s["image"].numpy(), np.stack([ch0, ch1]), atol=1e-4)
    assert s["image"].min() >= -10 - 1e-4                  # empty pixels are -10
    np.testing.assert_array_equal(s["points_label"].numpy(), lab)
    np.testing.assert_array_equal(s["xyz"].numpy(), pts[:, :3])
    knn = s["knn"].numpy()
    assert knn.shape == (n, 7) and knn.dtype == np.int64
    ref = brute_knn(pts[:, :3].astype(np.float64), 7)
    # same neighbour sets (order may differ only between exactly equidistant points)
    assert (np.sort(knn, 1) == np.sort(ref, 1)).mean() > 0.999
    assert (knn[:, 0] == np.arange(n)).all()


class FixedRng:
    """Stand-in generator: integers() -> its upper end - 1 (or low), uniform() -> a fixed value."""

    def __init__(self, high: bool, u: float):
        self.high, self.u = high, u

    def integers(self, low, high):
        return high - 1 if self.high else low

    def uniform(self):
        return self.u


@pytest.mark.parametrize("high, u", [(False, 0.9), (True, 0.1), (True, 0.9)])
def test_training_crop_and_flip(high, u):
    pts, lab = ring_scan(seed=1)
    full = KPRNetTransform(train=False)(pts, lab)
    s = KPRNetTransform(train=True)(pts, lab, rng=FixedRng(high, u))
    off = s["crop_offset"]
    assert off == (3072 if high else 0)                      # offsets 0..3072, crop never wraps
    flipped = u < 0.5
    assert s["flipped"] is flipped
    img = full["image"][:, :, off:off + 1025]
    if flipped:
        img = torch.flip(img, dims=[2])
    assert s["image"].shape == (2, 289, 1025)
    torch.testing.assert_close(s["image"], img)
    # kept points: spec transcription px_c = (4097 px / 2049 - off) / 1025, py_c = 289 py / 65 / 289
    unf = scan_unfolding(pts, 65, 2049)
    px_c = (4097.0 * unf.px.astype(np.float64) / 2049.0 - off) / 1025.0
    py_c = 289.0 * unf.py.astype(np.float64) / 65.0 / 289.0
    keep = np.flatnonzero((px_c >= 0) & (px_c <= 1) & (py_c >= 0) & (py_c <= 1))
    np.testing.assert_array_equal(s["point_index"].numpy(), keep)
    assert 0.15 < len(keep) / len(pts) < 0.35                # about a quarter of the scan
    px_n = 2 * (px_c[keep] - 0.5) * (-1 if flipped else 1)
    np.testing.assert_allclose(s["px"].numpy(), px_n, atol=1e-6)
    np.testing.assert_allclose(s["py"].numpy(), 2 * (py_c[keep] - 0.5), atol=1e-6)
    np.testing.assert_array_equal(s["xyz"].numpy(), pts[keep, :3])            # never mirrored
    np.testing.assert_array_equal(s["points_label"].numpy(), lab[keep])
    # neighbours among the cropped points, in cropped order
    ref = brute_knn(pts[keep, :3].astype(np.float64), 7)
    assert (np.sort(s["knn"].numpy(), 1) == np.sort(ref, 1)).mean() > 0.999
    # the same absolute position as in the evaluation image
    abs_train = off + (s["px"].numpy() * (-1 if flipped else 1) + 1) / 2 * 1025
    abs_eval = (full["px"].numpy()[keep] + 1) / 2 * 4097
    np.testing.assert_allclose(abs_train, abs_eval, atol=1e-3)


def test_random_crops_are_seeded():
    pts, lab = ring_scan(seed=2)
    t = KPRNetTransform(train=True)
    a = t(pts, lab, np.random.default_rng(5))
    b = t(pts, lab, np.random.default_rng(5))
    assert a["crop_offset"] == b["crop_offset"] and a["flipped"] == b["flipped"]
    offs = {t(pts, lab, np.random.default_rng(i))["crop_offset"] for i in range(8)}
    assert len(offs) > 1 and all(0 <= o <= 3072 for o in offs)


def test_knn_with_few_points():
    xyz = np.array([[0, 0, 0], [1, 0, 0], [5, 0, 0]], np.float32)
    knn = knn_indices(xyz, 7)
    assert knn.shape == (3, 7)
    np.testing.assert_array_equal(knn[:, :3], [[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    assert (knn[:, 3:] == np.arange(3)[:, None]).all()


def test_collate_pads_without_a_cap():
    def fake(n):
        return {"image": torch.zeros(2, 5, 7), "px": torch.ones(n), "py": torch.ones(n), "xyz": torch.ones(n, 3),
                "knn": torch.ones(n, 7, dtype=torch.int64), "points_label": torch.full((n,), 3),
                "point_index": torch.arange(n), "num_points": n, "crop_offset": 0, "flipped": False,
                "sequence": "00", "scan": f"{n:06d}"}
    b = collate_kprnet([fake(38001), fake(5)])
    assert b["image"].shape == (2, 2, 5, 7)
    assert b["px"].shape == (2, 38001) and b["knn"].shape == (2, 38001, 7) and b["xyz"].shape == (2, 38001, 3)
    assert b["num_points"].tolist() == [38001, 5]
    assert b["point_mask"].sum(1).tolist() == [38001, 5]
    assert b["px"][1, 5:].eq(0).all() and b["knn"][1, 5:].eq(0).all() and b["xyz"][1, 5:].eq(0).all()
    assert b["points_label"][1, 5:].eq(0).all() and b["point_index"][1, 5:].eq(-1).all()
    assert b["scan"] == ["038001", "000005"] and b["sequence"] == ["00", "00"]
    with pytest.raises(DataError):
        collate_kprnet([fake(3), dict(fake(3), image=torch.zeros(2, 5, 8))])


def _write_kitti(root, seqs=(0, 8), scans=2, labels=True):
    for s in seqs:
        d = root / "sequences" / f"{s:02d}"
        (d / "velodyne").mkdir(parents=True)
        if labels:
            (d / "labels").mkdir()
        for i in range(scans):
            pts, lab = ring_scan(rings=8, per_ring=100, seed=10 * s + i)
            pts.tofile(d / "velodyne" / f"{i:06d}.bin")
            if labels:
                np.vectorize(RAW.get)(lab).astype(np.uint32).tofile(d / "labels" / f"{i:06d}.label")


def test_dataset_items_and_determinism(tmp_path):
    _write_kitti(tmp_path)
    ds = KPRNetDataset(tmp_path, "train", sequences=[0, 8], train=True, seed=3)
    assert len(ds) == 4
    a = ds[1]
    assert a["sequence"] == "00" and a["scan"] == "000001" and a["has_labels"]
    assert a["image"].shape == (2, 289, 1025)
    assert set(a["points_label"].unique().tolist()) <= {CAR, ROAD, BUILDING}
    b = ds[1]
    assert a["crop_offset"] == b["crop_offset"] and a["flipped"] == b["flipped"]
    offsets = {ds[1]["crop_offset"]}
    for e in range(1, 6):
        ds.set_epoch(e)
        offsets.add(ds[1]["crop_offset"])
    assert len(offsets) > 1
    val = KPRNetDataset(tmp_path / "sequences", "valid")          # the sequences dir works too; 08 from the yaml
    v = val[0]
    assert v["sequence"] == "08" and v["image"].shape == (2, 289, 4097) and v["num_points"] == 800
    batch = collate_kprnet([val[0], val[1]])
    assert batch["point_mask"].all() and batch["num_points"].tolist() == [800, 800]


def test_dataset_without_labels_and_errors(tmp_path):
    _write_kitti(tmp_path, seqs=(11,), scans=1, labels=False)
    ds = KPRNetDataset(tmp_path, "test", sequences=[11])
    s = ds[0]
    assert not s["has_labels"] and s["points_label"].eq(0).all() and s["crop_offset"] == -1
    with pytest.raises(DataError, match="not found"):
        KPRNetDataset(tmp_path, "valid")
    with pytest.raises(ConfigError):
        KPRNetGeometry.from_config({"height": 65, "widht": 3})
    with pytest.raises(ConfigError):
        KPRNetGeometry(crop_width=5000)


def test_small_geometry_is_consistent():
    pts, lab = ring_scan(seed=4)
    t = KPRNetTransform(train=True, geometry=KPRNetGeometry(**SMALL_GEOM))
    s = t(pts, lab, np.random.default_rng(0))
    assert s["image"].shape == (2, 65, 129)
    assert s["px"].abs().max() <= 1 and s["py"].abs().max() <= 1 and s["num_points"] > 0


@pytest.mark.parametrize("train", [True, False])
def test_benchmark_inputs_have_the_batch_shapes(tmp_path, train):
    """The representation's random benchmark inputs have the shapes and dtypes of a real collated batch."""
    from lidarseg.data.representation import get_representation
    _write_kitti(tmp_path)
    ds = KPRNetDataset(tmp_path, "train" if train else "valid", sequences=[0, 8] if train else None, train=train,
                       seed=3)
    batch = collate_kprnet([ds[0], ds[1]])
    rep = get_representation("kprnet")
    inputs, y, label = rep.example_inputs(2, (64, 512), 700, torch.device("cpu"), train)
    for name, x in zip(rep.INPUTS, inputs):
        assert x.dtype == batch[name].dtype and x.shape[0] == 2, name
        assert x.shape[2:] == batch[name].shape[2:], name           # image H x W; xyz 3; knn k
    assert inputs[1].shape == (2, 700) and y.shape == (2, 700) and y.dtype == batch["points_label"].dtype
    assert label == f"289x{1025 if train else 4097}/700pt"
