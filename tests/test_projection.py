"""Spherical projection and scan unfolding against plain-numpy transcriptions of the published code
(rangenet.md §1.3, kprnet.md §1.3), written here independently of the numba implementation."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from lidarseg.data import projection as P
from lidarseg.data.projection import SensorGeometry, scan_unfolding, spherical_projection
from lidarseg.errors import ConfigError, DataError


# ------------------------------------------------------------------------------------------------------------
# transcriptions of the published numpy code

def rangenet_reference(points, H=64, W=2048, fov_up=3.0, fov_down=-25.0):
    """RangeNet++ `LaserScan.do_range_projection` (rangenet.md §1.3), float32 throughout."""
    xyz = points[:, :3]
    remission = points[:, 3]
    fov_up = fov_up / 180.0 * np.pi
    fov_down = fov_down / 180.0 * np.pi
    fov = abs(fov_down) + abs(fov_up)
    depth = np.linalg.norm(xyz, 2, axis=1)
    yaw = -np.arctan2(xyz[:, 1], xyz[:, 0])
    pitch = np.arcsin(xyz[:, 2] / depth)
    proj_x = 0.5 * (yaw / np.pi + 1.0)
    proj_y = 1.0 - (pitch + abs(fov_down)) / fov
    proj_x *= W
    proj_y *= H
    u_float, v_float = proj_x.copy(), proj_y.copy()
    proj_x = np.maximum(0, np.minimum(W - 1, np.floor(proj_x))).astype(np.int32)
    proj_y = np.maximum(0, np.minimum(H - 1, np.floor(proj_y))).astype(np.int32)
    order = np.argsort(depth)[::-1]
    proj_range = np.full((H, W), -1, dtype=np.float32)
    proj_xyz = np.full((H, W, 3), -1, dtype=np.float32)
    proj_rem = np.full((H, W), -1, dtype=np.float32)
    proj_idx = np.full((H, W), -1, dtype=np.int32)
    proj_range[proj_y[order], proj_x[order]] = depth[order]
    proj_xyz[proj_y[order], proj_x[order]] = xyz[order]
    proj_rem[proj_y[order], proj_x[order]] = remission[order]
    proj_idx[proj_y[order], proj_x[order]] = np.arange(len(depth), dtype=np.int32)[order]
    return dict(px=proj_x, py=proj_y, depth=depth, range=proj_range, xyz=proj_xyz, remission=proj_rem,
                idx=proj_idx, u=u_float, v=v_float)


def kprnet_reference(points, W=2049, H=65):
    """KPRNet `do_range_projection` (kprnet.md §1.3)."""
    xyz = points[:, :3]
    refl = points[:, 3]
    depth = np.linalg.norm(xyz, 2, axis=1)
    yaw = -np.arctan2(xyz[:, 1], -xyz[:, 0])
    u = 0.5 * (yaw / np.pi + 1.0)
    new_raw = np.zeros(len(u), dtype=bool)
    new_raw[1:] = (u[1:] < 0.2) & (u[:-1] > 0.8)
    py = np.cumsum(new_raw)
    px = u * W - 0.001
    col = np.floor(px).astype(np.int64)
    order = np.argsort(depth)[::-1]
    inv = np.zeros((H, W))
    rimg = np.zeros((H, W))
    inv[py[order], col[order]] = 1 / depth[order]
    rimg[py[order], col[order]] = refl[order]
    return dict(inv=inv, refl=rimg, px=px, py=py, col=col % W, depth=depth)


# ------------------------------------------------------------------------------------------------------------
# test clouds

def random_cloud(n, seed, scale=20.0):
    rs = np.random.default_rng(seed)
    xyz = rs.normal(size=(n, 3)) * scale
    rem = rs.random(n)
    return np.concatenate([xyz, rem[:, None]], 1).astype(np.float32)


def crowded_cloud(n, seed, H=64, W=2048):
    """Many points per pixel: few distinct directions, many ranges (with exact ties)."""
    rs = np.random.default_rng(seed)
    dirs = rs.normal(size=(40, 3))
    dirs[:, 2] *= 0.15
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    which = rs.integers(0, len(dirs), n)
    r = rs.integers(1, 200, n) * 0.25  # quantised ranges -> ties
    xyz = dirs[which] * r[:, None] + rs.normal(size=(n, 3)) * 1e-4 * r[:, None]
    return np.concatenate([xyz, rs.random((n, 1))], 1).astype(np.float32)


def ring_scan(rings=64, per_ring=400, seed=0, start_angle=0.0):
    """KITTI-like point order: ring-major, each ring counter-clockwise starting just left of +x."""
    rs = np.random.default_rng(seed)
    out = []
    for k in range(rings):
        phi = np.sort(rs.uniform(0.0, 2 * np.pi, per_ring)) + start_angle
        phi = phi[(phi > 1e-3) & (phi < 2 * np.pi - 1e-3)]
        r = rs.uniform(2.0, 60.0, len(phi))
        elev = np.deg2rad(2.0 - 0.4 * k)
        xyz = np.stack([r * np.cos(phi) * np.cos(elev), r * np.sin(phi) * np.cos(elev), r * np.sin(elev)], 1)
        out.append(np.concatenate([xyz, rs.random((len(phi), 1))], 1))
    return np.concatenate(out).astype(np.float32)


def near_border(t, tol=1e-3):
    """Float64 pixel coordinate t lies within `tol` pixels of an integer (a pixel border)."""
    return np.abs(t - np.round(t)) < tol


def exact_uv(points, H=64, W=2048, fov_up=3.0, fov_down=-25.0):
    p = points[:, :3].astype(np.float64)
    d = np.linalg.norm(p, axis=1)
    u = 0.5 * (-np.arctan2(p[:, 1], p[:, 0]) / np.pi + 1.0) * W
    fu, fd = np.deg2rad(fov_up), np.deg2rad(fov_down)
    v = (1.0 - (np.arcsin(p[:, 2] / d) - fd) / (fu - fd)) * H
    return u, v


def check_nearest_wins(proj, points, H, W):
    """Every pixel holds a point of that pixel with the smallest range there; empty pixels have no point."""
    ok = proj.px >= 0
    flat = proj.py[ok] * W + proj.px[ok]
    depth = proj.unproj_range[ok]
    best = np.full(H * W, np.inf, dtype=np.float32)
    np.minimum.at(best, flat, depth)
    idx = proj.idx.reshape(-1)
    occupied = np.isfinite(best)
    np.testing.assert_array_equal(idx >= 0, occupied)
    winners = idx[occupied]
    pix = np.nonzero(occupied)[0]
    assert np.all(proj.py[winners] * W + proj.px[winners] == pix)
    np.testing.assert_array_equal(proj.unproj_range[winners], best[occupied])
    np.testing.assert_array_equal(proj.range.reshape(-1)[occupied], best[occupied])
    np.testing.assert_array_equal(proj.xyz.reshape(-1, 3)[occupied], points[winners, :3])
    np.testing.assert_array_equal(proj.remission.reshape(-1)[occupied], points[winners, 3])
    assert np.all(proj.range.reshape(-1)[~occupied] == -1) and np.all(proj.xyz.reshape(-1, 3)[~occupied] == -1)
    assert np.all(proj.remission.reshape(-1)[~occupied] == -1)


# ------------------------------------------------------------------------------------------------------------
# spherical projection

@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("make,n,seed", [(random_cloud, 120_000, 0), (random_cloud, 50_000, 1),
                                         (crowded_cloud, 30_000, 2)])
def test_spherical_matches_rangenet(make, n, seed, parallel):
    points = make(n, seed)
    ref = rangenet_reference(points)
    proj = spherical_projection(points, parallel=parallel)
    assert proj.px.dtype == np.int64 and proj.py.dtype == np.int64 and proj.range.dtype == np.float32
    np.testing.assert_array_equal(proj.unproj_range, ref["depth"])
    bad_x = proj.px != ref["px"]
    bad_y = proj.py != ref["py"]
    # a handful per 100k points: float32 rounding at a pixel border (numpy's float32 arctan2 is within 3 ulp)
    assert bad_x.sum() + bad_y.sum() <= 5 * n / 100_000 + 2
    u, v = exact_uv(points)
    assert np.all(near_border(u[bad_x])) and np.all(near_border(v[bad_y]))
    assert np.all(np.abs(proj.px[bad_x] - ref["px"][bad_x]) == 1)
    # pixels untouched by the border points hold exactly the same values as the reference
    moved = bad_x | bad_y
    touched = np.zeros((64, 2048), bool)
    touched[proj.py[moved], proj.px[moved]] = True
    touched[ref["py"][moved], ref["px"][moved]] = True
    same = ~touched
    for key in ("range", "remission"):
        np.testing.assert_array_equal(getattr(proj, key)[same], ref[key][same])
    np.testing.assert_array_equal(proj.xyz[same], ref["xyz"][same])
    # idx may differ only between points of equal range (the reference's argsort breaks ties arbitrarily)
    diff = same & (proj.idx != ref["idx"])
    assert np.all(ref["depth"][proj.idx[diff]] == ref["depth"][ref["idx"][diff]])
    check_nearest_wins(proj, points, 64, 2048)
    np.testing.assert_array_equal(proj.mask, proj.idx >= 0)


@pytest.mark.parametrize("parallel", [False, True])
def test_reused_output_buffers_give_the_same_result(parallel):
    # a larger, a smaller, then a larger-than-ever scan through the same buffers: each result equals a fresh call
    out = None
    for n, seed in ((50_000, 3), (20_000, 4), (80_000, 5)):
        points = random_cloud(n, seed)
        fresh = spherical_projection(points, parallel=parallel)
        out = spherical_projection(points, parallel=parallel, out=out)
        for key in ("range", "xyz", "remission", "idx", "px", "py", "unproj_range"):
            np.testing.assert_array_equal(getattr(out, key), getattr(fresh, key), err_msg=key)
    image = out.range
    again = spherical_projection(random_cloud(10_000, 6), parallel=parallel, out=out)
    assert again.range is image and np.shares_memory(again.px, out.px)


def test_reused_output_buffers_errors():
    small = spherical_projection(random_cloud(1000, 0), height=32, width=512)
    with pytest.raises(ValueError, match=r"out\.range.*\(64, 2048\)"):
        spherical_projection(random_cloud(1000, 1), out=small)
    with pytest.raises(TypeError, match="RangeProjection"):
        spherical_projection(random_cloud(1000, 1), out={"range": None})


def test_border_points_exist_and_are_counted():
    # points placed exactly on column borders in float64: the float32 pipeline may round either way
    W = 2048
    cols = np.arange(0, W, 7)
    yaw = (cols / W * 2.0 - 1.0) * np.pi
    xyz = np.stack([np.cos(-yaw) * 10, np.sin(-yaw) * 10, np.full(len(yaw), -0.5)], 1)
    points = np.concatenate([xyz, np.ones((len(yaw), 1))], 1).astype(np.float32)
    ref = rangenet_reference(points)
    proj = spherical_projection(points)
    bad = proj.px != ref["px"]
    u, _ = exact_uv(points)
    assert np.all(near_border(u))
    assert np.all(np.abs(proj.px - cols) <= 1) and np.all(np.abs(ref["px"] - cols) <= 1)
    assert bad.sum() <= len(cols) // 2


def test_atan2_accuracy():
    rs = np.random.default_rng(5)
    y, x = rs.normal(size=(2, 20000)) * np.logspace(-6, 6, 20000)
    out = np.array([P._atan2.py_func(a, b) for a, b in zip(y[:2000], x[:2000])])
    np.testing.assert_allclose(out, np.arctan2(y[:2000], x[:2000]), rtol=0, atol=1e-11)
    special = [(0.0, 0.0), (-0.0, 0.0), (0.0, -0.0), (-0.0, -0.0), (1.0, 0.0), (0.0, -1.0), (-0.0, -1.0)]
    for a, b in special:
        got, want = P._atan2.py_func(a, b), math.atan2(a, b)
        assert got == want and math.copysign(1, got) == math.copysign(1, want)


def test_geometry_conventions():
    pts = np.array([[10, 0, 0, 1], [0, 10, 0, 1], [0, -10, 0, 1], [-10, 1e-3, 0, 1], [-10, -1e-3, 0, 1],
                    [10, 0, 50, 1], [10, 0, -50, 1], [20, 0, 0, 1]], np.float32)
    proj = spherical_projection(pts, parallel=False)
    assert proj.px.tolist()[:5] == [1024, 512, 1536, 0, 2047]
    assert proj.py[5] == 0 and proj.py[6] == 63  # outside the FOV: clamped, not dropped
    assert proj.mask.sum() == 7  # point 7 lies behind point 0 in the same pixel
    assert proj.idx[proj.py[7], proj.px[7]] == 0 and proj.range[proj.py[0], 1024] == 10


def test_invalid_points_kept_not_projected():
    pts = random_cloud(1000, 3)
    pts[0] = [0, 0, 0, 0.5]            # zero range (RangeNet++ crashes here)
    pts[1, 0] = np.nan
    pts[2, 2] = np.inf
    pts[3, 3] = np.nan                  # bad remission would put NaN into the input image
    pts[4] = [1e-30, 0, 1e-30, 0.1]     # underflows to zero range in float32
    proj = spherical_projection(pts)
    assert proj.px.shape == (1000,) and proj.unproj_range.shape == (1000,)
    assert np.all(proj.px[:5] == -1) and np.all(proj.py[:5] == -1)
    assert np.all(proj.px[5:] >= 0)
    assert np.all(np.isfinite(proj.range)) and np.all(np.isfinite(proj.remission))
    assert proj.unproj_range[0] == 0 and np.isnan(proj.unproj_range[1])
    assert not np.isin(proj.idx, np.arange(5)).any()
    # point 0 can win a pixel and is then kept in the mask (RangeNet++'s idx > 0 drops it)
    proj0 = spherical_projection(pts[5:])
    assert proj0.mask[proj0.py[0], proj0.px[0]]


def test_keep_mask_and_empty_cloud():
    pts = random_cloud(500, 4)
    keep = np.ones(500, bool)
    keep[::2] = False
    proj = spherical_projection(pts, keep=keep)
    assert np.all(proj.px[~keep] == -1) and np.all(proj.px[keep] >= 0)
    check_nearest_wins(proj, pts, 64, 2048)
    empty = spherical_projection(np.zeros((0, 4), np.float32))
    assert empty.px.shape == (0,) and not empty.mask.any() and np.all(empty.range == -1)


@pytest.mark.parametrize("geom", [SensorGeometry(16, 1024, 15.0, -15.0), SensorGeometry(32, 512, 10.67, -30.67),
                                  SensorGeometry(128, 2048, 22.5, -22.5), SensorGeometry(16, 256, -2.0, -24.0)])
def test_other_sensors(geom):
    pts = random_cloud(20_000, 6)
    proj = spherical_projection(pts, geom.height, geom.width, geom.fov_up, geom.fov_down)
    assert proj.range.shape == (geom.height, geom.width) and proj.xyz.shape == (geom.height, geom.width, 3)
    u, v = exact_uv(pts, geom.height, geom.width, geom.fov_up, geom.fov_down)
    want_x = np.clip(np.floor(u), 0, geom.width - 1)
    want_y = np.clip(np.floor(v), 0, geom.height - 1)
    off = (proj.px != want_x) | (proj.py != want_y)
    assert np.all(near_border(u[proj.px != want_x])) and np.all(near_border(v[proj.py != want_y]))
    assert off.sum() <= 3
    check_nearest_wins(proj, pts, geom.height, geom.width)
    if geom.fov_up >= 0:
        ref = rangenet_reference(pts, geom.height, geom.width, geom.fov_up, geom.fov_down)
        assert (proj.py != ref["py"]).sum() + (proj.px != ref["px"]).sum() <= 3


def test_bad_input_errors():
    with pytest.raises(DataError, match=r"\[N,4\]"):
        spherical_projection(np.zeros((10, 5), np.float32))
    with pytest.raises(DataError, match="dtype"):
        spherical_projection(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(DataError, match="keep"):
        spherical_projection(np.zeros((10, 4), np.float32), keep=np.ones(9, bool))
    with pytest.raises(ConfigError, match="fov_up"):
        spherical_projection(np.zeros((10, 4), np.float32), fov_up=-30.0)
    with pytest.raises(ConfigError, match="height"):
        spherical_projection(np.zeros((10, 4), np.float32), height=0)
    with pytest.raises(ConfigError, match="valid keys"):
        SensorGeometry.from_config({"height": 64, "fov": 3})
    with pytest.raises(ConfigError, match="preset"):
        SensorGeometry.from_config("hdl65")
    assert SensorGeometry.from_config({"preset": "vlp16", "width": 2048}) == SensorGeometry(16, 2048, 15.0, -15.0)
    # [N,3] and float64 input are accepted
    pts = random_cloud(100, 7)
    a = spherical_projection(pts[:, :3].astype(np.float64))
    assert np.all(a.px == spherical_projection(pts).px)


# ------------------------------------------------------------------------------------------------------------
# property tests

coords = st.floats(-80, 80, width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 300), st.just(3)), elements=coords),
       st.sampled_from([(64, 2048, 3.0, -25.0), (16, 64, 15.0, -15.0), (8, 16, 2.0, -24.8)]))
def test_property_inside_and_nearest(xyz, geom):
    H, W, fu, fd = geom
    # few pixels, many collisions; duplicates make ties
    points = np.concatenate([xyz, xyz[::-1] * np.float32(0.5), xyz], 0)
    points = np.concatenate([points, np.linspace(0, 1, len(points), dtype=np.float32)[:, None]], 1)
    proj = spherical_projection(points, H, W, fu, fd, parallel=False)
    ok = proj.px >= 0
    assert np.all(ok == (proj.unproj_range > 0))
    assert np.all((proj.px[ok] < W) & (proj.py[ok] >= 0) & (proj.py[ok] < H))
    check_nearest_wins(proj, points, H, W)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.integers(50, 200), st.integers(0, 10_000))
def test_property_unfolding(rings, per_ring, seed):
    points = ring_scan(rings, per_ring, seed)
    out = scan_unfolding(points, height=65, width=2049)
    assert out.num_rings == rings
    assert out.num_clipped == int((kprnet_reference(points, H=rings + 1)["py"] >= 65).sum())
    assert np.all((out.row >= 0) & (out.row < 65) & (out.col >= 0) & (out.col < 2049))


# ------------------------------------------------------------------------------------------------------------
# scan unfolding

def test_unfolding_matches_kprnet():
    points = ring_scan(64, 1500, seed=1)
    ref = kprnet_reference(points)
    out = scan_unfolding(points)
    assert out.num_rings == 64 and out.num_clipped == 0
    np.testing.assert_array_equal(out.row, ref["py"])
    np.testing.assert_array_equal(out.py, ref["py"].astype(np.float32))
    bad = out.col != ref["col"]
    assert bad.sum() <= 3
    assert np.all(near_border(ref["px"][bad].astype(np.float64) + 0.001, 2e-3))
    np.testing.assert_allclose(out.px, ref["px"], rtol=0, atol=5e-4)
    same = np.ones((65, 2049), bool)
    same[out.row[bad], out.col[bad]] = False
    same[ref["py"][bad], ref["col"][bad]] = False
    np.testing.assert_array_equal(out.inv_depth[same], ref["inv"][same].astype(np.float32))
    np.testing.assert_array_equal(out.reflectance[same], ref["refl"][same].astype(np.float32))
    assert out.inv_depth.dtype == np.float32
    # nearest wins, empty pixels are 0
    win = out.idx[out.mask]
    assert np.all(out.row[win] * 2049 + out.col[win] == np.nonzero(out.mask.reshape(-1))[0])
    assert np.all(out.inv_depth[~out.mask] == 0) and np.all(out.reflectance[~out.mask] == 0)
    best = np.full(65 * 2049, np.inf)
    np.minimum.at(best, out.row * 2049 + out.col, ref["depth"])
    np.testing.assert_array_equal(ref["depth"][win], best[out.mask.reshape(-1)].astype(np.float32))


def test_unfolding_conventions():
    # front-left (u ~ 0+), left (0.25), rear (0.5), right (0.75): counter-clockwise, front at the borders
    pts = np.array([[10, 0.01, 0, 1], [0, 10, 0, 1], [-10, 0, 0, 1], [0, -10, 0, 1]], np.float32)
    out = scan_unfolding(pts)
    np.testing.assert_allclose(out.px[1:] + 0.001, [2049 * 0.25, 2049 * 0.5, 2049 * 0.75], rtol=1e-6)
    assert out.col[0] == 0 and out.num_rings == 1 and np.all(out.row == 0)
    # u == 0 exactly (point straight ahead, y = +0): px = -0.001 and the column wraps to W-1
    out = scan_unfolding(np.array([[10, 0, 0, 1]], np.float32))
    assert out.px[0] == np.float32(-0.001) and out.col[0] == 2048


def test_unfolding_clips_extra_rings_and_skips_invalid():
    points = ring_scan(70, 100, seed=3)
    out = scan_unfolding(points, height=65)
    ref = kprnet_reference(points, H=70)
    assert out.num_rings == 70
    assert out.num_clipped == int((ref["py"] >= 65).sum()) > 0
    assert out.row.max() == 64 and np.all(out.row == np.minimum(ref["py"], 64))
    bad = points.copy()
    bad[5] = [0, 0, 0, 0.2]
    bad[150, 1] = np.nan
    out2 = scan_unfolding(bad, height=65)
    assert out2.row[5] == -1 and out2.col[150] == -1 and out2.px[5] == -1
    keep = np.ones(len(bad), bool)
    keep[[5, 150]] = False
    np.testing.assert_array_equal(out2.row[keep], out.row[keep])
    with pytest.raises(ConfigError):
        scan_unfolding(points, height=0)
    with pytest.raises(DataError):
        scan_unfolding(points[:, :2])
