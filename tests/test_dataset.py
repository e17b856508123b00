"""SemanticKITTI dataset and collate on a tiny dataset written in tmp_path."""
import numpy as np
import pytest
import torch

from lidarseg.data import LabelMap, SemanticKITTI, collate, write_label, write_scan
from lidarseg.data.dataset import RANGENET_MEAN, RANGENET_STD
from lidarseg.errors import ConfigError, DataError

RAW_IDS = np.array([0, 10, 40, 48, 50, 70, 72, 252, 1], np.uint32)


def make_scan(n, seed):
    rs = np.random.default_rng(seed)
    az = rs.uniform(-np.pi, np.pi, n)
    el = np.deg2rad(rs.uniform(-24, 2, n))
    r = rs.uniform(1, 50, n)
    xyz = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], 1)
    return np.concatenate([xyz, rs.random((n, 1))], 1).astype(np.float32)


def write_dataset(root, layout, labels=True):
    """layout: {sequence: [point counts]} -> raw labels written, returned as {(seq, stem): (points, raw)}."""
    out = {}
    for seq, counts in layout.items():
        for k, n in enumerate(counts):
            stem = f"{k:06d}"
            pts = make_scan(n, hash((seq, k)) % 1000)
            raw = RAW_IDS[np.random.default_rng(k).integers(0, len(RAW_IDS), n)] | (np.uint32(7) << np.uint32(16))
            write_scan(root / "sequences" / seq / "velodyne" / f"{stem}.bin", pts)
            if labels:
                write_label(root / "sequences" / seq / "labels" / f"{stem}.label", raw)
            out[(seq, stem)] = (pts, raw)
    return out


SMALL = dict(height=16, width=128, fov_up=3.0, fov_down=-25.0)


@pytest.fixture
def data(tmp_path):
    truth = write_dataset(tmp_path, {"00": [300, 500], "01": [400]})
    write_dataset(tmp_path, {"11": [200]}, labels=False)
    return tmp_path, truth


def rangenet_input(points, mask, idx, H, W):
    """RangeNet++ parser: cat(range, xyz, remission), (x - mean)/std, * mask (rangenet.md §2), numpy float32."""
    from test_projection import rangenet_reference  # tests/ is on sys.path (pytest rootdir-less import mode)
    ref = rangenet_reference(points, H, W, 3.0, -25.0)
    proj = np.concatenate([ref["range"][None], ref["xyz"].transpose(2, 0, 1), ref["remission"][None]])
    mean = np.array(RANGENET_MEAN, np.float32)[:, None, None]
    std = np.array(RANGENET_STD, np.float32)[:, None, None]
    return (proj - mean) / std * mask.astype(np.float32), ref


def test_sample_contract(data):
    root, truth = data
    lm = LabelMap.from_yaml()
    ds = SemanticKITTI(root, "train", sequences=[0, 1], sensor=SMALL)
    assert len(ds) == 3
    s = ds[1]
    pts, raw = truth[("00", "000001")]
    n = len(pts)
    assert s["sequence"] == "00" and s["scan"] == "000001" and s["num_points"] == n and s["has_labels"]
    assert s["input"].shape == (5, 16, 128) and s["input"].dtype == torch.float32
    assert s["mask"].dtype == torch.bool and s["label"].dtype == torch.int64
    for key, dtype in [("px", torch.int64), ("py", torch.int64), ("unproj_range", torch.float32),
                       ("points_label", torch.int64), ("xyz", torch.float32), ("remission", torch.float32)]:
        assert s[key].dtype == dtype and s[key].shape[0] == n
    train = lm.to_train(raw)
    np.testing.assert_array_equal(s["points_label"].numpy(), train)
    np.testing.assert_array_equal(s["xyz"].numpy(), pts[:, :3])
    mask = s["mask"].numpy()
    want, ref = rangenet_input(pts, mask, None, 16, 128)
    # same pixels as RangeNet++ (no border points in this small cloud) and the same normalised values
    np.testing.assert_array_equal(s["px"].numpy(), ref["px"])
    np.testing.assert_array_equal(mask, ref["idx"] >= 0)
    np.testing.assert_allclose(s["input"].numpy(), want, rtol=0, atol=1e-6)
    assert np.all(s["input"].numpy()[:, ~mask] == 0)
    idx = ref["idx"]
    np.testing.assert_array_equal(s["label"].numpy(), np.where(mask, train[np.maximum(idx, 0)], 0))
    np.testing.assert_array_equal(s["proj_range"].numpy(), ref["range"])


def test_collate_pads(data):
    root, _ = data
    ds = SemanticKITTI(root, "train", sequences=["00", "01"], sensor=SMALL)
    samples = [ds[i] for i in range(3)]
    b = collate(samples)
    assert b["input"].shape == (3, 5, 16, 128) and b["label"].shape == (3, 16, 128)
    assert b["num_points"].tolist() == [300, 500, 400]
    assert b["px"].shape == (3, 500) and b["xyz"].shape == (3, 500, 3)
    assert b["point_mask"].sum(1).tolist() == [300, 500, 400]
    assert torch.all(b["px"][0, 300:] == -1) and torch.all(b["unproj_range"][0, 300:] == -1)
    assert torch.all(b["points_label"][2, 400:] == 0) and torch.all(b["xyz"][2, 400:] == 0)
    assert torch.equal(b["px"][2, :400], samples[2]["px"])
    assert b["sequence"] == ["00", "00", "01"] and b["scan"] == ["000000", "000001", "000000"]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate, num_workers=0)
    assert [x["num_points"].tolist() for x in loader] == [[300, 500], [400]]


def test_test_split_without_labels(data):
    root, _ = data
    ds = SemanticKITTI(root, "test", sequences=[11], sensor=SMALL)
    s = ds[0]
    assert not s["has_labels"] and s["num_points"] == 200
    assert torch.all(s["label"] == 0) and torch.all(s["points_label"] == 0)


def test_default_split_from_config_and_missing_sequence(data):
    root, _ = data
    with pytest.raises(DataError, match=r"sequences[/\\]02"):
        SemanticKITTI(root, "train", sensor=SMALL)  # the config's train split lists 00..10
    with pytest.raises(ConfigError, match="valid"):
        SemanticKITTI(root, "nope", sensor=SMALL)
    with pytest.raises(DataError, match="sequences"):
        SemanticKITTI(root / "missing", "train", sequences=[0])


def test_missing_and_extra_label_files(data):
    root, _ = data
    lab = root / "sequences" / "00" / "labels"
    (lab / "000001.label").rename(lab / "000009.label")
    with pytest.raises(DataError, match="000001.label"):
        SemanticKITTI(root, "train", sequences=[0], sensor=SMALL)
    write_scan(root / "sequences" / "00" / "velodyne" / "000001.bin", make_scan(10, 1))
    write_label(lab / "000001.label", np.zeros(10, np.uint32))
    with pytest.raises(DataError, match="000009.label"):
        SemanticKITTI(root, "train", sequences=[0], sensor=SMALL)
    (lab / "000009.label").unlink()
    SemanticKITTI(root, "train", sequences=[0], sensor=SMALL)
    # labels whose count differs from the scan: the error names the file
    write_label(lab / "000001.label", np.zeros(11, np.uint32))
    ds = SemanticKITTI(root, "train", sequences=[0], sensor=SMALL)
    with pytest.raises(DataError, match="000001.label"):
        ds[1]


def test_unknown_raw_labels(data):
    root, _ = data
    write_label(root / "sequences" / "01" / "labels" / "000000.label", np.full(400, 1234, np.uint32))
    ds = SemanticKITTI(root, "train", sequences=[1], sensor=SMALL)
    with pytest.raises(DataError, match="1234"):
        ds[0]
    ds = SemanticKITTI(root, "train", sequences=[1], sensor=SMALL, unknown_labels="zero")
    assert torch.all(ds[0]["points_label"] == 0)


def test_config_errors(data):
    root, _ = data
    with pytest.raises(ConfigError, match="normalization.mean"):
        SemanticKITTI(root, "train", sequences=[0], normalization={"mean": [1, 2, 3]})
    with pytest.raises(ConfigError, match="std"):
        SemanticKITTI(root, "train", sequences=[0], normalization={"std": [1, 1, 0, 1, 1]})
    with pytest.raises(ConfigError, match="valid keys"):
        SemanticKITTI(root, "train", sequences=[0], normalization={"means": [0] * 5})
    with pytest.raises(ConfigError, match="sensor"):
        SemanticKITTI(root, "train", sequences=[0], sensor={"height": 64, "fov_upp": 3})
    ds = SemanticKITTI(root, "train", sequences=[0], sensor="vlp16",
                       normalization={"mean": [0] * 5, "std": [1] * 5})
    s = ds[0]
    assert s["input"].shape == (5, 16, 1024)
    m = s["mask"]
    torch.testing.assert_close(s["input"][0][m], s["proj_range"][m])


def test_augmentation_in_dataset(data):
    root, truth = data
    aug = {"seed": 3, "rotation": {}, "flip": {}, "scale": {}, "jitter": {}, "dropout": {"max_fraction": 0.5}}
    ds = SemanticKITTI(root, "train", sequences=[0], sensor=SMALL, augmentation=aug)
    a, b = ds[0], ds[0]
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["px"], b["px"])
    pts, _ = truth[("00", "000000")]
    assert a["num_points"] == len(pts) and a["points_label"].shape[0] == len(pts)
    assert not torch.allclose(a["xyz"], torch.from_numpy(pts[:, :3]))
    ds.set_epoch(1)
    c = ds[0]
    assert not torch.equal(a["xyz"], c["xyz"])
    dropped = c["px"] == -1
    assert 0 < int(dropped.sum()) < len(pts)
    # each pixel's point is a projected (kept) point, and the label image follows it
    assert torch.all(c["label"][c["mask"]] >= 0)
