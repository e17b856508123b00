"""Instance paste (lidarseg.data.instances): the bank against a plain grouping of the training labels, its cache,
occlusion after pasting, labels of pasted points, start-up errors."""
import numpy as np
import pytest

from lidarseg.data.augment import rng_for
from lidarseg.data.dataset import SemanticKITTI
from lidarseg.data.instances import InstanceBank, InstancePaste
from lidarseg.data.mixing import pixel_of
from lidarseg.errors import ConfigError


@pytest.fixture(scope="module")
def data(synthetic_root):
    ds = SemanticKITTI(synthetic_root, "train", sequences=[0])
    ground = [ds.label_map.names.index(n) for n in ("road", "parking", "sidewalk", "other-ground", "terrain")]
    return ds, ground


def test_bank_matches_plain_grouping(data, tmp_path):
    ds, ground = data
    every = list(range(1, ds.label_map.num_classes))
    bank = InstanceBank.build(ds.source, ds.items, ds.label_map, 20, ground, classes=every)
    want = []
    for item in ds.items:
        pts = ds.source.read_points(item)
        raw = np.fromfile(item.labels, np.uint32).astype(np.int64)
        train = ds.label_map.to_train(raw & 0xFFFF)
        groups = {}
        for i in range(len(raw)):
            if raw[i] >> 16:
                groups.setdefault((int(train[i]), int(raw[i] >> 16)), []).append(i)
        for (c, _inst), idx in sorted(groups.items()):
            if len(idx) >= 20 and c != 0:
                want.append((c, pts[idx]))
    assert len(bank) == len(want) > 5
    got = sorted((int(bank.cls[k]), bank.points[bank.instance(k)].tobytes()) for k in range(len(bank)))
    assert got == sorted((c, p.tobytes()) for c, p in want)
    # cached: the same bank read back, from the file
    a = InstanceBank.cached(ds.source, ds.items, ds.label_map, 20, ground, every, cache_dir=tmp_path)
    files = list(tmp_path.glob("instance-bank-*.bank"))
    assert len(files) == 1
    b = InstanceBank.cached(ds.source, ds.items, ds.label_map, 20, ground, every, cache_dir=tmp_path)
    for key in ("points", "ring", "offsets", "cls", "ground", "class_points"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        np.testing.assert_array_equal(getattr(a, key), getattr(bank, key))
    c = InstanceBank.cached(ds.source, ds.items, ds.label_map, 50, ground, every, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("instance-bank-*.bank"))) == 2 and len(c) < len(a)  # another key
    # by default only the classes under 0.5 % of the labelled points are kept
    rare = InstanceBank.build(ds.source, ds.items, ds.label_map, 20, ground)
    frac = bank.class_points / bank.class_points[1:].sum()
    want_rare = sorted((c, p.tobytes()) for c, p in want if frac[c] < 0.005)
    assert sorted((int(rare.cls[k]), rare.points[rare.instance(k)].tobytes()) for k in range(len(rare))) == want_rare
    assert 0 < len(rare) < len(bank)
    np.testing.assert_array_equal(rare.class_points, bank.class_points)


def test_paste_occlusion_and_labels(data, tmp_path):
    ds, _ = data
    paste = InstancePaste({"prob": 1.0, "classes": ["car", "traffic-sign"], "max_instances": 3,
                           "cache_dir": str(tmp_path)}, ds.label_map, ds.sensor, source=ds.source, items=ds.items)
    g = ds.sensor
    pasted_total = removed_total = hidden_total = 0
    for seed in range(6):
        points, labels = ds.load(seed % len(ds))
        placed = paste.place(points, labels, rng_for(seed, 0, 0))
        kept, bank_index, pasted, pasted_labels = paste(points, labels, rng_for(seed, 0, 0))
        pasted_total += len(pasted)
        assert len(placed) >= 1
        np.testing.assert_array_equal(pasted_labels, paste.bank.cls[
            np.searchsorted(paste.bank.offsets, bank_index, side="right") - 1])
        assert set(pasted_labels.tolist()) <= {ds.label_map.names.index("car"),
                                               ds.label_map.names.index("traffic-sign")}
        # pasted points are placed points (rotated, shifted bank points)
        placed_rows = {r.tobytes() for _, q in placed for r in q}
        assert len(pasted) <= sum(len(q) for _, q in placed) and all(r.tobytes() in placed_rows for r in pasted)
        orig = points[kept]
        # no original point inside a pasted object's box (radial, tangential, z extent)
        for _k, q in placed:
            c = q[:, :2].astype(np.float64).mean(0)
            u = c / np.linalg.norm(c)
            v = np.array([-u[1], u[0]])
            fq = np.stack([q[:, :2] @ u, q[:, :2] @ v, q[:, 2]], 1)
            fo = np.stack([orig[:, :2] @ u, orig[:, :2] @ v, orig[:, 2]], 1)
            assert not np.any(np.all((fo >= fq.min(0)) & (fo <= fq.max(0)), axis=1))
        # per pixel: no pasted point behind a nearer original, no original behind a nearer pasted point
        ro, co = pixel_of(orig, g)
        rp, cp = pixel_of(pasted, g)
        dist_o, dist_p = np.linalg.norm(orig[:, :3], axis=1), np.linalg.norm(pasted[:, :3], axis=1)
        near_o, near_p = {}, {}
        for key, d in zip(zip(ro.tolist(), co.tolist()), dist_o.tolist()):
            near_o[key] = min(near_o.get(key, np.inf), d)
        for key, d in zip(zip(rp.tolist(), cp.tolist()), dist_p.tolist()):
            near_p[key] = min(near_p.get(key, np.inf), d)
        for key, d in zip(zip(rp.tolist(), cp.tolist()), dist_p.tolist()):
            assert d <= near_o.get(key, np.inf)
        for key, d in zip(zip(ro.tolist(), co.tolist()), dist_o.tolist()):
            assert d <= near_p.get(key, np.inf)
        removed_total += len(points) - len(kept)
        hidden_total += sum(len(q) for _, q in placed) - len(pasted)
    assert pasted_total > 100 and removed_total > 0 and hidden_total > 0  # occlusion removed points both ways


def test_paste_places_on_local_ground(data, tmp_path):
    ds, ground = data
    paste = InstancePaste({"prob": 1.0, "classes": ["car"], "cache_dir": str(tmp_path)}, ds.label_map,
                          ds.sensor, source=ds.source, items=ds.items)
    points, labels = ds.load(0)
    gmask = np.isin(labels, ground)
    for seed in range(5):
        for k, q in paste.place(points, labels, rng_for(seed, 1, 0)):
            c = q[:, :2].astype(np.float64).mean(0)
            near = ((points[gmask, :2] - c) ** 2).sum(1) < 4.0
            shift = float(q[0, 2]) - float(paste.bank.points[paste.bank.instance(k)][0, 2])
            assert shift == pytest.approx(np.median(points[gmask, 2][near]) - paste.bank.ground[k], abs=1e-4)
            # same range and elevation as in the bank up to the vertical shift: a rotation about the sensor's z
            p = paste.bank.points[paste.bank.instance(k)]
            np.testing.assert_allclose(np.hypot(q[:, 0], q[:, 1]), np.hypot(p[:, 0], p[:, 1]), rtol=1e-5)


def test_dataset_sample_with_paste(synthetic_root, tmp_path):
    cfg = {"seed": 1, "instancepaste": {"prob": 1.0, "cache_dir": str(tmp_path)}}
    ds = SemanticKITTI(synthetic_root, "train", sequences=[0], augmentation=cfg)
    paste = ds.mixing.paste
    assert paste.classes and all(paste.bank.class_points[k] / paste.bank.class_points[1:].sum() < 0.005
                                 for k in paste.classes)
    raw_counts = np.zeros(20, np.int64)
    mixed_counts = np.zeros(20, np.int64)
    for i in range(len(ds)):
        raw_counts += np.bincount(ds.load(i)[1], minlength=20)
        mixed_counts += np.bincount(ds[i]["points_label"].numpy(), minlength=20)
    assert mixed_counts[paste.classes].sum() > raw_counts[paste.classes].sum()
    a, b = ds[0], ds[0]
    np.testing.assert_array_equal(a["xyz"].numpy(), b["xyz"].numpy())


@pytest.mark.parametrize("cfg, match", [
    ({"classes": ["bicycle"]}, r"instancepaste\.classes: the instance bank .* no instance of \['bicycle'\]"),
    ({"classes": ["bicycel"]}, r"instancepaste\.classes: unknown class names \['bicycel'\]"),
    ({"prob": 2}, r"instancepaste\.prob"),
    ({"max_instances": 0}, r"instancepaste\.max_instances"),
    ({"rare_fraction": 1e-9}, r"instancepaste: the instance bank holds no instance of the classes under"),
    ({"colour": 1}, r"instancepaste: unknown keys"),
])
def test_start_up_errors(synthetic_root, tmp_path, cfg, match):
    with pytest.raises(ConfigError, match=match):
        SemanticKITTI(synthetic_root, "train", sequences=[0],
                      augmentation={"seed": 0, "instancepaste": {"cache_dir": str(tmp_path), **cfg}})
