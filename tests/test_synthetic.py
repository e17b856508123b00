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


# ------------------------------------------------------------------------------------------------------------------
# sensor and return model

def _ring_rows(points):
    from lidarseg.data.projection import scan_unfolding
    return scan_unfolding(points, height=256).row


def _pitch_deg(points):
    xyz = points[:, :3].astype(np.float64)
    return np.degrees(np.arcsin(xyz[:, 2] / np.linalg.norm(xyz, axis=1)))


def test_rings_are_not_exact_cones_and_lasers_do_not_share_one_azimuth_grid(synthetic_scan):
    from lidarseg.data.synthetic.sensor import sweep_rays

    pts, _ = synthetic_scan
    ring, pitch = _ring_rows(pts), _pitch_deg(pts)
    spread = [np.std(pitch[ring == k]) for k in range(64)]
    assert np.median(spread) >= 0.2                       # real HDL-64E: 0.34 deg; ideal cones: ~0
    # ring medians decrease from the top ring, top near +2..+3 deg and bottom near -24 deg, as on real scans
    med = np.array([np.median(pitch[ring == k]) for k in range(64)])
    assert np.all(np.diff(med) < 0) and 1.5 < med[0] < 4.5 and -25.5 < med[-1] < -23.0
    # firing azimuths: each laser on its own grid (phase within one azimuth step)
    rays = sweep_rays(SensorConfig())
    step = 2 * np.pi / 2048
    phase = np.angle(np.exp(2j * np.pi * np.mod(rays.azimuth, step) / step).mean(1)) / (2 * np.pi)
    d = np.abs((phase[:, None] - phase[None, :] + 0.5) % 1.0 - 0.5)
    assert np.mean(d[np.triu_indices(64, 1)] > 0.05) > 0.8
    assert np.all(np.diff(rays.azimuth, axis=1) > 0)      # each ring in increasing azimuth from the front seam


def test_ego_body_hides_the_lowest_beams_behind_the_sensor():
    def empty_bottom(sensor):
        pts, _ = generate_scan(8, 0, sensor=sensor, azimuth_steps=1024)
        ring = _ring_rows(pts)
        az = np.mod(np.arctan2(pts[:, 1], pts[:, 0]), 2 * np.pi)
        bottom = ring == ring.max()
        used = np.unique(np.floor(az[bottom] / (2 * np.pi) * 1024).astype(int))
        rear = np.abs(np.degrees(az[bottom]) - 180) < 45
        return 1 - len(used) / 1024, rear.mean()

    with_body, rear_share = empty_bottom(None)
    without, rear_free = empty_bottom({"ego_shadow": False})
    assert 0.3 <= with_body <= 0.6 and without < 0.2     # real: 50 % of the bottom ring's azimuths are empty
    assert rear_share < 0.02 < rear_free                    # the shadow is behind the sensor


def test_remission_falls_with_range_and_reads_zero_far_away(synthetic_scan):
    pts, lab = synthetic_scan
    r = np.linalg.norm(pts[:, :3].astype(np.float64), axis=1)
    rem = pts[:, 3].astype(np.float64)
    np.testing.assert_allclose(rem * 100, np.round(rem * 100), atol=1e-3)   # multiples of 0.01
    near, far = (r >= 5) & (r < 20), r >= 40
    assert rem[near].mean() > 2 * rem[far].mean()
    assert np.mean(rem[r >= 50] == 0) > 0.4 and np.mean(rem[near] == 0) < 0.15
    assert np.corrcoef(rem, r)[0, 1] < -0.1
    sem = lab & 0xFFFF
    assert rem[sem == 50].mean() > rem[sem == 40].mean()     # facades brighter than asphalt, as on real scans


def test_remission_function_matches_its_formula():
    from lidarseg.data.synthetic.remission import RemissionModel, remission

    rng = np.random.default_rng(0)
    refl, cosi = rng.uniform(0, 0.8, 500), rng.uniform(0, 1, 500)
    dist, noise, thr = rng.uniform(1, 80, 500), rng.normal(0, 0.03, 500), rng.uniform(0.7, 1.3, 500)
    m = RemissionModel()
    got = remission(refl, cosi, dist, noise, m, thr)
    # plain transcription, point by point
    want = []
    for a, c, d, n, t in zip(refl, cosi, dist, noise, thr):
        fall = np.exp(-max(d - m.knee, 0.0) / m.falloff)
        v = a * (1 - m.incidence + m.incidence * c) * fall + n * np.sqrt(fall)
        v = 0.0 if v < m.zero_level * t else v
        want.append(min(max(round(v / 0.01) * 0.01, 0.0), 1.0))
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_sensor_is_tilted_per_scan_within_the_configured_range():
    """Level sensor on a level road: the road 4-12 m ahead lies at -height; with pitch the road ahead drops or rises
    with range."""
    def road_z(sensor):
        pts, lab = generate_scan(8, 1, sensor=sensor, azimuth_steps=512, road="flat")
        x, y = pts[:, 0], pts[:, 1]
        sel = ((lab & 0xFFFF) == 40) & (np.abs(y) < 2) & (np.abs(x) > 4) & (np.abs(x) < 20)
        return np.polyfit(x[sel], pts[sel, 2], 1)

    slope, icpt = road_z({"roll_std": 0.0, "pitch_std": 0.0})
    assert abs(slope) < 0.005 and abs(icpt + 1.73) < 0.05
    slope, _ = road_z({"roll_std": 0.0, "pitch_std": 1.5})
    assert 0.003 < abs(slope) < np.tan(np.deg2rad(1.5 * 2.5)) + 0.005


@pytest.mark.parametrize("preset", ["hdl64", "hdl32", "vlp16", "os1-128", "pandora-40"])
def test_sensor_presets_round_trip_and_unfold_into_their_rings(preset, tmp_path):
    from lidarseg.data.projection import scan_unfolding
    from lidarseg.data.synthetic.sensor import PRESETS

    sen = SensorConfig.from_options(preset, azimuth_steps=720)
    assert sen.beams == PRESETS[preset]["beams"] and len(sen.calibration().elevation) == sen.beams
    root = tmp_path / preset
    generate(root, sequences=[8], scans=1, sensor=sen, log=None)
    pts = read_scan(root / "sequences/08/velodyne/000000.bin")
    lab = read_label(root / "sequences/08/labels/000000.label", len(pts))
    assert len(lab) == len(pts) > 1000 and np.isfinite(pts).all()
    assert scan_unfolding(pts, height=256).num_rings == sen.beams
    el = sen.nominal_elevations()
    pitch = _pitch_deg(pts)
    lo, hi = np.percentile(pitch, [0.1, 99.9])                # outliers and the closest points aside
    assert hi < el[0] + 2.5 and lo > el[-1] - 2.5


def test_sensor_options_are_checked():
    with pytest.raises(ConfigError, match="unknown sensor preset"):
        SensorConfig.from_options("hdl128")
    with pytest.raises(ConfigError, match="elevations"):
        SensorConfig.from_options({"preset": "vlp16", "elevations": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="pitch_std"):
        SensorConfig.from_options({"pitch_std": -1})
    assert SensorConfig.from_options({"preset": "vlp16"}).beams == 16
