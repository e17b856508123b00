"""numba ray casting of one spinning-LiDAR sweep against analytic primitives (level frame of the scan, metres).

Each ray has its own origin (laser offsets, motion during the sweep) and direction (per-laser calibration, roll and
pitch); `column_candidates` bins the primitives by azimuth so that a ray tests only those of its bin.
Primitives (`geom` float64 [P, NGEOM], already moved into the level frame of the scan):
  cx, cy, cz (centre), hx, hy, hz (half sizes / radii), cos, sin (yaw about +z), mfp, transmit, shear_x, shear_y.
Types: BOX (oriented box; shear_x/shear_y, rise per metre of the level frame, tilt its bottom and top to the local
ground slope while its sides stay vertical), CYLINDER (vertical elliptic cylinder, radii hx, hy, half height hz),
ELLIPSOID. The ground is the road surface of `terrain.py` (`frame_height`).
mfp > 0 makes a primitive porous (foliage, hedges): a ray passes it with probability `transmit`, otherwise it
returns from an exponentially distributed depth (mean mfp metres) inside it. transmit > 0 with mfp == 0 is a
see-through solid (mesh fence). The random draws are a hash of (key, ray, primitive), so every ray is independent
and the result does not depend on the thread count (parallel loops only write their own cells; no reductions).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .terrain import frame_height

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
CX, CY, CZ, HX, HY, HZ, COS, SIN, MFP, TRANSMIT, SHEAR_X, SHEAR_Y = range(12)
NGEOM = 12

NO_HIT = -2
GROUND = -1


@njit(cache=True, inline="always")
def _hash01(key, a, b):
    """Deterministic uniform float in [0,1) from three integers (splitmix64 finaliser)."""
    z = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(a) * np.uint64(0xBF58476D1CE4E5B9) \
        + np.uint64(b) * np.uint64(0x94D049BB133111EB) + np.uint64(0x632BE59BD9B4E019)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _intersect(ptype, g, px, py, pz, dx, dy, dz):
    """Ray from (px,py,pz) along the unit vector (dx,dy,dz) against primitive g -> (t_enter, t_exit,
    cos_incidence); t_enter = inf when missed."""
    c = g[COS]
    s = g[SIN]
    # origin and direction in the primitive's frame (rotation by -yaw)
    qx = px - g[CX]
    qy = py - g[CY]
    ox = c * qx + s * qy
    oy = -s * qx + c * qy
    oz = pz - g[CZ]
    lx = c * dx + s * dy
    ly = -s * dx + c * dy
    lz = dz
    inf = np.inf
    if ptype == BOX:
        # shear z' = z - sx x - sy y (level-frame offsets): a linear map, so the ray parameter t is unchanged
        sx = g[SHEAR_X]
        sy = g[SHEAR_Y]
        oz = oz - sx * qx - sy * qy
        lz = lz - sx * dx - sy * dy
        t0 = -inf
        t1 = inf
        axis = 0
        o3 = (ox, oy, oz)
        d3 = (lx, ly, lz)
        h3 = (g[HX], g[HY], g[HZ])
        for k in range(3):
            o = o3[k]
            d = d3[k]
            h = h3[k]
            if abs(d) < 1e-12:
                if o < -h or o > h:
                    return inf, inf, 0.0
            else:
                ta = (-h - o) / d
                tb = (h - o) / d
                if ta > tb:
                    ta, tb = tb, ta
                if ta > t0:
                    t0 = ta
                    axis = k
                if tb < t1:
                    t1 = tb
        if t0 > t1 or t1 <= 0.0:
            return inf, inf, 0.0
        if axis == 2:  # bottom or top face: normal (-sx, -sy, 1) / norm
            return t0, t1, abs(lz) / math.sqrt(1.0 + sx * sx + sy * sy)
        return t0, t1, abs(d3[axis])
    elif ptype == CYLINDER:
        a = g[HX]
        b = g[HY]
        X = ox / a
        Y = oy / b
        DX = lx / a
        DY = ly / b
        A = DX * DX + DY * DY
        B = 2.0 * (X * DX + Y * DY)
        C = X * X + Y * Y - 1.0
        if A < 1e-18:
            if C > 0.0:
                return inf, inf, 0.0
            ts0 = -inf
            ts1 = inf
        else:
            disc = B * B - 4.0 * A * C
            if disc < 0.0:
                return inf, inf, 0.0
            sq = math.sqrt(disc)
            ts0 = (-B - sq) / (2.0 * A)
            ts1 = (-B + sq) / (2.0 * A)
        h = g[HZ]
        if abs(lz) < 1e-12:
            if oz < -h or oz > h:
                return inf, inf, 0.0
            tz0 = -inf
            tz1 = inf
        else:
            tz0 = (-h - oz) / lz
            tz1 = (h - oz) / lz
            if tz0 > tz1:
                tz0, tz1 = tz1, tz0
        t0 = max(ts0, tz0)
        t1 = min(ts1, tz1)
        if t0 > t1 or t1 <= 0.0:
            return inf, inf, 0.0
        if ts0 >= tz0:
            nx = (X + DX * t0) / a
            ny = (Y + DY * t0) / b
            nn = math.sqrt(nx * nx + ny * ny) + 1e-12
            cosi = abs(nx * lx + ny * ly) / nn
        else:
            cosi = abs(lz)
        return t0, t1, cosi
    else:
        a = g[HX]
        b = g[HY]
        cz = g[HZ]
        X = ox / a
        Y = oy / b
        Z = oz / cz
        DX = lx / a
        DY = ly / b
        DZ = lz / cz
        A = DX * DX + DY * DY + DZ * DZ
        B = 2.0 * (X * DX + Y * DY + Z * DZ)
        C = X * X + Y * Y + Z * Z - 1.0
        disc = B * B - 4.0 * A * C
        if disc < 0.0:
            return inf, inf, 0.0
        sq = math.sqrt(disc)
        t0 = (-B - sq) / (2.0 * A)
        t1 = (-B + sq) / (2.0 * A)
        if t1 <= 0.0:
            return inf, inf, 0.0
        px = (X + DX * t0) / a
        py = (Y + DY * t0) / b
        pz = (Z + DZ * t0) / cz
        nn = math.sqrt(px * px + py * py + pz * pz) + 1e-12
        return t0, t1, abs(px * lx + py * ly + pz * lz) / nn


@njit(cache=True)
def column_candidates(geom, bound_r, nbins, max_range):
    """Bin primitives by the azimuth bins [2 pi j / nbins, 2 pi (j+1) / nbins) that their bounding circle (radius
    bound_r, metres) covers, as seen from the origin. Returns CSR arrays (ptr [nbins+1], idx [K]); primitives
    farther than max_range are dropped."""
    P = geom.shape[0]
    W = nbins
    lo = np.zeros(P, np.int64)
    hi = np.full(P, -1, np.int64)
    two_pi = 2.0 * math.pi
    for p in range(P):
        d = math.hypot(geom[p, CX], geom[p, CY])
        r = bound_r[p]
        if d - r > max_range:
            continue
        if d <= r * 1.0001 + 1e-6:
            lo[p] = 0
            hi[p] = W - 1
            continue
        ha = math.asin(min(1.0, r / d))
        az = math.atan2(geom[p, CY], geom[p, CX])
        if az < 0.0:
            az += two_pi
        a0 = math.floor((az - ha) / two_pi * W)
        a1 = math.floor((az + ha) / two_pi * W)
        if a1 - a0 >= W - 1:
            lo[p] = 0
            hi[p] = W - 1
        else:
            lo[p] = a0
            hi[p] = a1
    counts = np.zeros(W + 1, np.int64)
    for p in range(P):
        for j in range(lo[p], hi[p] + 1):
            counts[(j % W) + 1] += 1
    ptr = np.cumsum(counts)
    idx = np.empty(ptr[W], np.int64)
    fill = ptr[:W].copy()
    for p in range(P):
        for j in range(lo[p], hi[p] + 1):
            jj = j % W
            idx[fill[jj]] = p
            fill[jj] += 1
    return ptr, idx


@njit(cache=True)
def ground_hit(surf, bounds, ox, oy, oz, dx, dy, dz, t_max):
    """First crossing (t metres, |cos incidence|) of the ray o + t d with the road surface `surf` (terrain.py packed
    parameters) before t_max, or (inf, 0). bounds = (zlo, zhi, gmax): the ground height lies in [zlo, zhi] and its
    slope is at most gmax within reach, so the ray can only cross while it is between zlo and zhi, and from a height
    f above the ground it cannot reach it within f / (gmax |d_xy| - dz) metres. Steps by that distance (at least
    0.2 m), bisects the first bracket and ends with one linear interpolation (exact on a plane)."""
    zlo = bounds[0]
    zhi = bounds[1]
    gmax = bounds[2]
    if dz < 0.0:
        ta = max(0.0, (zhi - oz) / dz)
        tb = min(t_max, (zlo - oz) / dz)
    elif oz < zhi:
        ta = 0.0
        tb = t_max
    else:
        return np.inf, 0.0
    if ta >= tb:
        return np.inf, 0.0
    fa = oz + dz * ta - frame_height(surf, ox + dx * ta, oy + dy * ta)
    if fa <= 0.0:
        return np.inf, 0.0   # starts under the surface (origin inside a bank): no return
    rate = gmax * math.sqrt(dx * dx + dy * dy) - dz   # fastest fall of the height above ground per metre
    if rate <= 0.0:
        return np.inf, 0.0   # rises at least as fast as the ground can
    t = ta
    while t < tb:
        step = max(0.2, fa / rate)
        tn = min(t + step, tb)
        fn = oz + dz * tn - frame_height(surf, ox + dx * tn, oy + dy * tn)
        if fn <= 0.0:
            lo, hi, flo, fhi = t, tn, fa, fn
            for _ in range(20):
                if hi - lo < 1e-4:
                    break
                mid = 0.5 * (lo + hi)
                fm = oz + dz * mid - frame_height(surf, ox + dx * mid, oy + dy * mid)
                if fm > 0.0:
                    lo, flo = mid, fm
                else:
                    hi, fhi = mid, fm
            th = lo + (hi - lo) * flo / (flo - fhi)
            hx = ox + dx * th
            hy = oy + dy * th
            e = 0.05
            gx = (frame_height(surf, hx + e, hy) - frame_height(surf, hx - e, hy)) / (2 * e)
            gy = (frame_height(surf, hx, hy + e) - frame_height(surf, hx, hy - e)) / (2 * e)
            cosi = abs(dz - gx * dx - gy * dy) / math.sqrt(1.0 + gx * gx + gy * gy)
            return th, cosi
        t, fa = tn, fn
    return np.inf, 0.0


@njit(cache=True, parallel=True)
def cast_rays(orig, dirs, bins, skip, surf, bounds, ptype, geom, dmin, row_lo, row_hi, ptr, idx, max_range, key):
    """Cast the rays orig + t dirs ([H,W,3] each, level frame) against the road surface (`surf`, terrain.py
    packed parameters; `bounds` (zlo, zhi, gmax) its height range and largest slope within reach: `ground_hit`)
    and the primitives. bins [H,W]: each ray's azimuth
    bin in (ptr, idx) from `column_candidates`; skip [H,W]: rays that return nothing (hidden by the ego body).

    Returns (t [H,W] float64 range in metres, inf for no return; hit [H,W] int32 primitive index, GROUND or NO_HIT;
    cosi [H,W] float64 |cos| of the incidence angle). `dmin` [P] lower bound of each primitive's distance from the
    sensor origin, row_lo / row_hi [P] the rows whose rays can reach it."""
    H = dirs.shape[0]
    W = dirs.shape[1]
    t_out = np.full((H, W), np.inf)
    hit = np.full((H, W), NO_HIT, np.int32)
    cos_out = np.zeros((H, W))
    for c in prange(W):
        for r in range(H):
            if skip[r, c]:
                continue
            ox = orig[r, c, 0]
            oy = orig[r, c, 1]
            oz = orig[r, c, 2]
            dx = dirs[r, c, 0]
            dy = dirs[r, c, 1]
            dz = dirs[r, c, 2]
            best, cg = ground_hit(surf, bounds, ox, oy, oz, dx, dy, dz, max_range)
            if best < max_range:
                hit[r, c] = GROUND
                cos_out[r, c] = cg
            b = bins[r, c]
            ray = r * W + c
            for k in range(ptr[b], ptr[b + 1]):
                p = idx[k]
                if r < row_lo[p] or r > row_hi[p] or dmin[p] >= best:
                    continue
                t0, t1, cosi = _intersect(ptype[p], geom[p], ox, oy, oz, dx, dy, dz)
                if t0 <= 0.0 or t0 >= best:
                    continue
                transmit = geom[p, TRANSMIT]
                if transmit > 0.0 and _hash01(key, ray, 2 * p) < transmit:
                    continue
                mfp = geom[p, MFP]
                if mfp > 0.0:
                    u = _hash01(key, ray, 2 * p + 1)
                    t0 = t0 + min(-math.log(1.0 - u) * mfp, t1 - t0)
                    cosi = 0.8
                    if t0 >= best:
                        continue
                best = t0
                hit[r, c] = p
                cos_out[r, c] = cosi
            t_out[r, c] = best
    return t_out, hit, cos_out
