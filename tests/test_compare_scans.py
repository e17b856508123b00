"""`lidarseg compare-scans` and lidarseg.data.compare: statistics checked against numpy on small folders."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lidarseg.data.compare import find_scans, road_plane, scan_set_stats
from lidarseg.data.io import write_label, write_scan
from lidarseg.data.synthetic import generate_scan
from lidarseg.errors import DataError


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    """Folder A: two synthetic scans with labels (KITTI layout velodyne/ + labels/); folder B: two scans of another
    sensor preset as .bin files without labels."""
    root = tmp_path_factory.mktemp("compare")
    scans = {}
    for i in range(2):
        pts, lab = generate_scan(8, i, azimuth_steps=512)
        write_scan(root / "a" / "velodyne" / f"{i:06d}.bin", pts)
        write_label(root / "a" / "labels" / f"{i:06d}.label", lab)
        scans.setdefault("a", []).append((pts, lab))
        pts, _ = generate_scan(0, i, sensor="vlp16", azimuth_steps=600)
        write_scan(root / "b" / f"{i:06d}.bin", pts)
        scans.setdefault("b", []).append((pts, None))
    return root, scans


def test_statistics_match_numpy(two_sets):
    root, scans = two_sets
    s = scan_set_stats(root / "a")
    pts = np.concatenate([p for p, _ in scans["a"]])
    lab = np.concatenate([lb for _, lb in scans["a"]]) & 0xFFFF
    r = np.sqrt((pts[:, :3].astype(np.float64) ** 2).sum(1))
    rem = pts[:, 3].astype(np.float64)
    assert s["scans"] == 2 and s["labelled_scans"] == 2
    assert s["points_per_scan"] == pytest.approx(len(pts) / 2)
    np.testing.assert_allclose(s["range_p5_p25_p50_p75_p95"], np.percentile(r, [5, 25, 50, 75, 95]), rtol=1e-9)
    assert s["within_3m"] == pytest.approx(np.mean(r < 3)) and s["within_10m"] == pytest.approx(np.mean(r < 10))
    np.testing.assert_allclose(s["z_p1_p5_p50_p95"], np.percentile(pts[:, 2], [1, 5, 50, 95]), rtol=1e-6)
    assert s["remission_zero"] == pytest.approx(np.mean(rem == 0))
    assert s["remission_range_corr"] == pytest.approx(np.corrcoef(rem, r)[0, 1])
    far = (r >= 50) & (r < 80)
    assert s["remission_zero_50_80m"] == pytest.approx(np.mean(rem[far] == 0))
    assert s["remission_mean_10_20m"] == pytest.approx(rem[(r >= 10) & (r < 20)].mean())
    assert s["unlabeled"] == pytest.approx(np.mean(lab == 0))
    assert s["class_remission_mean"]["road"] == pytest.approx(rem[lab == 40].mean())
    assert s["rings_found_median"] == 64
    # image fill: a 64 x 2048 RangeNet++ projection, counted directly
    fov_up, fov_down = np.deg2rad(3.0), np.deg2rad(-25.0)
    filled = []
    for p, _ in scans["a"]:
        rr = np.linalg.norm(p[:, :3], axis=1)
        u = 0.5 * (1 - np.arctan2(p[:, 1], p[:, 0]) / np.pi) * 2048
        v = (1 - (np.arcsin(p[:, 2] / rr) - fov_down) / (fov_up - fov_down)) * 64
        col = np.clip(np.floor(u), 0, 2047).astype(int)
        row = np.clip(np.floor(v), 0, 63).astype(int)
        filled.append(len(np.unique(row * 2048 + col)))
    assert s["image_filled"] == pytest.approx(np.mean(filled) / (64 * 2048), rel=1e-3)
    assert s["points_sharing_a_pixel"] == pytest.approx(1 - np.sum(filled) / len(pts), rel=1e-2)
    # road plane at 4-20 m, per scan with numpy's polyfit-free normal equations, then the mean of both scans
    fits = []
    for p, lb in scans["a"]:
        q = p[:, :3].astype(np.float64)
        rr = np.linalg.norm(q, axis=1)
        q = q[((lb & 0xFFFF) == 40) & (rr >= 4) & (rr <= 20)]
        A = np.c_[q[:, :2], np.ones(len(q))]
        coef = np.linalg.solve(A.T @ A, A.T @ q[:, 2])
        fits.append([np.std(q[:, 2] - A @ coef), np.degrees(np.arctan(np.hypot(*coef[:2])))])
    np.testing.assert_allclose(s["road_plane_4_20m_residual_std_tilt_deg"], np.mean(fits, 0), rtol=1e-6)


def test_road_plane_recovers_a_known_plane():
    rng = np.random.default_rng(0)
    n = 5000
    r, az = rng.uniform(2, 30, n), rng.uniform(-np.pi, np.pi, n)
    x, y = r * np.cos(az), r * np.sin(az)
    z = 0.03 * x - 0.02 * y - 1.7 + rng.normal(0, 0.05, n)
    pts = np.c_[x, y, z, np.zeros(n)].astype(np.float32)
    std, tilt = road_plane(pts, np.full(n, 40))
    assert std == pytest.approx(0.05, rel=0.05)
    assert tilt == pytest.approx(np.degrees(np.arctan(np.hypot(0.03, 0.02))), abs=0.05)
    assert road_plane(pts, np.full(n, 48)) is None                  # no road points


def test_cli_writes_json_and_png(two_sets, tmp_path, capsys):
    from lidarseg.cli import main

    root, scans = two_sets
    js, png = tmp_path / "c.json", tmp_path / "c.png"
    assert main(["compare-scans", str(root / "a"), str(root / "b"), "--names", "hdl64", "vlp16", "--json", str(js),
                 "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| statistic | hdl64 | vlp16 |" in out and "within_3m" in out
    data = json.loads(js.read_text())
    assert data["A"]["rings_found_median"] == 64 and data["B"]["rings_found_median"] == 16
    assert "class_remission_mean" in data["A"] and "class_remission_mean" not in data["B"]
    pts_b = np.concatenate([p for p, _ in scans["b"]])
    assert data["B"]["points_per_scan"] == pytest.approx(len(pts_b) / 2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_azimuth_crop_keeps_the_front_only(two_sets):
    root, scans = two_sets
    s = scan_set_stats(root / "a", azimuth_crop=40)
    pts = np.concatenate([p for p, _ in scans["a"]])
    keep = np.abs(np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))) <= 40
    assert s["points_per_scan"] == pytest.approx(keep.sum() / 2)
    assert "rings_found_median" not in s


def test_bad_input_names_the_file(tmp_path):
    from lidarseg.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no scan files"):
        find_scans(empty)
    mixed = tmp_path / "mixed"
    write_scan(mixed / "000000.bin", np.zeros((10, 4), np.float32) + 1)
    np.save(mixed / "000001.npy", np.ones((10, 4), np.float32))
    with pytest.raises(DataError, match=r"mixed point formats.*000000\.bin.*000001\.npy"):
        find_scans(mixed)
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "000000.bin").write_bytes(np.ones((10, 4), np.float32).tobytes()[:-6])
    with pytest.raises(DataError, match=r"000000\.bin.*not a positive multiple of 16"):
        find_scans(trunc)
    bad_npy = tmp_path / "npy"
    bad_npy.mkdir()
    np.save(bad_npy / "a.npy", np.ones((10, 3), np.float32))
    with pytest.raises(DataError, match=r"a\.npy.*expected a float array"):
        scan_set_stats(bad_npy)
    with pytest.raises(DataError, match="no such file"):
        find_scans(tmp_path / "missing")
    assert main(["compare-scans", str(empty), str(trunc)]) == 2
    assert main(["compare-scans", str(mixed), str(empty), "--azimuth-crop", "0"]) == 2
