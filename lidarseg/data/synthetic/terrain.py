"""The road surface: longitudinal grade with rolling vertical curves, cross-slope (camber) and roadside slopes.

World frame of `scene.py` (the street runs along +x; metres). The ground height is

    h(x, y) = grade x + amp sin(k x + phase)                                     (along the street)
            - camber d                                         for d <= road_half  (crowned carriageway)
            - camber road_half + side_s L tanh((d - road_half) / L)   for d > road_half  (embankment or cutting)

with d = |y - road_center| and side_s the slope of the side y > road_center (`side_left`) or the other
(`side_right`) at the kerb, levelling off over L metres. Scene primitives are modelled on a flat world (z = 0 the
ground) and placed on this surface by `Scene.drape`: each is lifted by h at its centre, and boxes are sheared so that
their bottom and top follow the local slope while their sides stay vertical (raycast's SHEAR_X/SHEAR_Y).
`RoadProfile` holds the ranges a drive is drawn from; `RoadSurface` one drawn surface.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from numba import njit

from ...errors import ConfigError

# packed surface parameters (float64 [NPARAM]) for the numba ray caster
(P_GRADE, P_AMP, P_K, P_PHASE, P_CENTER, P_HALF, P_CAMBER, P_SIDE_L, P_SIDE_R, P_SCALE,
 P_EX, P_EY, P_COS, P_SIN, P_Z0) = range(15)
NPARAM = 15


@dataclass(frozen=True)
class RoadProfile:
    """Ranges a drive's road surface is drawn from (per sequence, from its own random stream).

    grade_std: std of the constant longitudinal grade (rise per metre; clipped at 2.5 std);
    curve_grade: the rolling vertical curves add a grade of up to this much (amplitude x wavenumber);
    curve_length: their wavelength range, metres; camber: cross-slope range of the carriageway (rise per metre,
    falling from the centre line to the kerbs); side_slope: range of the roadside slope at the kerb (negative: the
    roadside falls away); side_scale: metres over which the roadside slope levels off."""

    grade_std: float = 0.015
    curve_grade: float = 0.02
    curve_length: tuple[float, float] = (150.0, 400.0)
    camber: tuple[float, float] = (0.01, 0.03)
    side_slope: tuple[float, float] = (-0.06, 0.04)
    side_scale: float = 25.0

    @classmethod
    def from_options(cls, options) -> "RoadProfile":
        """None -> defaults; "flat" -> a level world (the surface z = 0); a dict of fields -> validated."""
        if options is None:
            return cls()
        if isinstance(options, RoadProfile):
            return options
        if options == "flat":
            return cls(0.0, 0.0, (150.0, 400.0), (0.0, 0.0), (0.0, 0.0), 25.0)
        if not isinstance(options, dict):
            raise ConfigError(f"road: expected 'flat' or a mapping of {[f.name for f in fields(cls)]}, "
                              f"got {options!r}")
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"road: unknown keys {unknown}; valid: {sorted(valid)}")
        kw = {}
        for name, value in options.items():
            if name in ("curve_length", "camber", "side_slope"):
                if not (isinstance(value, (list, tuple)) and len(value) == 2
                        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                        and value[0] <= value[1]):
                    raise ConfigError(f"road.{name}: expected [low, high] numbers with low <= high, got {value!r}")
                kw[name] = (float(value[0]), float(value[1]))
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"road.{name}: expected a number >= 0, got {value!r}")
                kw[name] = float(value)
        prof = cls(**{**asdict(cls()), **kw})
        if prof.curve_length[0] <= 0 or prof.side_scale <= 0:
            raise ConfigError("road: curve_length and side_scale must be > 0 metres")
        if max(abs(v) for v in (*prof.camber, *prof.side_slope, prof.curve_grade)) > 0.2 or prof.grade_std > 0.08:
            raise ConfigError("road: slopes above 0.2 (grade_std above 0.08) are not streets")
        return prof

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def draw(self, rng: np.random.Generator, road_center: float, road_half: float) -> "RoadSurface":
        """One drive's surface (for the carriageway `road_center` +- `road_half`, metres)."""
        grade = float(np.clip(rng.standard_normal(), -2.5, 2.5) * self.grade_std)
        wavelength = float(rng.uniform(*self.curve_length))
        k = 2 * math.pi / wavelength
        amp = float(rng.uniform(0.0, 1.0)) * self.curve_grade / k
        phase = float(rng.uniform(0, 2 * math.pi))
        camber = float(rng.uniform(*self.camber))
        side = rng.uniform(*self.side_slope, size=2)
        return RoadSurface(grade, amp, k, phase, float(road_center), float(road_half), camber, float(side[0]),
                           float(side[1]), float(self.side_scale))


@dataclass(frozen=True)
class RoadSurface:
    """One drawn road surface (see the module docstring); `height` and `gradient` work on numpy arrays."""

    grade: float
    amp: float
    k: float
    phase: float
    road_center: float
    road_half: float
    camber: float
    side_left: float
    side_right: float
    side_scale: float

    def packed(self, ex: float = 0.0, ey: float = 0.0, yaw: float = 0.0, z0: float = 0.0) -> np.ndarray:
        """float64 [NPARAM] for the ray caster, which works in a level frame centred at world (ex, ey), rotated by
        `yaw`, with the world height z0 at its origin (the frame's z = world height - z0)."""
        p = np.zeros(NPARAM)
        p[[P_GRADE, P_AMP, P_K, P_PHASE, P_CENTER, P_HALF, P_CAMBER, P_SIDE_L, P_SIDE_R, P_SCALE]] = (
            self.grade, self.amp, self.k, self.phase, self.road_center, self.road_half, self.camber,
            self.side_left, self.side_right, self.side_scale)
        p[[P_EX, P_EY, P_COS, P_SIN, P_Z0]] = ex, ey, math.cos(yaw), math.sin(yaw), z0
        return p

    def height(self, x, y) -> np.ndarray:
        """World ground height (metres) at world (x, y) (arrays broadcast together)."""
        x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return _heights(self.packed(), x.ravel(), y.ravel()).reshape(x.shape)

    def gradient(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(dh/dx, dh/dy) at world (x, y): rise per metre."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        dy = y - self.road_center
        d = np.abs(dy)
        sign = np.where(dy > 0, 1.0, -1.0)
        side = np.where(dy > 0, self.side_left, self.side_right)
        inside = d <= self.road_half
        dd = np.where(inside, -self.camber,
                      side / np.cosh(np.maximum(d - self.road_half, 0.0) / self.side_scale) ** 2)
        return self.grade + self.amp * self.k * np.cos(self.k * x + self.phase), sign * dd

    def flat(self) -> bool:
        return self.grade == 0 and self.amp == 0 and self.camber == 0 and self.side_left == 0 \
            and self.side_right == 0


@njit(cache=True, inline="always")
def frame_height(p, x, y):
    """Ground height (metres) at (x, y) of the level frame described by packed parameters p."""
    wx = p[P_EX] + p[P_COS] * x - p[P_SIN] * y
    wy = p[P_EY] + p[P_SIN] * x + p[P_COS] * y
    dy = wy - p[P_CENTER]
    d = abs(dy)
    side = p[P_SIDE_L] if dy > 0.0 else p[P_SIDE_R]
    if d <= p[P_HALF]:
        cross = -p[P_CAMBER] * d
    else:
        cross = -p[P_CAMBER] * p[P_HALF] + side * p[P_SCALE] * math.tanh((d - p[P_HALF]) / p[P_SCALE])
    return p[P_GRADE] * wx + p[P_AMP] * math.sin(p[P_K] * wx + p[P_PHASE]) + cross - p[P_Z0]


@njit(cache=True)
def _heights(p, x, y):
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = frame_height(p, x[i], y[i])
    return out
