"""The simulated spinning LiDAR: a per-laser calibration in the Velodyne style, sensor presets, and the ray table of
one sweep (directions, origins, firing times, ego-body shadow).

The model follows how a Velodyne driver turns a firing into a point: laser l fires at encoder azimuth a and reports
distance d; the point is origin_l(a) + (d + range_offset_l) * dir(elevation_l, a + rot_l), where origin_l holds the
laser's vertical and horizontal offsets from the rotation axis. Seen from the sensor origin, a ring is therefore not
an exact cone (its apparent pitch changes with range) and lasers with different rotational corrections and firing
times do not share one azimuth grid. Points are reported in the sensor frame at each firing (no motion
compensation), as in KITTI's velodyne files.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ...errors import ConfigError

#: Published nominal geometry of the presets (elevations in degrees from the top beam down, or block layout).
#: HDL-64E: two blocks of 32 lasers (upper +2.0 .. -8.33 deg at ~1/3 deg, lower -8.83 .. -24.9 deg at ~1/2 deg);
#: HDL-32E: 32 lasers +10.67 .. -30.67 deg every 4/3 deg; VLP-16: 16 lasers +-15 deg every 2 deg; OS1-128 (gen 1):
#: 128 beams evenly over +-22.5 deg; Pandora (Hesai Pandar40): 40 lasers, +7 .. +2 every 1 deg, +1.67 .. -6 every
#: 1/3 deg, -7 .. -16 every 1 deg.
_PANDAR40 = tuple([7.0, 6.0, 5.0, 4.0, 3.0, 2.0] + [round(5 / 3 - k / 3, 4) for k in range(24)]
                  + [-7.0 - k for k in range(10)])
PRESETS = {
    "hdl64": dict(beams=64, upper_beams=32, fov_up=2.0, upper_low=-8.33, lower_high=-8.83, fov_down=-24.9,
                  azimuth_steps=2048, vert_offset=(0.15, 0.09), rot_spread=5.0, elevation_jitter=0.04,
                  axis_tilt=0.35),
    "hdl32": dict(beams=32, upper_beams=0, fov_up=10.67, fov_down=-30.67, azimuth_steps=2170,
                  vert_offset=(0.0, 0.0), rot_spread=0.0, elevation_jitter=0.0, horiz_offset=0.0, height=1.84),
    "vlp16": dict(beams=16, upper_beams=0, fov_up=15.0, fov_down=-15.0, azimuth_steps=1800,
                  vert_offset=(0.0, 0.0), rot_spread=0.0, elevation_jitter=0.0, horiz_offset=0.0),
    "os1-128": dict(beams=128, upper_beams=0, fov_up=22.5, fov_down=-22.5, azimuth_steps=2048,
                    vert_offset=(0.036, 0.036), rot_spread=1.5, elevation_jitter=0.03, horiz_offset=0.015),
    "pandora-40": dict(beams=40, upper_beams=0, fov_up=7.0, fov_down=-16.0, azimuth_steps=1800,
                       elevations=_PANDAR40, vert_offset=(0.0, 0.0), rot_spread=3.0, elevation_jitter=0.0,
                       horiz_offset=0.04),
}


@dataclass(frozen=True)
class SensorConfig:
    """A spinning LiDAR. Angles in degrees, lengths in metres, times in seconds.

    Nominal elevations: `elevations` when given (top beam first), else `upper_beams` lasers evenly from `fov_up` to
    `upper_low` and the rest evenly from `lower_high` to `fov_down` (upper_beams 0: one even block fov_up..fov_down).
    The unit's calibration (drawn once from `calibration_seed`, fixed for all scans) perturbs each laser: elevation
    jitter (std `elevation_jitter`), rotational correction (uniform +-`rot_spread`), firing time inside the column
    period, vertical offset (`vert_offset` = (upper block, lower block)), horizontal offset (+-`horiz_offset`), range
    offset (std `range_offset`) and noise (`range_noise` +-50 %), intensity gain (std `gain_spread`) and detection
    threshold. Per scan: roll and pitch (std `roll_std`, `pitch_std`, clipped at 2.5 std), optional sweep motion.
    Column j of laser l fires at encoder azimuth 360 (j + 0.5 + firing_l)/azimuth_steps + rot_l, counter-clockwise
    from the front (+x); each ring is stored in increasing azimuth from the front seam (KPRNet's u increasing).
    """

    preset: str = "hdl64"
    beams: int = 64
    upper_beams: int = 32
    fov_up: float = 2.0
    upper_low: float = -8.33
    lower_high: float = -8.83
    fov_down: float = -24.9
    elevations: tuple | None = None
    azimuth_steps: int = 2048
    height: float = 1.73           # sensor above the road (KITTI's mounting height)
    max_range: float = 80.0
    min_range: float = 0.9
    range_noise: float = 0.02      # mean per-laser standard deviation of the range noise
    range_offset: float = 0.015    # std of the per-laser residual range bias
    remission_step: float = 0.01   # remission quantisation (KITTI stores multiples of 0.01)
    elevation_jitter: float = 0.04
    rot_spread: float = 5.0
    vert_offset: tuple = (0.15, 0.09)
    horiz_offset: float = 0.026
    axis_tilt: float = 0.35        # angle between the head's spin axis and the frame's z axis (degrees)
    gain_spread: float = 0.08
    roll_std: float = 0.7
    pitch_std: float = 1.0
    sweep_time: float = 0.1        # one revolution; 0 disables motion during the sweep
    ego_shadow: bool = True        # the ego car's roof and body hide the lowest beams behind and beside the sensor
    calibration_seed: int = 0

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown sensor preset {self.preset!r}; valid: {sorted(PRESETS)}")
        if isinstance(self.beams, bool) or not isinstance(self.beams, int) or self.beams < 2:
            raise ConfigError(f"sensor beams must be an int >= 2, got {self.beams!r}")
        if not isinstance(self.upper_beams, int) or not 0 <= self.upper_beams < self.beams:
            raise ConfigError(f"sensor upper_beams must be in 0..beams-1, got {self.upper_beams!r}")
        if isinstance(self.azimuth_steps, bool) or not isinstance(self.azimuth_steps, int) or self.azimuth_steps < 16:
            raise ConfigError(f"sensor azimuth_steps must be an int >= 16, got {self.azimuth_steps!r}")
        if self.elevations is not None:
            el = np.asarray(self.elevations, float)
            if el.shape != (self.beams,) or not np.all(np.diff(el) < 0) or el.max() >= 90 or el.min() <= -90:
                raise ConfigError(f"sensor elevations must be {self.beams} strictly decreasing angles in (-90, 90) "
                                  "degrees, top beam first")
        elif self.upper_beams:
            if not (self.fov_up > self.upper_low > self.lower_high > self.fov_down > -90.0):
                raise ConfigError("sensor angles must satisfy fov_up > upper_low > lower_high > fov_down > -90 "
                                  f"degrees, got {self.fov_up}, {self.upper_low}, {self.lower_high}, {self.fov_down}")
        elif not 90.0 > self.fov_up > self.fov_down > -90.0:
            raise ConfigError(f"sensor angles must satisfy 90 > fov_up > fov_down > -90 degrees, got {self.fov_up}, "
                              f"{self.fov_down}")
        if not 0 < self.min_range < self.max_range:
            raise ConfigError(f"sensor ranges must satisfy 0 < min_range < max_range, got {self.min_range}, "
                              f"{self.max_range}")
        if self.height <= 0 or self.range_noise < 0 or self.range_offset < 0:
            raise ConfigError("sensor height must be > 0 and range_noise, range_offset >= 0 (metres)")
        if len(tuple(self.vert_offset)) != 2:
            raise ConfigError(f"sensor vert_offset must be (upper block, lower block) metres, got {self.vert_offset!r}")
        for name in ("elevation_jitter", "rot_spread", "horiz_offset", "axis_tilt", "gain_spread", "roll_std",
                     "pitch_std", "sweep_time"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ConfigError(f"sensor {name} must be a number >= 0, got {v!r}")
        object.__setattr__(self, "vert_offset", tuple(float(v) for v in self.vert_offset))
        if self.elevations is not None:
            object.__setattr__(self, "elevations", tuple(float(v) for v in self.elevations))

    @classmethod
    def preset_config(cls, name: str, **overrides) -> "SensorConfig":
        """The preset `name` (hdl64, hdl32, vlp16, os1-128, pandora-40) with `overrides` applied."""
        if name not in PRESETS:
            raise ConfigError(f"unknown sensor preset {name!r}; valid: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    def nominal_elevations(self) -> np.ndarray:
        """Published beam elevations in degrees, float64 [beams], from the top beam (row 0) down."""
        if self.elevations is not None:
            return np.asarray(self.elevations, np.float64)
        if not self.upper_beams:
            return np.linspace(self.fov_up, self.fov_down, self.beams)
        up = np.linspace(self.fov_up, self.upper_low, self.upper_beams)
        low = np.linspace(self.lower_high, self.fov_down, self.beams - self.upper_beams)
        return np.concatenate([up, low])

    def calibration(self) -> "LaserCalibration":
        """This unit's per-laser calibration (deterministic in `calibration_seed`)."""
        return LaserCalibration.draw(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vert_offset"] = list(self.vert_offset)
        if self.elevations is not None:
            d["elevations"] = list(self.elevations)
        return d

    @classmethod
    def from_options(cls, sensor=None, **overrides) -> "SensorConfig":
        """A SensorConfig from None, a preset name, a SensorConfig or a dict of fields (a `preset` key starts from
        that preset), with `overrides` applied."""
        if sensor is None:
            fields_ = {}
        elif isinstance(sensor, str):
            fields_ = {"preset": sensor}
        elif isinstance(sensor, SensorConfig):
            fields_ = sensor.to_dict()
        elif isinstance(sensor, dict):
            fields_ = dict(sensor)
        else:
            raise ConfigError(f"sensor must be a preset name, a SensorConfig or a dict, got {type(sensor).__name__}")
        fields_.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(fields_) - known)
        if unknown:
            raise ConfigError(f"unknown sensor options {unknown}; valid: {sorted(known)}")
        name = fields_.pop("preset", "hdl64")
        if name not in PRESETS:
            raise ConfigError(f"unknown sensor preset {name!r}; valid: {sorted(PRESETS)}")
        if isinstance(sensor, SensorConfig):
            return cls(preset=name, **fields_)
        return cls.preset_config(name, **fields_)


@dataclass(frozen=True)
class LaserCalibration:
    """Per-laser constants of one unit, arrays [beams] in row order (top beam first): elevation, rot (rotational
    correction) in degrees; firing (fraction of a column period); vert, horiz (offsets from the axis), range_offset,
    range_noise in metres; gain (intensity gain, ~1); threshold (detection threshold factor, ~1); tilt_azimuth:
    direction (radians) towards which the spin axis leans."""

    elevation: np.ndarray
    rot: np.ndarray
    firing: np.ndarray
    vert: np.ndarray
    horiz: np.ndarray
    range_offset: np.ndarray
    range_noise: np.ndarray
    gain: np.ndarray
    threshold: np.ndarray = field(repr=False)
    tilt_azimuth: float = 0.0

    @classmethod
    def draw(cls, s: SensorConfig) -> "LaserCalibration":
        rng = np.random.default_rng([int(s.calibration_seed), s.beams, 90210])
        n = s.beams
        nominal = s.nominal_elevations()
        el = nominal + s.elevation_jitter * np.clip(rng.standard_normal(n), -2.5, 2.5)
        # keep the ring order: at least 40 % of the nominal gap between neighbours
        gaps = -np.diff(nominal)
        for i in range(1, n):
            el[i] = min(el[i], el[i - 1] - 0.6 * gaps[i - 1])
        # the HDL-64E's lasers sit in columns around the head: rotational corrections in a few groups
        groups = np.array([-1.0, -1 / 3, 1 / 3, 1.0])
        rot = s.rot_spread * (groups[rng.integers(0, 4, n)] + 0.08 * rng.standard_normal(n))
        firing = (np.arange(n) % 32 if s.upper_beams else np.arange(n)) / max(n if not s.upper_beams else 32, 1)
        firing = firing[rng.permutation(n)]
        upper = np.arange(n) < (s.upper_beams or n)
        vert = np.where(upper, s.vert_offset[0], s.vert_offset[1]) * (1 + 0.05 * rng.standard_normal(n))
        horiz = s.horiz_offset * rng.choice([-1.0, 1.0], n)
        range_offset = s.range_offset * rng.standard_normal(n)
        range_noise = s.range_noise * rng.uniform(0.5, 1.5, n)
        gain = np.clip(1 + s.gain_spread * rng.standard_normal(n), 0.6, 1.4)
        threshold = np.clip(1 + 0.15 * rng.standard_normal(n), 0.6, 1.5)
        return cls(el, rot, firing, vert, horiz, range_offset, range_noise, gain, threshold,
                   float(rng.uniform(0, 2 * np.pi)))


@dataclass
class SweepRays:
    """The rays of one sweep in firing order, arrays [H, W] (H beams, W azimuth steps, each ring sorted by azimuth
    from the front seam): `origin`, `direction` [H,W,3] in the sensor frame (metres, unit vectors), `time` seconds
    after the seam firing, `azimuth` radians in [0, 2 pi), `shadow` bool (ray hidden by the ego car's body)."""

    origin: np.ndarray
    direction: np.ndarray
    time: np.ndarray
    azimuth: np.ndarray
    shadow: np.ndarray


# The ego car's roof in the sensor frame (box centre x, y, z, half sizes, metres): the sensor sits on a rack about
# 0.3 m above the front part of the roof, so the roof hides the lowest beams behind and beside it (about 55 % of the
# bottom ring, less for higher rings); the bonnet is too low to hide anything in front.
_EGO_BOXES = np.array([[-0.9, 0.0, -0.43, 1.1, 0.9, 0.12]])


def _box_hits(origin, direction, boxes) -> np.ndarray:
    """bool [...]: the ray from origin along direction hits one of the axis-aligned boxes (slab test)."""
    hit = np.zeros(origin.shape[:-1], bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in boxes:
            c, h = b[:3], b[3:]
            t0 = np.full(origin.shape[:-1], -np.inf)
            t1 = np.full(origin.shape[:-1], np.inf)
            for k in range(3):
                o = origin[..., k] - c[k]
                d = direction[..., k]
                ta, tb = (-h[k] - o) / d, (h[k] - o) / d
                inside = np.abs(o) <= h[k]        # a ray parallel to the slab: always or never inside it
                lo = np.where(d != 0, np.minimum(ta, tb), np.where(inside, -np.inf, np.inf))
                hi = np.where(d != 0, np.maximum(ta, tb), np.where(inside, np.inf, -np.inf))
                t0 = np.maximum(t0, lo)
                t1 = np.minimum(t1, hi)
            hit |= (t0 <= t1) & (t1 > 0)
    return hit


def sweep_rays(sensor: SensorConfig, calib: LaserCalibration | None = None) -> SweepRays:
    """The ray table of one sweep of `sensor` (sensor frame, before the per-scan roll and pitch)."""
    cal = calib or sensor.calibration()
    H, W = sensor.beams, sensor.azimuth_steps
    enc = 2 * np.pi * (np.arange(W)[None, :] + 0.5 + cal.firing[:, None]) / W        # encoder angle at firing
    az = np.mod(enc + np.deg2rad(cal.rot)[:, None], 2 * np.pi)
    order = np.argsort(az, axis=1, kind="stable")
    az = np.take_along_axis(az, order, axis=1)
    enc = np.take_along_axis(enc, order, axis=1)
    t = np.mod(enc, 2 * np.pi) / (2 * np.pi) * sensor.sweep_time
    el = np.deg2rad(cal.elevation)[:, None]
    direction = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)
    # horizontal offset: perpendicular to the beam in the horizontal plane; vertical offset: along +z
    h = cal.horiz[:, None]
    origin = np.stack(np.broadcast_arrays(-h * np.sin(az), h * np.cos(az), cal.vert[:, None] + 0 * az), -1)
    # the head spins about an axis tilted by axis_tilt from the frame's z axis (towards azimuth tilt_azimuth), so a
    # ring's pitch in the sensor frame varies with azimuth by +-axis_tilt
    tilt = np.deg2rad(sensor.axis_tilt)
    if tilt:
        R = _axis_tilt_matrix(tilt, cal.tilt_azimuth)
        direction = direction @ R.T
        origin = origin @ R.T
    shadow = _box_hits(origin, direction, _EGO_BOXES) if sensor.ego_shadow else np.zeros((H, W), bool)
    return SweepRays(origin, direction, t, az, shadow)


def _axis_tilt_matrix(tilt: float, azimuth: float) -> np.ndarray:
    """Rotation by `tilt` radians about the horizontal axis perpendicular to `azimuth` (Rodrigues)."""
    k = np.array([-np.sin(azimuth), np.cos(azimuth), 0.0])
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(tilt) * K + (1 - np.cos(tilt)) * K @ K


def tilt_matrix(roll: float, pitch: float) -> np.ndarray:
    """Rotation [3,3] from the sensor frame to the level frame (yaw-aligned, z up) for roll and pitch in radians
    (roll about +x, then pitch about +y; positive pitch lifts the front)."""
    cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, -sp], [0, 1, 0], [sp, 0, cp]])
    return ry @ rx
