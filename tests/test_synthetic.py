"""The synthetic SemanticKITTI-format generator (lidarseg.data.synthetic, `lidarseg synth`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lidarseg.data.io import read_label, read_scan
from lidarseg.data.labels import LabelMap
from lidarseg.data.synthetic import SensorConfig, dataset_complete, ensure_dataset, generate, generate_scan
from lidarseg.errors import ConfigError

SEQS = ("00", "08", "11")


def _rings(points: np.ndarray) -> int:
    """Rings found by KPRNet's scan unfolding (kprnet.md §1.3); the project's implementation when available."""
    try:
        from lidarseg.data.projection import scan_unfolding
    except ImportError:
        scan_unfolding = None
    if scan_unfolding is not None:
        return scan_unfolding(points).num_rings
    u = 0.5 * (-np.arctan2(points[:, 1].astype(np.float64), -points[:, 0].astype(np.float64)) / np.pi + 1.0)
    return int(np.count_nonzero((u[1:] < 0.2) & (u[:-1] > 0.8))) + 1


def _files(root, seq, sub, ext):
    return sorted((root / "sequences" / seq / sub).glob(f"*.{ext}"))


def test_layout_and_round_trip(synthetic_root):
    lm = LabelMap.from_yaml()
    for seq in SEQS:
        sdir = synthetic_root / "sequences" / seq
        scans = _files(synthetic_root, seq, "velodyne", "bin")
        assert [p.name for p in scans] == ["000000.bin", "000001.bin", "000002.bin"]
        labels = _files(synthetic_root, seq, "labels", "label")
        assert len(labels) == (0 if seq == "11" else 3)  # test split: no labels, as in SemanticKITTI
        for name in ("poses.txt", "times.txt"):
            assert len((sdir / name).read_text().splitlines()) == 3
        poses = np.loadtxt(sdir / "poses.txt").reshape(-1, 3, 4)
        np.testing.assert_allclose(poses[0], np.eye(4)[:3], atol=1e-9)
        assert np.all(np.diff(np.loadtxt(sdir / "times.txt")) > 0)
        calib = dict(line.split(":", 1) for line in (sdir / "calib.txt").read_text().splitlines())
        assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"} and all(len(v.split()) == 12 for v in calib.values())
        for scan_path in scans:
            pts = read_scan(scan_path)
            assert pts.dtype == np.float32 and pts.shape[1] == 4 and 20_000 < len(pts) < 40_000
            assert np.isfinite(pts).all()
            assert np.linalg.norm(pts[:, :3], axis=1).min() > 0.5
            assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 1
            assert _rings(pts) == 64
            if seq != "11":
                lab = read_label(scan_path.parent.parent / "labels" / (scan_path.stem + ".label"), len(pts))
                assert lab.dtype == np.uint32 and lab.shape == (len(pts),)
                assert lm.count_unknown(lab) == 0


def test_consecutive_scans_follow_the_poses(synthetic_root):
    """Static geometry seen from scan 0 and scan 1 lines up after applying the relative velodyne pose."""
    sdir = synthetic_root / "sequences" / "00"
    tr = np.eye(4)
    calib = dict(line.split(":", 1) for line in (sdir / "calib.txt").read_text().splitlines())
    tr[:3] = np.array(calib["Tr"].split(), float).reshape(3, 4)
    cam = np.loadtxt(sdir / "poses.txt").reshape(-1, 3, 4)
    pose1 = np.eye(4)
    pose1[:3] = cam[1]
    velo1_in_0 = np.linalg.inv(tr) @ pose1 @ tr
    assert 1.0 < np.linalg.norm(velo1_in_0[:3, 3]) < 10.0  # about 3-6 m per 0.5 s
    # buildings and poles (static) of scan 1, moved into scan 0's frame, lie on scan 0's surfaces
    p0, l0 = read_scan(sdir / "velodyne/000000.bin"), read_label(sdir / "labels/000000.label") & 0xFFFF
    p1, l1 = read_scan(sdir / "velodyne/000001.bin"), read_label(sdir / "labels/000001.label") & 0xFFFF
    a = p0[np.isin(l0, (50, 80)), :3].astype(np.float64)
    b = p1[np.isin(l1, (50, 80)), :3].astype(np.float64)
    b = b[np.linalg.norm(b, axis=1) < 25][:300]
    b0 = b @ velo1_in_0[:3, :3].T + velo1_in_0[:3, 3]
    d = np.sqrt(((b0[:, None, :] - a[None, :, :]) ** 2).sum(-1)).min(1)
    assert np.median(d) < 0.3


def test_full_resolution_scan(synthetic_scan):
    pts, lab = synthetic_scan
    assert pts.dtype == np.float32 and lab.dtype == np.uint32 and len(pts) == len(lab)
    assert 100_000 <= len(pts) <= 130_000
    assert np.isfinite(pts).all() and np.linalg.norm(pts[:, :3], axis=1).min() > 0.5
    assert _rings(pts) == 64
    sem, inst = lab & 0xFFFF, lab >> 16
    assert np.all(inst[np.isin(sem, (40, 48, 50, 70, 72))] == 0)  # stuff has no instance
    assert np.any(inst[sem == 10] > 0) or np.any(inst[sem == 252] > 0)


def test_determinism_and_seed(tmp_path):
    a = generate(tmp_path / "a", sequences=[8], scans=2, seed=3, azimuth_steps=256, log=None)
    b = generate(tmp_path / "b", sequences=[8], scans=2, seed=3, azimuth_steps=256, log=None)
    assert a["sequences"] == b["sequences"]
    for rel in ("velodyne/000001.bin", "labels/000001.label", "poses.txt", "times.txt", "calib.txt"):
        assert (tmp_path / "a/sequences/08" / rel).read_bytes() == (tmp_path / "b/sequences/08" / rel).read_bytes()
    c, _ = generate_scan(8, 1, seed=4, num_scans=2, azimuth_steps=256)
    assert not np.array_equal(c, read_scan(tmp_path / "a/sequences/08/velodyne/000001.bin"))


def test_faults_only_when_asked():
    pts, _ = generate_scan(8, 0, azimuth_steps=256, faults={"nan": 5, "zero_range": 3})
    assert np.isnan(pts[:, :3]).any(axis=1).sum() == 5
    assert (np.abs(pts[:, :3]).sum(axis=1) == 0).sum() == 3
    clean, _ = generate_scan(8, 0, azimuth_steps=256)
    assert np.isfinite(clean).all() and np.linalg.norm(clean[:, :3], axis=1).min() > 0.5
    with pytest.raises(ConfigError):
        generate_scan(8, 0, azimuth_steps=256, faults={"inf": 1})


def test_every_training_class_and_long_tail():
    """A representative slice of the default dataset (every 8th scan of each labelled sequence, reduced azimuth
    resolution) holds all 19 training classes, dominated by the big surfaces, persons and riders rare."""
    lm = LabelMap.from_yaml()
    counts = np.zeros(lm.num_classes, np.int64)
    for seq, n in ((0, 40), (1, 40), (2, 40), (3, 40), (8, 20)):
        for i in range(0, n, 8):
            _, lab = generate_scan(seq, i, num_scans=n, azimuth_steps=1024)
            counts += np.bincount(lm.to_train(lab), minlength=lm.num_classes)
    assert np.all(counts[1:] > 0), dict(zip(lm.names, counts.tolist()))
    frac = counts / counts.sum()
    big = [lm.names.index(n) for n in ("road", "sidewalk", "building", "vegetation")]
    rare = [lm.names.index(n) for n in ("person", "bicyclist", "motorcyclist")]
    assert frac[big].sum() > 0.55 and frac[rare].max() < 0.01


def test_ensure_dataset_redoes_interrupted(tmp_path):
    root = tmp_path / "d"
    kw = dict(sequences=[0], scans=1, azimuth_steps=128, log=None)
    ensure_dataset(root, **kw)
    marker = root / ".synthetic.json"
    assert json.loads(marker.read_text())["complete"]
    assert dataset_complete(root)
    stamp = (root / "sequences/00/velodyne/000000.bin").stat().st_mtime_ns
    ensure_dataset(root, **kw)  # complete: nothing rewritten
    assert (root / "sequences/00/velodyne/000000.bin").stat().st_mtime_ns == stamp
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "complete": False}))  # as if interrupted
    assert not dataset_complete(root)
    ensure_dataset(root, **kw)
    assert dataset_complete(root)


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError):
        generate(tmp_path, sequences=["x"], log=None)
    with pytest.raises(ConfigError):
        generate(tmp_path, scans=0, log=None)
    with pytest.raises(ConfigError):
        SensorConfig(azimuth_steps=4)
    with pytest.raises(ConfigError):
        SensorConfig.from_options({"beamz": 64})
    foreign = tmp_path / "real"
    (foreign / "sequences/00").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not written by the synthetic generator"):
        generate(foreign, sequences=[0], scans=1, log=None)


def test_cli_and_preview(tmp_path):
    from lidarseg.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--sequences", "8", "--scans", "1", "--azimuth-steps", "256",
                 "--preview"]) == 0
    png = out / "preview" / "08_000000_range.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "preview" / "08_000000_bev.png").is_file()
    assert main(["synth", "--out", str(out), "--faults", "nan"]) == 2
