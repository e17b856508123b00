"""Point augmentation for training, applied to the points before projection.

Config (every part optional; a part that is present is on unless it says `enabled: false`):

    augmentation:
      enabled: true
      seed: null            # null: torch.initial_seed() (set by torch.manual_seed; per DataLoader worker and epoch)
      rotation: {max_degrees: 180.0}     # uniform rotation about z in [-max, max]
      flip: {x: 0.5, y: 0.5}             # probability of x -> -x, of y -> -y
      scale: {min: 0.95, max: 1.05}      # one uniform factor for x, y, z
      jitter: {sigma: 0.01, clip: 0.05}  # Gaussian noise on x, y, z (metres), clipped to +-clip
      dropout: {max_fraction: 0.1}       # drop a uniform fraction in [0, max] of the points

Random streams: `rng_for(base_seed, epoch, index)` seeds numpy's PCG64 from the triple, so a sample's augmentation
depends only on (seed, epoch, index): reproducible, independent of the number of DataLoader workers, and distinct for
every sample and epoch. Datasets keep the epoch in a `SharedEpoch`, which persistent DataLoader workers read. Dropped
points are not removed: `__call__` returns a `keep` mask and the projection gives them
px = py = -1, so one prediction per original point stays possible.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

_PARTS = {
    "rotation": {"enabled": True, "max_degrees": 180.0},
    "flip": {"enabled": True, "x": 0.5, "y": 0.5},
    "scale": {"enabled": True, "min": 0.95, "max": 1.05},
    "jitter": {"enabled": True, "sigma": 0.01, "clip": 0.05},
    "dropout": {"enabled": True, "max_fraction": 0.1},
}
_TOP = ("enabled", "seed", *_PARTS)


def rng_for(base_seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of sample `index` in `epoch` under `base_seed`."""
    return np.random.default_rng([int(base_seed) % (1 << 63), int(epoch), int(index)])


class SharedEpoch:
    """A dataset's current epoch in shared memory: DataLoader workers started once (persistent_workers) see every
    later `set` of the main process, so their samples follow (seed, epoch, index) exactly like fresh workers'.
    Pickled outside process start-up (a copy, a checkpoint) it becomes an independent counter of the same value."""

    def __init__(self, epoch: int = 0):
        import multiprocessing
        self._value = multiprocessing.RawValue("q", int(epoch))

    def get(self) -> int:
        return int(self._value.value)

    def set(self, epoch: int) -> None:
        self._value.value = int(epoch)

    def __getstate__(self):
        from multiprocessing.context import get_spawning_popen
        return {"value": self._value} if get_spawning_popen() is not None else {"epoch": self.get()}

    def __setstate__(self, state):
        if "value" in state:
            self._value = state["value"]
        else:
            self.__init__(state["epoch"])


class EpochStream:
    """Mixin of datasets whose samples depend on the epoch: `set_epoch(e)` selects epoch e's random stream and, the
    epoch living in a `SharedEpoch` (set `self._epoch = SharedEpoch()` in `__init__`), also reaches DataLoader
    workers started earlier (`epoch_shared`: the trainer keeps such workers across epochs)."""

    epoch_shared = True
    _epoch: SharedEpoch

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of `epoch` (call before each epoch)."""
        self._epoch.set(epoch)


def parse_part(name: str, sub, defaults: dict) -> dict | None:
    """The options of part `name` of the augmentation config (`sub`: None/false = absent, true = defaults, or a
    mapping) merged over `defaults` (which hold `enabled`); None when absent or disabled. Unknown keys and other
    types are a ConfigError naming augmentation.<name>."""
    if sub is None or sub is False:
        return None
    if sub is True:
        sub = {}
    if not isinstance(sub, dict):
        raise ConfigError(f"augmentation.{name}: expected a mapping or true/false, got {sub!r}")
    bad = sorted(set(sub) - set(defaults))
    if bad:
        raise ConfigError(f"augmentation.{name}: unknown keys {bad}; valid keys: {list(defaults)}")
    merged = {**defaults, **sub}
    return merged if merged.pop("enabled") else None


def _number(value, key: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"augmentation.{key}: expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


class PointAugmentation:
    """Random rotation about z, flips, scaling, jitter and point dropout of points float32 [N,4]."""

    def __init__(self, cfg: dict | None = None):
        cfg = {} if cfg is None else cfg
        if not isinstance(cfg, dict):
            raise ConfigError(f"augmentation: expected a mapping, got {type(cfg).__name__}")
        unknown = sorted(set(cfg) - set(_TOP))
        if unknown:
            raise ConfigError(f"augmentation: unknown keys {unknown}; valid keys: {list(_TOP)}")
        self.enabled = bool(cfg.get("enabled", True))
        seed = cfg.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"augmentation.seed: expected an integer or null, got {seed!r}")
        self.seed = seed
        self.parts = {}
        for name, defaults in _PARTS.items():
            merged = parse_part(name, cfg.get(name), defaults)
            if merged is not None:
                self.parts[name] = merged
        self._validate()

    def _validate(self):
        p = self.parts
        if "rotation" in p:
            p["rotation"]["max_degrees"] = _number(p["rotation"]["max_degrees"], "rotation.max_degrees", 0, 180)
        if "flip" in p:
            for k in ("x", "y"):
                p["flip"][k] = _number(p["flip"][k], f"flip.{k}", 0, 1)
        if "scale" in p:
            lo = _number(p["scale"]["min"], "scale.min", 1e-3, 1e3)
            hi = _number(p["scale"]["max"], "scale.max", 1e-3, 1e3)
            if lo > hi:
                raise ConfigError(f"augmentation.scale: min ({lo}) must not exceed max ({hi})")
        if "jitter" in p:
            _number(p["jitter"]["sigma"], "jitter.sigma", 0, 10)
            _number(p["jitter"]["clip"], "jitter.clip", 0, 100)
        if "dropout" in p:
            _number(p["dropout"]["max_fraction"], "dropout.max_fraction", 0, 1)

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.parts)

    def __repr__(self):
        return f"PointAugmentation(enabled={self.enabled}, seed={self.seed}, parts={self.parts})"

    def __call__(self, points: np.ndarray, rng: np.random.Generator):
        """points float32 [N,4] -> (augmented copy float32 [N,4], keep bool [N] or None when no dropout).
        The remission column is not changed; the point order is kept."""
        points = np.array(points, dtype=np.float32, copy=True)
        if not self.active:
            return points, None
        p = self.parts
        xyz = points[:, :3].astype(np.float64)
        if "rotation" in p:
            a = np.deg2rad(rng.uniform(-p["rotation"]["max_degrees"], p["rotation"]["max_degrees"]))
            c, s = np.cos(a), np.sin(a)
            xyz[:, :2] = xyz[:, :2] @ np.array([[c, s], [-s, c]])
        if "flip" in p:
            if rng.random() < p["flip"]["x"]:
                xyz[:, 0] *= -1
            if rng.random() < p["flip"]["y"]:
                xyz[:, 1] *= -1
        if "scale" in p:
            xyz *= rng.uniform(p["scale"]["min"], p["scale"]["max"])
        if "jitter" in p:
            clip = p["jitter"]["clip"]
            xyz += np.clip(rng.normal(0.0, p["jitter"]["sigma"], xyz.shape), -clip, clip)
        points[:, :3] = xyz
        keep = None
        if "dropout" in p:
            fraction = rng.uniform(0.0, p["dropout"]["max_fraction"])
            keep = rng.random(points.shape[0]) >= fraction
        return points, keep
