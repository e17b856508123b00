"""Point cloud -> range image projections, compiled with numba.

- `spherical_projection`: RangeNet++'s projection (rangenet.md §1.3): pixel from yaw/pitch in float32, floor then
  clamp, the nearest point wins each pixel.
- `scan_unfolding`: KPRNet's projection (kprnet.md §1.3): row = ring index recovered from the point order, column from
  the azimuth with the front at the image borders.
- `SensorGeometry`: height, width and vertical field of view of a sensor, read from config.

Both projections take points float32 [N,4] (x, y, z in metres, remission) and keep every point in the per-point
arrays: points that cannot be projected get pixel -1 instead of raising, so one prediction per point stays possible.
See docs/data.md for the exact conventions and the documented differences from the published code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numba
import numpy as np
from numba import njit, prange

from ..errors import ConfigError, DataError

__all__ = ["SensorGeometry", "RangeProjection", "UnfoldedScan", "spherical_projection", "scan_unfolding",
           "normalised_input", "SENSOR_PRESETS"]


# ----------------------------------------------------------------------------------------------------------------
# sensor geometry

@dataclass(frozen=True)
class SensorGeometry:
    """Range image size (pixels) and vertical field of view (degrees, up > down) of a spherical projection."""
    height: int = 64
    width: int = 2048
    fov_up: float = 3.0
    fov_down: float = -25.0

    def __post_init__(self):
        for key in ("height", "width"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"sensor.{key}: expected a positive integer, got {value!r}")
        for key in ("fov_up", "fov_down"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(value) or not -90.0 <= value <= 90.0:
                raise ConfigError(f"sensor.{key}: expected degrees in [-90, 90], got {value!r}")
        if not self.fov_up > self.fov_down:
            raise ConfigError(f"sensor: fov_up ({self.fov_up}) must be greater than fov_down ({self.fov_down})")

    @classmethod
    def from_config(cls, cfg=None, source: str = "sensor") -> "SensorGeometry":
        """Build from None (HDL-64E defaults), a SensorGeometry, a preset name (see SENSOR_PRESETS) or a dict with
        keys height, width, fov_up, fov_down (missing keys keep the defaults; `preset` starts from a preset)."""
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        if isinstance(cfg, str):
            if cfg not in SENSOR_PRESETS:
                raise ConfigError(f"{source}: unknown sensor preset {cfg!r}; valid: {sorted(SENSOR_PRESETS)}")
            return SENSOR_PRESETS[cfg]
        if not isinstance(cfg, dict):
            raise ConfigError(f"{source}: expected a mapping or a preset name, got {type(cfg).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(cfg) - set(valid) - {"preset"})
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; valid keys: {valid + ['preset']}")
        base = cls.from_config(cfg["preset"], source) if "preset" in cfg else cls()
        values = {k: cfg.get(k, getattr(base, k)) for k in valid}
        return cls(**values)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Common sensors (height = number of beams). Widths are the usual training choices.
SENSOR_PRESETS = {
    "hdl64": SensorGeometry(64, 2048, 3.0, -25.0),      # Velodyne HDL-64E (SemanticKITTI)
    "hdl32": SensorGeometry(32, 1024, 10.67, -30.67),   # Velodyne HDL-32E (nuScenes)
    "vlp16": SensorGeometry(16, 1024, 15.0, -15.0),     # Velodyne VLP-16
    "os1-128": SensorGeometry(128, 2048, 22.5, -22.5),  # Ouster OS1-128
    "pandora40": SensorGeometry(40, 1800, 7.0, -16.0),  # Hesai Pandora 40-beam (SemanticPOSS)
}


# ----------------------------------------------------------------------------------------------------------------
# results

@dataclass
class RangeProjection:
    """Result of `spherical_projection` (H x W image, N points).

    range float32 [H,W] metres, xyz float32 [H,W,3], remission float32 [H,W]: values of the winning (nearest) point,
    -1 where empty. idx int32 [H,W]: index of the winning point, -1 where empty. px, py int64 [N]: pixel column/row of
    every point, -1 for points that are not projected. unproj_range float32 [N]: range of every point in metres
    (as computed, also for points that are not projected).
    """
    range: np.ndarray
    xyz: np.ndarray
    remission: np.ndarray
    idx: np.ndarray
    px: np.ndarray
    py: np.ndarray
    unproj_range: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """bool [H,W]: the pixel holds a point (`idx >= 0`; RangeNet++ uses `idx > 0`, see docs/data.md)."""
        return self.idx >= 0

    @property
    def projected(self) -> np.ndarray:
        """bool [N]: the point was projected (px >= 0)."""
        return self.px >= 0


@dataclass
class UnfoldedScan:
    """Result of `scan_unfolding` (H x W image, N points), in KPRNet's conventions.

    inv_depth float32 [H,W]: 1/range of the winning (nearest) point, 0 where empty. reflectance float32 [H,W]: its
    remission, 0 where empty. idx int32 [H,W]: index of the winning point, -1 where empty.
    px float32 [N]: sub-pixel column u*W - 0.001, in [-0.001, W); py float32 [N]: ring index (row) as a float.
    col, row int64 [N]: integer pixel of every point (col = floor(px), -1 wrapped to W-1; row = py).
    Points that are not projected (non-finite values, zero range) have px = py = col = row = -1.
    num_rings: rings found (largest ring index + 1, before clipping); num_clipped: points whose ring index was >= H
    and were clipped to the last row.
    """
    inv_depth: np.ndarray
    reflectance: np.ndarray
    idx: np.ndarray
    px: np.ndarray
    py: np.ndarray
    col: np.ndarray
    row: np.ndarray
    num_rings: int
    num_clipped: int

    @property
    def mask(self) -> np.ndarray:
        """bool [H,W]: the pixel holds a point."""
        return self.idx >= 0


# ----------------------------------------------------------------------------------------------------------------
# input validation (before any jitted code sees the data)

def _check_points(points, name: str = "points") -> np.ndarray:
    """Return points as C-contiguous float32 [N,4]; [N,3] gets zero remission. Raise DataError otherwise."""
    arr = np.asarray(points)
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{name}: expected a numeric [N,4] array (x, y, z, remission), got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] not in (3, 4):
        raise DataError(f"{name}: expected shape [N,4] (x, y, z, remission) or [N,3], got {list(arr.shape)}")
    if arr.shape[1] == 3:
        arr = np.concatenate([arr, np.zeros((arr.shape[0], 1), arr.dtype)], axis=1)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_keep(keep, n: int) -> np.ndarray:
    if keep is None:
        return np.ones(n, dtype=np.bool_)
    keep = np.asarray(keep)
    if keep.dtype != np.bool_ or keep.shape != (n,):
        raise DataError(f"keep: expected a bool array of shape [{n}], got {keep.dtype} {list(keep.shape)}")
    return np.ascontiguousarray(keep)


def _use_parallel(parallel: bool) -> bool:
    """Numba threads only when asked for, and never inside a torch DataLoader worker: GNU OpenMP is not fork-safe,
    and the workers already use the cores. On a loaded 2-core machine one thread is faster (docs/bench)."""
    if not parallel:
        return False
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover
        return True
    return get_worker_info() is None and numba.get_num_threads() > 1


# ----------------------------------------------------------------------------------------------------------------
# spherical projection (RangeNet++)

# numba's default error model inserts a branch before every float division (ZeroDivisionError), which stops LLVM
# from vectorising the per-point loop; error_model="numpy" (IEEE results) lets it use SIMD.
_JIT = dict(cache=True, error_model="numpy")


@njit(inline="always", **_JIT)
def _atan_unit(t):
    """atan(t) for t in [0, 1], float64, absolute error < 1e-11 (reduction at tan(pi/8), Taylor series to t^25)."""
    big = t > 0.41421356237309503
    s = (t - 1.0) / (t + 1.0) if big else t
    s2 = s * s
    p = 1.0 / 25.0
    for k in range(23, 1, -2):  # unrolled by LLVM: alternating coefficients 1/23, 1/21, ..., 1/3
        p = p * s2 + (1.0 / k if (k // 2) % 2 == 0 else -1.0 / k)
    r = s + s * s2 * p
    return r + 0.7853981633974483 if big else r


@njit(inline="always", **_JIT)
def _atan2(y, x):
    """atan2(y, x) in float64 with IEEE signed-zero conventions, branch-free enough for SIMD."""
    ax = abs(x)
    ay = abs(y)
    swap = ay > ax
    num = ax if swap else ay
    den = ay if swap else ax
    a = _atan_unit(num / den) if den > 0.0 else 0.0
    a = 1.5707963267948966 - a if swap else a
    a = math.pi - a if math.copysign(1.0, x) < 0.0 else a
    return math.copysign(a, y)


@njit(inline="always", **_JIT)
def _yaw_pitch(x, y, z, depth):
    """RangeNet++'s yaw = -atan2(y, x) and pitch = asin(z / depth), float32 in and out.

    The trigonometry runs in float64 and is rounded once to float32, i.e. correctly rounded in all but ~1e-9 of
    cases (numpy's own float32 arctan2 is within 3 ulp); z / depth is the float32 quotient, as in RangeNet++."""
    yaw = -np.float32(_atan2(np.float64(y), np.float64(x)))
    s = np.float64(z / depth)
    s = min(1.0, max(-1.0, s))  # |s| > 1 only through float32 underflow of tiny coordinates
    pitch = np.float32(_atan2(s, math.sqrt((1.0 - s) * (1.0 + s))))
    return yaw, pitch


@njit(**_JIT)
def _project_points(flat, keep, start, stop, width, height, pi32, fd_abs32, fov32, px, py, depth):
    """Pixels of points start..stop-1 (RangeNet++'s float32 arithmetic, floor then clamp) -> px, py (-1 where not
    projected) and depth. `flat` is the [N,4] array raveled: with 1-D indexing LLVM vectorises this loop."""
    w32 = np.float32(width)
    h32 = np.float32(height)
    last_col = np.float32(width - 1)
    last_row = np.float32(height - 1)
    for i in range(start, stop):
        x = flat[4 * i]
        y = flat[4 * i + 1]
        z = flat[4 * i + 2]
        d = np.float32(math.sqrt(x * x + y * y + z * z))
        depth[i] = d
        # no short-circuit operators and no calls, so that the loop vectorises (NaN fails every comparison)
        valid = keep[i] & (d > np.float32(0.0)) & (d < np.float32(np.inf)) & (abs(flat[4 * i + 3]) < np.float32(np.inf))
        # harmless values for the arithmetic below when the point is not projected; the result is discarded
        x = x if valid else np.float32(1.0)
        y = y if valid else np.float32(0.0)
        z = z if valid else np.float32(0.0)
        d = d if valid else np.float32(1.0)
        yaw, pitch = _yaw_pitch(x, y, z, d)
        u = np.float32(0.5) * (yaw / pi32 + np.float32(1.0)) * w32
        v = (np.float32(1.0) - (pitch + fd_abs32) / fov32) * h32
        # floor, then clamp in float before the integer conversion (v is large far outside a narrow FOV)
        u = min(last_col, max(np.float32(0.0), np.floor(u)))
        v = min(last_row, max(np.float32(0.0), np.floor(v)))
        px[i] = np.int64(u) if valid else -1
        py[i] = np.int64(v) if valid else -1


@njit(inline="always", **_JIT)
def _nearest_in_rows(py, px, depth, width, r0, r1, idx):
    """Nearest point per pixel for rows [r0, r1): idx[r, c] = index of the smallest range (smallest index on ties)."""
    for i in range(py.shape[0]):
        r = py[i]
        if r < r0 or r >= r1:
            continue
        c = px[i]
        j = idx[r, c]
        if j < 0 or depth[i] < depth[j]:
            idx[r, c] = i


@njit(inline="always", **_JIT)
def _fill_rows(points, depth, idx, r0, r1, rng, xyz, rem):
    for r in range(r0, r1):
        for c in range(idx.shape[1]):
            j = idx[r, c]
            if j >= 0:
                rng[r, c] = depth[j]
                xyz[r, c, 0] = points[j, 0]
                xyz[r, c, 1] = points[j, 1]
                xyz[r, c, 2] = points[j, 2]
                rem[r, c] = points[j, 3]
            else:
                rng[r, c] = -1.0
                xyz[r, c, 0] = -1.0
                xyz[r, c, 1] = -1.0
                xyz[r, c, 2] = -1.0
                rem[r, c] = -1.0


@njit(parallel=True, **_JIT)
def _spherical_parallel(points, keep, height, width, pi32, fd_abs32, fov32, px, py, depth, idx, rng, xyz, rem,
                        nthreads):
    n = points.shape[0]
    flat = points.reshape(-1)
    chunk = (n + nthreads - 1) // nthreads
    for t in prange(nthreads):
        _project_points(flat, keep, t * chunk, min(n, (t + 1) * chunk), width, height, pi32, fd_abs32, fov32,
                        px, py, depth)
    bands = min(nthreads, height)
    for b in prange(bands):
        r0 = b * height // bands
        r1 = (b + 1) * height // bands
        for r in range(r0, r1):
            for c in range(width):
                idx[r, c] = -1
        _nearest_in_rows(py, px, depth, width, r0, r1, idx)
        _fill_rows(points, depth, idx, r0, r1, rng, xyz, rem)


@njit(**_JIT)
def _spherical_serial(points, keep, height, width, pi32, fd_abs32, fov32, px, py, depth, idx, rng, xyz, rem):
    n = points.shape[0]
    flat = points.reshape(-1)
    _project_points(flat, keep, 0, n, width, height, pi32, fd_abs32, fov32, px, py, depth)
    idx[:] = -1
    _nearest_in_rows(py, px, depth, width, 0, height, idx)
    _fill_rows(points, depth, idx, 0, height, rng, xyz, rem)


def _output_buffers(out: RangeProjection | None, n: int, h: int, w: int):
    """(px, py, depth, idx, range, xyz, remission) for `spherical_projection`: new arrays, or those of `out`."""
    if out is None:
        return (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float32), np.empty((h, w), np.int32),
                np.empty((h, w), np.float32), np.empty((h, w, 3), np.float32), np.empty((h, w), np.float32))
    if not isinstance(out, RangeProjection):
        raise TypeError(f"out: expected a RangeProjection from an earlier call, got {type(out).__name__}")
    want = {"range": ((h, w), np.float32), "xyz": ((h, w, 3), np.float32), "remission": ((h, w), np.float32),
            "idx": ((h, w), np.int32)}
    for name, (shape, dtype) in want.items():
        a = getattr(out, name)
        if a.shape != shape or a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"out.{name}: expected a writable contiguous {np.dtype(dtype).name} array of shape "
                             f"{shape}, got {a.dtype.name} {a.shape}")
    per_point = []
    for name, dtype in (("px", np.int64), ("py", np.int64), ("unproj_range", np.float32)):
        a = getattr(out, name)
        base = a.base if isinstance(a.base, np.ndarray) and a.base.ndim == 1 else a  # the full buffer of a view
        if base.dtype != dtype or base.ndim != 1 or not base.flags.c_contiguous or not base.flags.writeable:
            raise ValueError(f"out.{name}: expected a writable contiguous {np.dtype(dtype).name} vector, "
                             f"got {base.dtype.name} {base.shape}")
        if base.shape[0] < n:  # too short for this scan: grow, with room for slightly larger scans
            base = np.empty(n + n // 4, dtype)
        per_point.append(base[:n])
    return (*per_point, out.idx, out.range, out.xyz, out.remission)


def spherical_projection(points, height: int = 64, width: int = 2048, fov_up: float = 3.0, fov_down: float = -25.0,
                         keep=None, parallel: bool = False, out: RangeProjection | None = None) -> RangeProjection:
    """RangeNet++'s spherical projection of points float32 [N,4] (or [N,3]) onto an H x W range image.

    Per point: range = ||xyz||, yaw = -atan2(y, x), pitch = asin(z / range), all in float32;
    col = clamp(floor(0.5 (yaw/pi + 1) W), 0, W-1), row = clamp(floor((1 - (pitch - fov_down)/fov) H), 0, H-1)
    (front in column W/2, row 0 at the top, points outside the vertical FOV clamped to the first/last row).
    The nearest point wins each pixel (the smallest index among equal ranges).
    Not projected (px = py = -1, still in the per-point arrays): points with non-finite xyz or remission, zero range,
    or `keep[i]` False (bool [N], e.g. point dropout). `parallel`: use numba threads (ignored inside a DataLoader
    worker); one thread takes about 1.2 ms per 120k points.
    `out`: a previous result whose arrays are reused (images of the same H x W, per-point arrays at least N long;
    the result's per-point arrays are views of their first N entries). Writing ~5 MB of fresh output pages costs
    more than the projection itself, so loops over many scans (inference, benchmarks) should pass the last result;
    the returned arrays then share memory with `out`, which must not be used afterwards.
    """
    geometry = SensorGeometry(height, width, fov_up, fov_down)
    pts = _check_points(points)
    keep = _check_keep(keep, pts.shape[0])
    n, h, w = pts.shape[0], geometry.height, geometry.width
    fov_up_rad = geometry.fov_up / 180.0 * math.pi
    fov_down_rad = geometry.fov_down / 180.0 * math.pi
    # RangeNet++ uses |fov_down| + |fov_up|; fov_up - fov_down is the same number when fov_up >= 0 >= fov_down and
    # stays correct for sensors whose field of view lies entirely above or below the horizon.
    fov = fov_up_rad - fov_down_rad
    px, py, depth, idx, rng, xyz, rem = _output_buffers(out, n, h, w)
    args = (pts, keep, h, w, np.float32(math.pi), np.float32(-fov_down_rad), np.float32(fov),
            px, py, depth, idx, rng, xyz, rem)
    if _use_parallel(parallel):
        _spherical_parallel(*args, numba.get_num_threads())
    else:
        _spherical_serial(*args)
    return RangeProjection(range=rng, xyz=xyz, remission=rem, idx=idx, px=px, py=py, unproj_range=depth)


def rows_projection(points, rows, height: int, width: int, keep=None) -> RangeProjection:
    """The spherical projection with each point's image row given (`rows` int [N], e.g. from a sensor's ring
    channel) instead of computed from its elevation: columns, ranges and the points left out are
    `spherical_projection`'s; the nearest point wins each pixel (the smallest index among equal ranges). Points whose
    row lies outside 0..height-1 are not projected (px = py = -1)."""
    proj = spherical_projection(points, height, width, 90.0, -90.0, keep=keep)
    rows = np.asarray(rows)
    n = proj.px.shape[0]
    if rows.shape != (n,) or not np.issubdtype(rows.dtype, np.integer):
        raise DataError(f"rows_projection: expected integer rows [{n}], got {rows.dtype} {list(rows.shape)}")
    ok = (proj.px >= 0) & (rows >= 0) & (rows < height)
    px = np.where(ok, proj.px, -1).astype(np.int64)
    py = np.where(ok, rows, -1).astype(np.int64)
    sel = np.flatnonzero(ok)
    sel = sel[np.lexsort((sel, proj.unproj_range[sel]))]        # nearest first, then the smallest index
    flat, first = np.unique(py[sel] * width + px[sel], return_index=True)
    winners = sel[first]
    pts = np.asarray(points, dtype=np.float32)
    idx = np.full(height * width, -1, np.int32)
    idx[flat] = winners
    rng = np.full(height * width, -1, np.float32)
    rng[flat] = proj.unproj_range[winners]
    xyz = np.full((height * width, 3), -1, np.float32)
    xyz[flat] = pts[winners, :3]
    rem = np.full(height * width, -1, np.float32)
    rem[flat] = pts[winners, 3] if pts.shape[1] > 3 else 0.0
    return RangeProjection(range=rng.reshape(height, width), xyz=xyz.reshape(height, width, 3),
                           remission=rem.reshape(height, width), idx=idx.reshape(height, width), px=px, py=py,
                           unproj_range=proj.unproj_range)


# ----------------------------------------------------------------------------------------------------------------
# scan unfolding (KPRNet)

@njit(**_JIT)
def _unfold(points, height, width, pi32, px, py, col, row, idx, inv_depth, refl):
    n = points.shape[0]
    depth = np.empty(n, np.float32)
    w32 = np.float32(width)
    ring = 0
    prev_u = np.float32(-1.0)  # no previous valid point yet
    num_clipped = 0
    for i in range(n):
        x = points[i, 0]
        y = points[i, 1]
        z = points[i, 2]
        d = np.float32(math.sqrt(x * x + y * y + z * z))
        depth[i] = d
        if not (d > np.float32(0.0) and math.isfinite(d) and math.isfinite(points[i, 3])):
            px[i] = -1.0
            py[i] = -1.0
            col[i] = -1
            row[i] = -1
            continue
        yaw = -np.float32(_atan2(np.float64(y), -np.float64(x)))
        u = np.float32(0.5) * (yaw / pi32 + np.float32(1.0))
        if u < np.float32(0.2) and prev_u > np.float32(0.8):
            ring += 1
        prev_u = u
        p = u * w32 - np.float32(0.001)
        c = np.int64(math.floor(p))
        if c < 0:          # u == 0 exactly: numpy's index -1 wraps to the last column
            c = width - 1
        elif c >= width:   # only for very wide images, where W - 0.001 rounds to W in float32
            c = width - 1
        r = ring
        if r >= height:
            r = height - 1
            num_clipped += 1
        px[i] = p
        py[i] = np.float32(r)
        col[i] = c
        row[i] = r
    idx[:] = -1
    for i in range(n):
        r = row[i]
        if r < 0:
            continue
        c = col[i]
        j = idx[r, c]
        if j < 0 or depth[i] < depth[j]:
            idx[r, c] = i
    for r in range(height):
        for c in range(width):
            j = idx[r, c]
            if j >= 0:
                inv_depth[r, c] = np.float32(1.0) / depth[j]
                refl[r, c] = points[j, 3]
            else:
                inv_depth[r, c] = 0.0
                refl[r, c] = 0.0
    return ring + 1 if prev_u >= np.float32(0.0) else 0, num_clipped


def scan_unfolding(points, height: int = 65, width: int = 2049) -> UnfoldedScan:
    """KPRNet's scan unfolding of points float32 [N,4] (ring-major order, as in KITTI .bin files).

    Column: u = 0.5 (-atan2(y, -x)/pi + 1) in [0, 1] (front at both borders, rear in the middle, counter-clockwise),
    px = u W - 0.001, col = floor(px) with -1 (u == 0) wrapped to W-1. Row: the ring index, +1 at every point whose
    u < 0.2 while the previous projected point had u > 0.8; rings >= H are clipped to row H-1 and counted. The nearest
    point wins each pixel (smallest index among equal ranges). Points with non-finite values or zero range are not
    projected (-1 everywhere) and do not take part in ring detection.
    """
    if isinstance(height, bool) or not isinstance(height, (int, np.integer)) or height < 1:
        raise ConfigError(f"scan_unfolding: height must be a positive integer, got {height!r}")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ConfigError(f"scan_unfolding: width must be a positive integer, got {width!r}")
    pts = _check_points(points)
    n = pts.shape[0]
    px = np.empty(n, np.float32)
    py = np.empty(n, np.float32)
    col = np.empty(n, np.int64)
    row = np.empty(n, np.int64)
    idx = np.empty((height, width), np.int32)
    inv_depth = np.empty((height, width), np.float32)
    refl = np.empty((height, width), np.float32)
    num_rings, num_clipped = _unfold(pts, int(height), int(width), np.float32(math.pi), px, py, col, row, idx,
                                     inv_depth, refl)
    return UnfoldedScan(inv_depth=inv_depth, reflectance=refl, idx=idx, px=px, py=py, col=col, row=row,
                        num_rings=int(num_rings), num_clipped=int(num_clipped))


# ----------------------------------------------------------------------------------------------------------------
# network input

@njit(**_JIT)
def _normalise(rng, xyz, rem, idx, mean, std, out):
    h, w = idx.shape
    for r in range(h):
        for c in range(w):
            if idx[r, c] >= 0:
                out[0, r, c] = (rng[r, c] - mean[0]) / std[0]
                out[1, r, c] = (xyz[r, c, 0] - mean[1]) / std[1]
                out[2, r, c] = (xyz[r, c, 1] - mean[2]) / std[2]
                out[3, r, c] = (xyz[r, c, 2] - mean[3]) / std[3]
                out[4, r, c] = (rem[r, c] - mean[4]) / std[4]
            else:
                for k in range(5):
                    out[k, r, c] = 0.0


def normalised_input(proj: RangeProjection, mean, std) -> np.ndarray:
    """RangeNet++'s network input: channels (range, x, y, z, remission), (value - mean) / std in float32, 0 where the
    pixel is empty -> float32 [5,H,W]. mean, std: 5 numbers each."""
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean.shape != (5,) or std.shape != (5,):
        raise ConfigError(f"normalization: mean and std need 5 values (range, x, y, z, remission), "
                          f"got {mean.size} and {std.size}")
    h, w = proj.idx.shape
    out = np.empty((5, h, w), np.float32)
    _normalise(proj.range, proj.xyz, proj.remission, proj.idx, mean, std, out)
    return out
