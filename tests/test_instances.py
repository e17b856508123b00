"""Instance paste (lidarseg.data.instances): the bank against a plain grouping of the training labels, its cache,
occlusion after pasting, labels of pasted points (also as a property test over random scenes and banks), start-up
errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

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


def _random_world(seed, n_ground, n_other, n_inst):
    rs = np.random.default_rng(seed)
    r = rs.uniform(3, 40, n_ground)
    a = rs.uniform(-np.pi, np.pi, n_ground)
    ground = np.stack([r * np.cos(a), r * np.sin(a), rs.normal(-1.7, 0.05, n_ground), rs.random(n_ground)], 1)
    other = np.concatenate([rs.uniform(-40, 40, (n_other, 2)), rs.uniform(-1.7, 3, (n_other, 1)),
                            rs.random((n_other, 1))], 1)
    points = np.concatenate([ground, other]).astype(np.float32)
    labels = np.concatenate([np.full(n_ground, 9),  # road; the others: building .. traffic-sign, no ground
                             rs.choice([13, 14, 15, 16, 18, 19], n_other)]).astype(np.int64)
    sizes = rs.integers(5, 60, n_inst)
    inst = []
    for size in sizes:
        c = rs.uniform(5, 30) * np.array([np.cos(t := rs.uniform(-np.pi, np.pi)), np.sin(t)])
        p = np.concatenate([c + rs.normal(0, 0.5, (size, 2)), rs.uniform(-1.7, 0.3, (size, 1)),
                            rs.random((size, 1))], 1)
        inst.append(p.astype(np.float32))
    bank = InstanceBank(np.concatenate(inst), np.zeros(sizes.sum(), np.int64), np.r_[0, np.cumsum(sizes)],
                        rs.choice([6, 8], n_inst), np.full(n_inst, -1.7), np.ones(20, np.int64))
    return points, labels, bank


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n_ground=st.integers(0, 3000), n_other=st.integers(0, 2000),
       n_inst=st.integers(1, 6))
def test_paste_property_labels_and_occlusion(seed, n_ground, n_other, n_inst):
    from lidarseg.data.labels import LabelMap
    from lidarseg.data.projection import SensorGeometry
    points, labels, bank = _random_world(seed, n_ground, n_other, n_inst)
    lm = LabelMap.from_yaml()
    g = SensorGeometry(32, 256, 3.0, -25.0)
    classes = sorted({lm.names[int(c)] for c in bank.cls})
    paste = InstancePaste({"prob": 1.0, "classes": classes, "max_instances": 3}, lm, g, bank=bank)
    kept, bank_index, pasted, pasted_labels = paste(points, labels, rng_for(seed, 0, 0))
    # originals keep their labels (the caller takes labels[kept]); pasted points carry their instance's class
    assert np.all(np.diff(kept) > 0) and (kept.size == 0 or kept[-1] < len(points))
    owner = np.searchsorted(bank.offsets, bank_index, side="right") - 1
    np.testing.assert_array_equal(pasted_labels, bank.cls[owner])
    # a pasted point is its bank point turned about z (same horizontal range and remission)
    src = bank.points[bank_index]
    np.testing.assert_allclose(np.hypot(pasted[:, 0], pasted[:, 1]), np.hypot(src[:, 0], src[:, 1]), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_array_equal(pasted[:, 3], src[:, 3])
    if n_ground == 0:
        assert len(pasted) == 0  # no ground anywhere: nothing can stand on it
    # occlusion: per pixel, every remaining point of one side is nearer than every remaining point of the other
    orig = points[kept]
    ro, co = pixel_of(orig, g)
    rp, cp = pixel_of(pasted, g)
    do, dp = np.linalg.norm(orig[:, :3], axis=1), np.linalg.norm(pasted[:, :3], axis=1)
    key_o, key_p = ro * g.width + co, rp * g.width + cp
    for pix in set(key_o.tolist()) & set(key_p.tolist()):
        assert do[key_o == pix].max() <= dp[key_p == pix].min() or dp[key_p == pix].max() <= do[key_o == pix].min()


def test_stats_instances_command(synthetic_root, tmp_path, capsys):
    from lidarseg.cli import main
    args = ["stats", "--data", str(synthetic_root), "--sequences", "0", "--instances", "--cache-dir", str(tmp_path)]
    assert main([*args, "--instance-classes", "car", "person"]) == 0
    out = capsys.readouterr().out
    ds = SemanticKITTI(synthetic_root, "train", sequences=[0])
    ground = [ds.label_map.names.index(n) for n in ("road", "parking", "sidewalk", "other-ground", "terrain")]
    car, person = ds.label_map.names.index("car"), ds.label_map.names.index("person")
    bank = InstanceBank.build(ds.source, ds.items, ds.label_map, 20, ground, classes=[car, person])
    assert f"{len(bank)} instances of >= 20 points" in out
    rows = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:]}
    assert rows == {"car": bank.count(car), "person": bank.count(person)} and bank.count(car) > 0
    assert len(list(tmp_path.glob("instance-bank-*.bank"))) == 1  # cached as training would
    assert main([*args, "--instance-classes", "bicycle"]) == 2
    assert "no instance of ['bicycle']" in capsys.readouterr().err
