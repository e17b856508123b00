"""The synthetic road surface (lidarseg.data.synthetic.terrain) and how the ray caster and the scans use it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lidarseg.data.synthetic import SensorConfig
from lidarseg.data.synthetic import raycast
from lidarseg.data.synthetic.generate import ScanSimulator
from lidarseg.data.synthetic.terrain import RoadProfile, RoadSurface, frame_height
from lidarseg.errors import ConfigError

SURFACE = RoadSurface(grade=0.02, amp=0.8, k=2 * math.pi / 180.0, phase=0.7, road_center=0.5, road_half=5.0,
                      camber=0.025, side_left=-0.05, side_right=0.04, side_scale=25.0)


def _height(s: RoadSurface, x: float, y: float) -> float:
    """The module docstring's formula, written out."""
    d = abs(y - s.road_center)
    if d <= s.road_half:
        cross = -s.camber * d
    else:
        side = s.side_left if y > s.road_center else s.side_right
        cross = -s.camber * s.road_half + side * s.side_scale * math.tanh((d - s.road_half) / s.side_scale)
    return s.grade * x + s.amp * math.sin(s.k * x + s.phase) + cross


def test_surface_height_gradient_and_frame_match_the_formula():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-100, 100, 300), rng.uniform(-40, 40, 300)
    want = np.array([_height(SURFACE, a, b) for a, b in zip(x, y)])
    np.testing.assert_allclose(SURFACE.height(x, y), want, atol=1e-12)
    e = 1e-5
    gx, gy = SURFACE.gradient(x, y)
    np.testing.assert_allclose(gx, [(_height(SURFACE, a + e, b) - _height(SURFACE, a - e, b)) / (2 * e)
                                    for a, b in zip(x, y)], atol=1e-6)
    away = np.abs(np.abs(y - SURFACE.road_center) - SURFACE.road_half) > 1e-3   # the kerb line is a kink
    away &= np.abs(y - SURFACE.road_center) > 1e-3                              # and so is the crown
    np.testing.assert_allclose(gy[away], [(_height(SURFACE, a, b + e) - _height(SURFACE, a, b - e)) / (2 * e)
                                          for a, b in zip(x[away], y[away])], atol=1e-6)
    # the ray caster's level frame: centred at (ex, ey), rotated by yaw, heights relative to z0
    ex, ey, yaw, z0 = 12.0, -2.0, 0.4, 3.1
    p = SURFACE.packed(ex, ey, yaw, z0)
    lx, ly = rng.uniform(-60, 60, 200), rng.uniform(-60, 60, 200)
    for a, b in zip(lx, ly):
        wx = ex + math.cos(yaw) * a - math.sin(yaw) * b
        wy = ey + math.sin(yaw) * a + math.cos(yaw) * b
        assert frame_height(p, a, b) == pytest.approx(_height(SURFACE, wx, wy) - z0, abs=1e-9)


def _bounds(p, reach=90.0):
    xs = np.linspace(-reach, reach, 361)
    z = np.array([[frame_height(p, a, b) for b in xs] for a in xs])
    return np.array([z.min() - 1.0, z.max() + 1.0, 0.12])


def test_ground_hit_is_the_first_crossing_of_the_ray():
    p = SURFACE.packed(5.0, -3.0, 0.3, 1.73 + _height(SURFACE, 5.0, -3.0))
    bounds = _bounds(p)
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(150):
        el = math.radians(rng.uniform(-25.0, 3.0))
        az = rng.uniform(0, 2 * math.pi)
        d = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        o = rng.normal(0, 0.1, 3)
        t, cosi = raycast.ground_hit(p, bounds, o[0], o[1], o[2], d[0], d[1], d[2], 80.0)
        ts = np.arange(0.0, min(t, 80.0), 0.01)
        above = o[2] + d[2] * ts - np.array([frame_height(p, o[0] + d[0] * s, o[1] + d[1] * s) for s in ts])
        assert (above > -1e-6).all()                     # nothing crossed before the reported hit
        if np.isfinite(t):
            hits += 1
            q = o + t * d
            assert q[2] == pytest.approx(frame_height(p, q[0], q[1]), abs=1e-6)
            assert 0.0 < cosi <= 1.0
    assert hits > 100


def test_ground_hit_on_a_plane_is_exact():
    plane = RoadSurface(0.03, 0.0, 1.0, 0.0, 0.0, 1e3, 0.0, 0.0, 0.0, 25.0)   # h = 0.03 x
    p = plane.packed(0.0, 0.0, 0.0, 1.73)
    o, d = np.array([0.0, 0.0, 0.0]), np.array([0.97, 0.1, -0.2])
    d /= np.linalg.norm(d)
    t, cosi = raycast.ground_hit(p, np.array([-5.0, 2.0, 0.04]), *o, *d, 80.0)
    want = -1.73 / (d[2] - 0.03 * d[0])                                         # o_z + t d_z = 0.03 t d_x - 1.73
    assert t == pytest.approx(want, rel=1e-9)
    n = np.array([-0.03, 0.0, 1.0]) / math.hypot(0.03, 1.0)
    assert cosi == pytest.approx(abs(n @ d), rel=1e-6)


def test_sheared_box_intersection_matches_a_marched_ray():
    """A box tilted to the ground slope: bottom and top faces follow z - sx x - sy y, sides vertical."""
    g = np.zeros(raycast.NGEOM)
    g[[raycast.CX, raycast.CY, raycast.CZ, raycast.HX, raycast.HY, raycast.HZ]] = 6.0, 1.0, -1.2, 3.0, 1.5, 0.4
    g[raycast.COS], g[raycast.SIN] = math.cos(0.3), math.sin(0.3)
    g[raycast.SHEAR_X], g[raycast.SHEAR_Y] = 0.06, -0.04

    def inside(q):
        qx, qy, qz = q[..., 0] - g[0], q[..., 1] - g[1], q[..., 2] - g[2]
        lx = g[raycast.COS] * qx + g[raycast.SIN] * qy
        ly = -g[raycast.SIN] * qx + g[raycast.COS] * qy
        lz = qz - g[raycast.SHEAR_X] * qx - g[raycast.SHEAR_Y] * qy
        return (np.abs(lx) <= g[3]) & (np.abs(ly) <= g[4]) & (np.abs(lz) <= g[5])

    rng = np.random.default_rng(2)
    found = 0
    ts = np.arange(0.0, 20.0, 1e-3)
    for _ in range(200):
        target = g[:3] + rng.uniform(-1, 1, 3) * (3.5, 2.0, 0.7)
        o = np.array([0.0, 0.0, 0.0])
        d = target - o
        d /= np.linalg.norm(d)
        t0, _, cosi = raycast._intersect(raycast.BOX, g, *o, *d)
        marched = inside(o + ts[:, None] * d)
        if marched.any():
            found += 1
            assert t0 == pytest.approx(ts[np.argmax(marched)], abs=2e-3)
            assert 0.0 < cosi <= 1.0
        else:
            assert not np.isfinite(t0)
    assert found > 50


def test_scans_lie_on_the_road_surface_in_the_world_frame():
    """Road points, moved into the world with the scan's pose, lie on the drawn surface; sidewalks stand a kerb
    above it; cars touch it. With camber and vertical curves a level plane through the ego does not fit."""
    sen = SensorConfig.from_options({"roll_std": 0.0, "pitch_std": 0.0}, azimuth_steps=1024)
    road = {"grade_std": 0.0, "curve_grade": 0.03, "curve_length": [150.0, 150.0], "camber": [0.03, 0.03],
            "side_slope": [-0.06, -0.06]}
    sim = ScanSimulator(0, 20, seed=0, sensor=sen, road=road)
    pts, lab = sim.scan(7)
    pose = sim.pose(7)
    w = pts[:, :3].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
    above = w[:, 2] - sim.scene.surface.height(w[:, 0], w[:, 1])
    sem = lab & 0xFFFF
    road_pts = sem == 40
    assert road_pts.sum() > 2000
    assert np.median(np.abs(above[road_pts])) < 0.02
    ego_z = pose[2, 3] - sen.height
    far = road_pts & (np.hypot(pts[:, 0], pts[:, 1]) > 20)
    assert np.median(np.abs(w[far, 2] - ego_z)) > 0.1          # the surface is not level
    side = sem == 48
    assert side.sum() > 200 and 0.06 < np.median(above[side]) < 0.2
    for inst in np.unique(lab[sem == 10] >> 16)[:5]:
        car = (sem == 10) & ((lab >> 16) == inst)
        if car.sum() > 50:
            assert -0.1 < above[car].min() < 0.4


def test_flat_road_and_options_are_checked():
    flat = RoadProfile.from_options("flat").draw(np.random.default_rng(0), 0.0, 5.0)
    assert flat.flat() and not RoadProfile().draw(np.random.default_rng(0), 0.0, 5.0).flat()
    for bad, match in [({"camber": 0.02}, "road.camber"), ({"grade": 0.1}, "unknown keys"),
                       ({"side_scale": -1}, "road.side_scale"), ({"side_slope": [0.1, -0.1]}, "road.side_slope"),
                       ("steep", "road: expected"), ({"camber": [0.0, 0.5]}, "not streets"),
                       ({"curve_grade": 0.5}, "not streets")]:
        with pytest.raises(ConfigError, match=match):
            RoadProfile.from_options(bad)
    assert RoadProfile.from_options({"camber": [0.02, 0.02]}).camber == (0.02, 0.02)
