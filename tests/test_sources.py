"""Scan sources (`lidarseg.data.sources`): the folder readers (.bin, .pcd ascii/binary, .npy, .npz) against the
points written, one sequence-name helper, the nuScenes reader against a plain reading of its JSON tables and
files, SemanticPOSS' layout and scale, the bad inputs of each, and the representation registry."""
import json

import numpy as np
import pytest

from lidarseg.data.io import read_points_file, write_pcd, write_scan
from lidarseg.data.sources import build_source, source_class, source_names
from lidarseg.data.sources.kitti import kitti_sequence_name
from lidarseg.errors import ConfigError, DataError


def points(n=50, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 10, (n, 4)).astype(np.float32)
    p[:, 3] = rng.random(n).astype(np.float32)
    return p


def test_registry_names_and_unknown():
    assert {"semantic-kitti", "semantic-poss", "nuscenes", "folder"} <= set(source_names())
    with pytest.raises(ConfigError, match=r"unknown dataset format 'kitty'.*semantic-kitti"):
        source_class("kitty")


def test_one_sequence_name_helper():
    from lidarseg.evaluation import sequence_dir
    for given in (8, "8", "08"):
        assert kitti_sequence_name(given) == "08" == sequence_dir(given)
    assert kitti_sequence_name("scene-0003") == "scene-0003"
    with pytest.raises(ConfigError):
        kitti_sequence_name(True)


@pytest.mark.parametrize("fmt", ["bin", "pcd-binary", "pcd-ascii", "npy", "npz"])
def test_folder_readers_return_the_points_written(tmp_path, fmt):
    p = points()
    path = tmp_path / ("scan." + fmt.split("-")[0])
    if fmt == "bin":
        write_scan(path, p)
    elif fmt.startswith("pcd"):
        write_pcd(path, p, binary=fmt == "pcd-binary")
    elif fmt == "npy":
        np.save(path, p.astype(np.float64))
    else:
        np.savez(path, points=p)
    got = read_points_file(path)
    assert got.dtype == np.float32 and got.shape == (50, 4)
    np.testing.assert_array_equal(got, p)


def test_pcd_with_other_fields_and_without_intensity(tmp_path):
    p = points(7, seed=1)
    head = ("VERSION 0.7\nFIELDS x y z rgb intensity\nSIZE 4 4 4 4 2\nTYPE F F F U U\nCOUNT 1 1 1 1 1\n"
            "WIDTH 7\nHEIGHT 1\nPOINTS 7\nDATA binary\n")
    rec = np.zeros(7, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("intensity", "<u2")])
    rec["x"], rec["y"], rec["z"] = p[:, 0], p[:, 1], p[:, 2]
    rec["intensity"] = np.arange(7) * 30
    (tmp_path / "a.pcd").write_bytes(head.encode() + rec.tobytes())
    got = read_points_file(tmp_path / "a.pcd")
    np.testing.assert_array_equal(got[:, :3], p[:, :3])
    np.testing.assert_array_equal(got[:, 3], np.arange(7) * 30)
    (tmp_path / "b.pcd").write_text("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS 2\nDATA ascii\n"
                                    "1 2 3\n4 5 6\n")
    np.testing.assert_array_equal(read_points_file(tmp_path / "b.pcd"), [[1, 2, 3, 0], [4, 5, 6, 0]])


@pytest.mark.parametrize("case,match", [
    ("compressed", r"c\.pcd: DATA binary_compressed is not supported"),
    ("fields", r"c\.pcd: fields \['x', 'y', 'intensity'\] lack \['z'\]"),
    ("short", r"c\.pcd: .* data bytes, expected 160 for 10 points"),
    ("npy", r"c\.npy: expected a numeric array \[N,>=3\]"),
    ("suffix", r"c\.ply: unsupported format '\.ply'"),
])
def test_bad_scan_files(tmp_path, case, match):
    if case == "compressed":
        path = tmp_path / "c.pcd"
        path.write_bytes(b"FIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nPOINTS 1\n"
                         b"DATA binary_compressed\n\0\0\0\0")
    elif case == "fields":
        path = tmp_path / "c.pcd"
        path.write_bytes(b"FIELDS x y intensity\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS 1\nDATA ascii\n1 2 3\n")
    elif case == "short":
        path = tmp_path / "c.pcd"
        path.write_bytes(b"FIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nPOINTS 10\n"
                         b"DATA binary\n" + b"\0" * 16)
    elif case == "npy":
        path = tmp_path / "c.npy"
        np.save(path, np.zeros((4, 2)))
    else:
        path = tmp_path / "c.ply"
        path.write_bytes(b"ply")
    with pytest.raises(DataError, match=match):
        read_points_file(path)


def test_folder_source_tree_mixed_and_empty(tmp_path):
    write_scan(tmp_path / "scans" / "a.bin", points(10))
    write_scan(tmp_path / "scans" / "drive2" / "b.bin", points(12, 1))
    src = build_source("folder", tmp_path / "scans")
    items = src.list_scans(None, False)
    assert [(i.sequence, i.scan) for i in items] == [(".", "a"), ("drive2", "b")]
    assert src.prediction_path(tmp_path / "out", items[1]) == tmp_path / "out" / "drive2" / "b.label"
    np.save(tmp_path / "scans" / "c.npy", points(5))
    with pytest.raises(DataError, match=r"mixed scan formats \(\.bin: .*a\.bin, \.npy: .*c\.npy\)"):
        src.list_scans(None, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no scans \(expected files ending in \.bin, \.pcd, \.npy, \.npz\)"):
        build_source("folder", tmp_path / "empty").list_scans(None, False)


# ------------------------------------------------------------------------------------------------ nuScenes
@pytest.fixture(scope="module")
def nuscenes_root(tmp_path_factory):
    from lidarseg.data.sources.nuscenes import write_synthetic
    root = tmp_path_factory.mktemp("nuscenes")
    write_synthetic(root, scans=2, azimuth_steps=256, log=None)
    return root


def plain_nuscenes(root, version="v1.0-trainval"):
    """The scans of a nuScenes root read straight from its tables: {scene: [(sd token, points [N,5], labels)]}."""
    tab = {t: json.loads((root / version / f"{t}.json").read_text()) for t in ("scene", "sample", "sample_data",
                                                                              "lidarseg")}
    out = {}
    for scene in tab["scene"]:
        token, rows = scene["first_sample_token"], []
        while token:
            sample = next(s for s in tab["sample"] if s["token"] == token)
            sd = next(d for d in tab["sample_data"] if d["sample_token"] == token and d["is_key_frame"]
                      and "LIDAR_TOP" in d["filename"])
            seg = next(r for r in tab["lidarseg"] if r["sample_data_token"] == sd["token"])
            pts = np.fromfile(root / sd["filename"], np.float32).reshape(-1, 5)
            rows.append((sd["token"], pts, np.fromfile(root / seg["filename"], np.uint8)))
            token = sample["next"]
        out[scene["name"]] = rows
    return out


def test_nuscenes_reader_matches_the_tables(nuscenes_root):
    src = build_source("nuscenes", nuscenes_root)
    assert src.version == "v1.0-trainval"
    assert src.split_sequences("train") == ["scene-0001"] and src.split_sequences("valid") == ["scene-0003"]
    plain = plain_nuscenes(nuscenes_root)
    for split, scene in (("train", "scene-0001"), ("valid", "scene-0003")):
        items = src.items(split)
        assert [i.token for i in items] == [t for t, _, _ in plain[scene]]
        for item, (token, pts, lab) in zip(items, plain[scene]):
            got = src.read_points(item)
            np.testing.assert_array_equal(got, pts[:, :4])
            np.testing.assert_array_equal(src.read_ring(item), pts[:, 4].astype(np.int64))
            np.testing.assert_array_equal(src.read_raw_labels(item, len(got)), lab)
            assert 0 <= pts[:, 3].min() and pts[:, 3].max() <= 255
    # the official 16-class mapping: car 17 -> 4, adult 2 -> 7, ambulance 19 -> 0, driveable surface 24 -> 11
    np.testing.assert_array_equal(src.label_map.to_train(np.array([17, 2, 19, 24, 31, 30])), [4, 7, 0, 11, 0, 16])
    assert src.label_map.names[1:4] == ["barrier", "bicycle", "bus"]


def test_nuscenes_official_val_split():
    from lidarseg.data.labels import LabelMap
    from lidarseg import CONFIG_DIR
    lm = LabelMap.from_yaml(CONFIG_DIR / "labels" / "nuscenes.yaml")
    val = lm.split["valid"]
    assert len(val) == 150 == len(set(val)) and val[:3] == ["scene-0003", "scene-0012", "scene-0013"]
    assert lm.split["mini_val"] == ["scene-0103", "scene-0916"] and len(lm.split["mini_train"]) == 8


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case,match", [
    ("table", r"nuScenes table missing: .*v1\.0-trainval/sample\.json"),
    ("count", r"label file .*_lidarseg\.bin has 3 labels but its scan .*\.pcd\.bin has \d+ points"),
    ("category", r"category\.json: category 'vehicle\.spaceship' has index 31, which the label config .* names "
                 r"'vehicle\.ego'"),
    ("record", r"sample_data .* \(scene-0003\): no record in .*lidarseg\.json"),
    ("scan", r"\.pcd\.bin: size 7 bytes is not a positive multiple of 20"),
    ("unknown", r"raw label ids \[40\] \(1 points\) in .*_lidarseg\.bin are not in the learning_map of "
                r".*nuscenes\.yaml"),
])
def test_nuscenes_bad_input(nuscenes_root, tmp_path, case, match):
    root = _copy(nuscenes_root, tmp_path / "nu")
    v = root / "v1.0-trainval"
    src = build_source("nuscenes", root)
    item = src.items("valid")[0]
    if case == "table":
        (v / "sample.json").unlink()
    elif case == "count":
        item.labels.write_bytes(b"\1\2\3")
    elif case == "category":
        cats = json.loads((v / "category.json").read_text())
        cats[-1]["name"] = "vehicle.spaceship"
        (v / "category.json").write_text(json.dumps(cats))
    elif case == "record":
        recs = json.loads((v / "lidarseg.json").read_text())
        (v / "lidarseg.json").write_text(json.dumps([r for r in recs if r["sample_data_token"] != item.token]))
    elif case == "unknown":
        labels = np.fromfile(item.labels, np.uint8)
        labels[0] = 40          # no category has index 40
        item.labels.write_bytes(labels.tobytes())
    else:
        item.points.write_bytes(b"1234567")
    src = build_source("nuscenes", root)
    with pytest.raises(DataError, match=match):
        for it in src.items("valid"):
            src.read_train_labels(it, len(src.read_points(it)))


def test_semantic_poss_layout_and_scale(tmp_path):
    from lidarseg.data.sources.kitti import SemanticPOSSSource
    SemanticPOSSSource.write_synthetic(tmp_path, sequences=[2], scans=1, azimuth_steps=200, log=None)
    src = build_source("semantic-poss", tmp_path)
    assert src.split_sequences("train") == ["00", "01", "03", "04", "05"] and src.split_sequences("valid") == ["02"]
    item, = src.items("valid")
    pts = src.read_points(item)
    assert pts[:, 3].max() > 1 and pts[:, 3].max() <= 255 and np.all(pts[:, 3] == np.round(pts[:, 3]))
    train = src.read_train_labels(item, len(pts))
    assert src.label_map.num_classes == 14 and set(np.unique(train)) <= set(range(14)) and (train > 0).mean() > 0.5
    # SemanticPOSS' map (CENet's config): 4 and 5 (person, people) -> 1, traffic signs 10-12 -> 6, ground 22 -> 13
    np.testing.assert_array_equal(src.label_map.to_train(np.array([4, 5, 10, 11, 12, 22, 18])), [1, 1, 6, 6, 6, 13, 0])


def test_rows_projection_equals_spherical_with_its_rows(make_synthetic_scan):
    from lidarseg.data.projection import rows_projection, spherical_projection
    pts, _ = make_synthetic_scan(sequence=8, index=0, azimuth_steps=512)
    ref = spherical_projection(pts, 64, 512, 3.0, -25.0)
    got = rows_projection(pts, np.where(ref.py >= 0, ref.py, 0), 64, 512, keep=ref.px >= 0)
    for name in ("range", "xyz", "remission", "idx", "px", "py", "unproj_range"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    rows = np.full(len(pts), 70)
    assert (rows_projection(pts, rows, 64, 512).px == -1).all()   # rows outside the image: not projected


def test_nuscenes_rows_by_ring(nuscenes_root):
    from lidarseg.data.dataset import SemanticKITTI
    src = build_source("nuscenes", nuscenes_root)
    ds = SemanticKITTI(nuscenes_root, "valid", source=src, rows="ring", sensor={"height": 32, "width": 256})
    sample = ds[0]
    ring = src.read_ring(ds.items[0])
    py, px = sample["py"].numpy(), sample["px"].numpy()
    ok = px >= 0
    np.testing.assert_array_equal(py[ok], 31 - ring[ok])
    assert ok.mean() > 0.99 and sample["mask"].numpy().any(axis=1).all()     # every row holds points
    with pytest.raises(ConfigError, match="data.sensor.height must be 32, got 64"):
        SemanticKITTI(nuscenes_root, "valid", source=src, rows="ring", sensor="hdl64")
    poss = build_source("semantic-poss", nuscenes_root.parent)
    with pytest.raises(ConfigError, match="the semantic-poss format has none"):
        poss.read_rows(None, 40)


def test_synthetic_writers_refuse_an_existing_dataset(tmp_path, capsys):
    from lidarseg.cli import main
    out = tmp_path / "nu"
    assert main(["synth", "--format", "nuscenes", "--out", str(out), "--scans", "1", "--azimuth-steps", "64"]) == 0
    assert main(["synth", "--format", "nuscenes", "--out", str(out), "--scans", "2", "--azimuth-steps", "64"]) == 2
    assert "already holds a nuScenes dataset" in capsys.readouterr().err
    assert len(build_source("nuscenes", out).items("valid")) == 1   # the first generation, untouched
    poss = tmp_path / "poss"
    (poss / "sequences").mkdir(parents=True)
    assert main(["synth", "--format", "semantic-poss", "--out", str(poss), "--scans", "1"]) == 2
    assert "already holds sequences/" in capsys.readouterr().err
    assert main(["synth", "--format", "semantic-poss", "--out", str(poss), "--faults", "nan=1"]) == 2
    assert "--faults: only for --format semantic-kitti" in capsys.readouterr().err
