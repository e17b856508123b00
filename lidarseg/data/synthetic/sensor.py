"""The simulated spinning LiDAR: an HDL-64E-like beam table, ray directions and the return model's constants."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...errors import ConfigError


@dataclass(frozen=True)
class SensorConfig:
    """An HDL-64E-like sensor. Angles in degrees, lengths in metres.

    The upper block (`upper_beams` lasers) spans `fov_up` down to `upper_low`, the lower block `lower_high` down to
    `fov_down`, each evenly spaced, so the upper block is denser (about 1/3 deg) than the lower (about 1/2 deg).
    Azimuth column j (0..azimuth_steps-1) looks at azimuth 360*(j+0.5)/azimuth_steps degrees, counter-clockwise
    from the front (+x), so a ring stored column after column sweeps KPRNet's u = 0.5*(-atan2(y,-x)/pi + 1)
    upwards from the front seam.
    """

    beams: int = 64
    upper_beams: int = 32
    fov_up: float = 2.0
    upper_low: float = -8.33
    lower_high: float = -8.83
    fov_down: float = -24.9
    azimuth_steps: int = 2048
    height: float = 1.73           # sensor above the road, metres (KITTI's mounting height)
    max_range: float = 80.0
    min_range: float = 0.9
    range_noise: float = 0.02      # standard deviation of the range noise, metres
    remission_step: float = 0.01   # remission quantisation (KITTI stores multiples of 0.01)

    def __post_init__(self):
        if not isinstance(self.beams, int) or self.beams < 2:
            raise ConfigError(f"sensor beams must be an int >= 2, got {self.beams!r}")
        if not 0 < self.upper_beams < self.beams:
            raise ConfigError(f"sensor upper_beams must be in 1..beams-1, got {self.upper_beams!r}")
        if not isinstance(self.azimuth_steps, int) or self.azimuth_steps < 16:
            raise ConfigError(f"sensor azimuth_steps must be an int >= 16, got {self.azimuth_steps!r}")
        if not (self.fov_up > self.upper_low > self.lower_high > self.fov_down > -90.0):
            raise ConfigError("sensor angles must satisfy fov_up > upper_low > lower_high > fov_down > -90 degrees, "
                              f"got {self.fov_up}, {self.upper_low}, {self.lower_high}, {self.fov_down}")
        if not 0 < self.min_range < self.max_range:
            raise ConfigError(f"sensor ranges must satisfy 0 < min_range < max_range, got {self.min_range}, "
                              f"{self.max_range}")
        if self.height <= 0 or self.range_noise < 0:
            raise ConfigError("sensor height must be > 0 and range_noise >= 0 (metres)")

    def elevations(self) -> np.ndarray:
        """Beam elevations in degrees, float64 [beams], from the top beam (row 0) down."""
        lower = self.beams - self.upper_beams
        up = np.linspace(self.fov_up, self.upper_low, self.upper_beams)
        low = np.linspace(self.lower_high, self.fov_down, lower)
        return np.concatenate([up, low])

    def azimuths(self) -> np.ndarray:
        """Column azimuths in radians, float64 [azimuth_steps], counter-clockwise from +x, in (0, 2*pi)."""
        return 2.0 * np.pi * (np.arange(self.azimuth_steps) + 0.5) / self.azimuth_steps

    def directions(self) -> np.ndarray:
        """Unit ray directions in the sensor frame, float64 [beams, azimuth_steps, 3]."""
        el = np.deg2rad(self.elevations())[:, None]
        az = self.azimuths()[None, :]
        return np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), axis=-1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_options(cls, sensor=None, **overrides) -> "SensorConfig":
        """A SensorConfig from None, a SensorConfig or a dict of fields, with `overrides` applied."""
        if sensor is None:
            fields = {}
        elif isinstance(sensor, SensorConfig):
            fields = sensor.to_dict()
        elif isinstance(sensor, dict):
            fields = dict(sensor)
        else:
            raise ConfigError(f"sensor must be a SensorConfig or a dict, got {type(sensor).__name__}")
        fields.update({k: v for k, v in overrides.items() if v is not None})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(f"unknown sensor options {unknown}; valid: {sorted(known)}")
        return cls(**fields)
