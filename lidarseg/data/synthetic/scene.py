"""Procedural streets made of analytic primitives, in a world frame where the street runs along +x (metres).

A `Scene` holds static primitives and moving ones (constant velocity, metres per second); `Scene.at(time)` gives
the primitives at that time. Scenes are laid out on a flat world: the ground z = 0 is road inside the carriageway
(|y - road_center| < road_half) and terrain outside it; sidewalks, parking bays, medians, gardens and lots are boxes
on top of it. `terrain.drape` then puts everything on the drive's sloped road surface.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .raycast import BOX, CX, CY, CYLINDER, CZ, ELLIPSOID, NGEOM, SHEAR_X, SHEAR_Y
from .terrain import RoadSurface

# raw SemanticKITTI ids
UNLABELED, OUTLIER = 0, 1
CAR, BICYCLE, BUS, MOTORCYCLE, TRUCK, OTHER_VEHICLE = 10, 11, 13, 15, 18, 20
PERSON, BICYCLIST, MOTORCYCLIST = 30, 31, 32
ROAD, PARKING, SIDEWALK, OTHER_GROUND = 40, 44, 48, 49
BUILDING, FENCE, OTHER_STRUCTURE, LANE_MARKING = 50, 51, 52, 60
VEGETATION, TRUNK, TERRAIN, POLE, TRAFFIC_SIGN, OTHER_OBJECT = 70, 71, 72, 80, 81, 99
MOVING = {CAR: 252, BICYCLIST: 253, PERSON: 254, MOTORCYCLIST: 255, BUS: 257, TRUCK: 258, OTHER_VEHICLE: 259}

# materials: (name, remission mean, remission std, dropout probability)
MATERIALS = [
    ("asphalt", 0.18, 0.04, 0.02),
    ("paint", 0.62, 0.08, 0.01),
    ("concrete", 0.30, 0.05, 0.01),
    ("grass", 0.24, 0.07, 0.03),
    ("gravel", 0.28, 0.06, 0.02),
    ("facade", 0.30, 0.05, 0.01),
    ("glass", 0.06, 0.03, 0.55),
    ("foliage", 0.38, 0.12, 0.04),
    ("bark", 0.22, 0.05, 0.02),
    ("metal", 0.40, 0.10, 0.03),
    ("sign", 0.90, 0.06, 0.00),
    ("paint_car", 0.30, 0.05, 0.03),
    ("rubber", 0.05, 0.02, 0.35),
    ("cloth", 0.28, 0.12, 0.05),
    ("wood", 0.30, 0.06, 0.02),
]
MAT = {name: i for i, (name, *_) in enumerate(MATERIALS)}
MAT_REMISSION_STD = np.array([m[2] for m in MATERIALS])
MAT_DROPOUT = np.array([m[3] for m in MATERIALS])


@dataclass
class Prims:
    """A set of primitives: type int8 [P], geom float64 [P,NGEOM] (see raycast), vel float64 [P,2] (m/s),
    label uint32 [P] (raw id | instance << 16), material int16 [P], remission float64 [P] (mean, 0..1),
    window float64 [P,3] (floor height m, window pitch m, window width fraction; 0 = no windows)."""

    ptype: np.ndarray
    geom: np.ndarray
    vel: np.ndarray
    label: np.ndarray
    material: np.ndarray
    remission: np.ndarray
    window: np.ndarray

    def __len__(self):
        return len(self.ptype)

    def take(self, sel) -> "Prims":
        return Prims(*(a[sel] for a in (self.ptype, self.geom, self.vel, self.label, self.material,
                                         self.remission, self.window)))

    @staticmethod
    def concat(parts) -> "Prims":
        return Prims(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                       ("ptype", "geom", "vel", "label", "material", "remission", "window")))


@dataclass
class Scene:
    """A street: static and moving primitives, the carriageway (road_center, road_half metres), the ego drive
    (ego_x(t) = x0 + speed*t + sway_amp*sin(2*pi*t/sway_period), ego_y(t) = lane_y + drift*sin(...)) and the road
    surface the flat layout is draped on (None: the level plane z = 0)."""

    static: Prims
    moving: Prims
    road_center: float
    road_half: float
    lane_y: float
    speed: float
    drift: float
    period: float
    surface: RoadSurface | None = None

    def at(self, time: float) -> Prims:
        """All primitives at `time` seconds (moving ones advanced along their velocity), on the road surface."""
        mov = self.moving.take(slice(None))
        mov.geom = mov.geom.copy()
        mov.geom[:, 0] += mov.vel[:, 0] * time
        mov.geom[:, 1] += mov.vel[:, 1] * time
        return self.drape(Prims.concat([self.static, mov]))

    def drape(self, prims: Prims) -> Prims:
        """Primitives of the flat layout put on the road surface: lifted by the ground height at their centre;
        boxes sheared to the local slope (world-frame rise per metre in SHEAR_X / SHEAR_Y)."""
        if self.surface is None:
            return prims
        g = prims.geom.copy()
        g[:, CZ] += self.surface.height(g[:, CX], g[:, CY])
        gx, gy = self.surface.gradient(g[:, CX], g[:, CY])
        box = prims.ptype == BOX
        g[:, SHEAR_X] = np.where(box, gx, 0.0)
        g[:, SHEAR_Y] = np.where(box, gy, 0.0)
        out = prims.take(slice(None))
        out.geom = g
        return out

    def ground_height(self, x, y) -> np.ndarray:
        """World ground height (metres) at world (x, y)."""
        if self.surface is None:
            return np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)
        return self.surface.height(x, y)

    def ego_pose(self, time: float) -> tuple[float, float, float]:
        """Sensor (x, y, yaw) in the world frame at `time` seconds: metres, metres, radians."""
        w = 2 * np.pi / self.period
        x = self.speed * time + 0.08 * self.speed * self.period / (2 * np.pi) * np.sin(w * time)
        y = self.lane_y + self.drift * np.sin(0.5 * w * time)
        vx = self.speed * (1 + 0.08 * np.cos(w * time))
        vy = self.drift * 0.5 * w * np.cos(0.5 * w * time)
        return float(x), float(y), float(np.arctan2(vy, vx))

    def ground_label(self, y: np.ndarray) -> np.ndarray:
        """Raw label of the ground plane z = 0 at world y (metres): road on the carriageway, terrain outside."""
        inside = np.abs(np.asarray(y) - self.road_center) <= self.road_half
        return np.where(inside, ROAD, TERRAIN).astype(np.uint32)


MAX_PIECE = 16.0  # metres: longest side of a windowless box (see _Builder.box)


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows = []
        self.next_instance = 1

    def instance(self) -> int:
        i = self.next_instance
        self.next_instance += 1
        return i

    def add(self, ptype, center, half, yaw, label, material, remission=None, mfp=0.0, transmit=0.0,
            vel=(0.0, 0.0), window=(0.0, 0.0, 0.0), instance=0):
        if remission is None:
            remission = MATERIALS[MAT[material]][1]
        half = [max(float(h), 1e-3) for h in half]
        geom = [*map(float, center), *half, np.cos(yaw), np.sin(yaw), mfp, transmit, 0.0, 0.0]
        self.rows.append((ptype, geom, vel, (int(label) | (int(instance) << 16)), MAT[material],
                          float(np.clip(remission, 0.01, 0.99)), window))

    def box(self, x0, x1, y0, y1, z0, z1, label, material, remission=None, **kw):
        """An axis-aligned box from corner ranges (metres). Boxes without windows are cut into pieces at most
        MAX_PIECE metres long on each side, so that each piece can follow the curvature of the road surface."""
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        nx = ny = 1
        if not any(kw.get("window", (0.0,))):
            nx = max(1, int(np.ceil((x1 - x0) / MAX_PIECE)))
            ny = max(1, int(np.ceil((y1 - y0) / MAX_PIECE)))
        xs, ys = np.linspace(x0, x1, nx + 1), np.linspace(y0, y1, ny + 1)
        for i in range(nx):
            for j in range(ny):
                self.add(BOX, ((xs[i] + xs[i + 1]) / 2, (ys[j] + ys[j + 1]) / 2, (z0 + z1) / 2),
                         ((xs[i + 1] - xs[i]) / 2, (ys[j + 1] - ys[j]) / 2, abs(z1 - z0) / 2), 0.0, label, material,
                         remission, **kw)

    def build(self) -> tuple[Prims, Prims]:
        rows = self.rows
        ptype = np.array([r[0] for r in rows], np.int8)
        geom = np.array([r[1] for r in rows], np.float64).reshape(-1, NGEOM)
        vel = np.array([r[2] for r in rows], np.float64).reshape(-1, 2)
        label = np.array([r[3] for r in rows], np.uint32)
        mat = np.array([r[4] for r in rows], np.int16)
        rem = np.array([r[5] for r in rows], np.float64)
        win = np.array([r[6] for r in rows], np.float64).reshape(-1, 3)
        prims = Prims(ptype, geom, vel, label, mat, rem, win)
        moving = np.any(vel != 0.0, axis=1)
        return prims.take(~moving), prims.take(moving)


# ------------------------------------------------------------------------------------------------------------------
# objects (local frame: centre at (x, y) on the ground z = z0, heading yaw in radians)

def _rot(x, y, yaw, dx, dy):
    c, s = np.cos(yaw), np.sin(yaw)
    return x + c * dx - s * dy, y + s * dx + c * dy


def add_car(b: _Builder, x, y, yaw, z0=0.0, label=CAR, vel=(0.0, 0.0), kind=None):
    """A car (sedan, hatchback, SUV, van or small car): body, cabin with windows, four wheels."""
    rng = b.rng
    kind = kind or rng.choice(["sedan", "hatch", "suv", "van", "small"], p=[0.35, 0.25, 0.2, 0.1, 0.1])
    L, Wd, body_h, cab_h, cab_len, cab_off = {
        "sedan": (4.6, 1.8, 0.75, 0.5, 0.5, -0.05), "hatch": (4.1, 1.75, 0.75, 0.55, 0.55, -0.12),
        "suv": (4.7, 1.9, 0.95, 0.65, 0.6, -0.1), "van": (5.0, 1.95, 1.1, 0.8, 0.75, -0.05),
        "small": (3.5, 1.6, 0.7, 0.55, 0.55, -0.05)}[kind]
    s = rng.uniform(0.93, 1.07)
    L, Wd = L * s, Wd * rng.uniform(0.96, 1.04)
    inst = b.instance()
    paint = rng.choice([0.08, 0.15, 0.25, 0.4, 0.55, 0.7], p=[0.2, 0.2, 0.2, 0.15, 0.15, 0.1])
    clear = 0.3
    b.add(BOX, (x, y, z0 + clear + body_h / 2), (L / 2, Wd / 2, body_h / 2), yaw, label, "paint_car", paint,
          vel=vel, instance=inst)
    cx, cy = _rot(x, y, yaw, cab_off * L, 0.0)
    b.add(BOX, (cx, cy, z0 + clear + body_h + cab_h / 2), (cab_len * L / 2, Wd / 2 * 0.9, cab_h / 2), yaw, label,
          "glass", 0.08, vel=vel, instance=inst)
    for fx in (-0.33, 0.33):
        for fy in (-0.5, 0.5):
            wx, wy = _rot(x, y, yaw, fx * L, fy * Wd * 0.98)
            b.add(ELLIPSOID, (wx, wy, z0 + 0.32), (0.32, 0.12, 0.32), yaw, label, "rubber", vel=vel, instance=inst)


def add_truck(b: _Builder, x, y, yaw, z0=0.0, label=TRUCK, vel=(0.0, 0.0)):
    """A truck: cab and a box body or a flatbed with a load."""
    rng = b.rng
    inst = b.instance()
    L = rng.uniform(6.5, 10.0)
    Wd = rng.uniform(2.3, 2.55)
    cab_l = 2.0
    H = rng.uniform(2.8, 3.8)
    cx, cy = _rot(x, y, yaw, L / 2 - cab_l / 2, 0)
    b.add(BOX, (cx, cy, z0 + 0.6 + 1.15), (cab_l / 2, Wd / 2, 1.15), yaw, label, "paint_car",
          rng.uniform(0.2, 0.6), vel=vel, instance=inst)
    bx, by = _rot(x, y, yaw, -cab_l / 2 - 0.1, 0)
    if rng.random() < 0.7:
        b.add(BOX, (bx, by, z0 + 0.9 + (H - 0.9) / 2), ((L - cab_l - 0.2) / 2, Wd / 2, (H - 0.9) / 2), yaw, label,
              "metal", rng.uniform(0.3, 0.7), vel=vel, instance=inst)
    else:
        b.add(BOX, (bx, by, z0 + 1.1), ((L - cab_l - 0.2) / 2, Wd / 2, 0.2), yaw, label, "metal", vel=vel,
              instance=inst)
        b.add(BOX, (bx, by, z0 + 1.6), ((L - cab_l) / 3, Wd / 2.6, 0.4), yaw, label, "wood", vel=vel, instance=inst)
    for fx in np.linspace(-L / 2 + 1.0, L / 2 - 1.2, 3):
        for fy in (-0.5, 0.5):
            wx, wy = _rot(x, y, yaw, fx, fy * Wd * 0.95)
            b.add(ELLIPSOID, (wx, wy, z0 + 0.5), (0.5, 0.15, 0.5), yaw, label, "rubber", vel=vel, instance=inst)


def add_bus(b: _Builder, x, y, yaw, z0=0.0, label=BUS, vel=(0.0, 0.0)):
    """A city bus: a long box with a window band."""
    rng = b.rng
    inst = b.instance()
    L = rng.uniform(11.0, 13.0)
    b.add(BOX, (x, y, z0 + 0.35 + 0.7), (L / 2, 1.27, 0.7), yaw, label, "paint_car", rng.uniform(0.3, 0.7),
          vel=vel, instance=inst)
    b.add(BOX, (x, y, z0 + 1.75 + 0.55), (L / 2, 1.25, 0.55), yaw, label, "glass", vel=vel, instance=inst)
    b.add(BOX, (x, y, z0 + 2.85 + 0.1), (L / 2, 1.27, 0.1), yaw, label, "paint_car", 0.5, vel=vel, instance=inst)
    for fx in (-0.3, 0.3):
        for fy in (-0.5, 0.5):
            wx, wy = _rot(x, y, yaw, fx * L, fy * 2.45)
            b.add(ELLIPSOID, (wx, wy, z0 + 0.5), (0.5, 0.15, 0.5), yaw, label, "rubber", vel=vel, instance=inst)


def add_other_vehicle(b: _Builder, x, y, yaw, z0=0.0, label=OTHER_VEHICLE, vel=(0.0, 0.0), kind=None):
    """Trailers, caravans and construction vehicles."""
    rng = b.rng
    inst = b.instance()
    kind = kind or rng.choice(["trailer", "caravan", "digger"], p=[0.6, 0.25, 0.15])
    if kind == "trailer":
        L, Wd, H = rng.uniform(2.5, 4.5), rng.uniform(1.5, 2.0), rng.uniform(0.5, 1.6)
        b.add(BOX, (x, y, z0 + 0.5 + H / 2), (L / 2, Wd / 2, H / 2), yaw, label, "metal", vel=vel, instance=inst)
        for fy in (-0.5, 0.5):
            wx, wy = _rot(x, y, yaw, 0, fy * Wd)
            b.add(ELLIPSOID, (wx, wy, z0 + 0.3), (0.3, 0.1, 0.3), yaw, label, "rubber", vel=vel, instance=inst)
    elif kind == "caravan":
        L, Wd = rng.uniform(5, 7.5), rng.uniform(2.1, 2.4)
        b.add(BOX, (x, y, z0 + 0.45 + 1.2), (L / 2, Wd / 2, 1.2), yaw, label, "paint_car", 0.65, vel=vel,
              instance=inst)
        for fy in (-0.5, 0.5):
            wx, wy = _rot(x, y, yaw, 0, fy * Wd)
            b.add(ELLIPSOID, (wx, wy, z0 + 0.35), (0.35, 0.12, 0.35), yaw, label, "rubber", vel=vel, instance=inst)
    else:
        b.add(BOX, (x, y, z0 + 0.5), (2.2, 1.3, 0.5), yaw, label, "metal", 0.45, vel=vel, instance=inst)
        cx, cy = _rot(x, y, yaw, -0.6, 0)
        b.add(BOX, (cx, cy, z0 + 1.0 + 0.8), (0.9, 1.0, 0.8), yaw, label, "glass", vel=vel, instance=inst)
        ax, ay = _rot(x, y, yaw, 2.4, 0)
        b.add(BOX, (ax, ay, z0 + 1.6), (1.4, 0.2, 0.2), yaw + 0.0, label, "metal", 0.5, vel=vel, instance=inst)


def add_two_wheeler(b: _Builder, x, y, yaw, z0=0.0, motor=False, rider=False, moving=False, vel=(0.0, 0.0)):
    """A bicycle or motorcycle, optionally with its rider (then the rider and the vehicle are labelled
    bicyclist / motorcyclist, moving-* when `moving`)."""
    rng = b.rng
    inst = b.instance()
    if rider:
        label = MOTORCYCLIST if motor else BICYCLIST
        if moving:
            label = MOVING[label]
    else:
        label = MOTORCYCLE if motor else BICYCLE
    r = 0.31 if motor else 0.34
    half_base = 0.72 if motor else 0.52
    for fx in (-half_base, half_base):
        wx, wy = _rot(x, y, yaw, fx, 0)
        b.add(ELLIPSOID, (wx, wy, z0 + r), (r, 0.05 if not motor else 0.09, r), yaw, label, "rubber", 0.08,
              vel=vel, instance=inst)
    if motor:
        b.add(BOX, (x, y, z0 + 0.6), (0.55, 0.22, 0.25), yaw, label, "paint_car", rng.uniform(0.2, 0.6), vel=vel,
              instance=inst)
    else:
        b.add(BOX, (x, y, z0 + 0.62), (0.45, 0.03, 0.2), yaw, label, "metal", 0.35, vel=vel, instance=inst)
    if rider:
        h = rng.uniform(1.6, 1.9)
        tx, ty = _rot(x, y, yaw, -0.1 if motor else -0.15, 0)
        b.add(ELLIPSOID, (tx, ty, z0 + 0.95 + 0.35), (0.22, 0.2, 0.38), yaw, label, "cloth", rng.uniform(0.1, 0.5),
              vel=vel, instance=inst)
        b.add(ELLIPSOID, (tx, ty, z0 + h - 0.12 + 0.25), (0.12, 0.12, 0.14), yaw, label, "cloth", 0.3, vel=vel,
              instance=inst)
        b.add(ELLIPSOID, (x, y, z0 + 0.75), (0.28, 0.16, 0.18), yaw, label, "cloth", 0.25, vel=vel, instance=inst)


def add_person(b: _Builder, x, y, yaw, z0=0.0, label=PERSON, vel=(0.0, 0.0)):
    """A pedestrian (adult or child): legs, torso, head, sometimes a bag."""
    rng = b.rng
    inst = b.instance()
    h = rng.choice([rng.uniform(1.55, 1.95), rng.uniform(1.0, 1.4)], p=[0.85, 0.15])
    cloth = rng.uniform(0.08, 0.5)
    wide = rng.uniform(0.85, 1.2)
    b.add(CYLINDER, (x, y, z0 + 0.25 * h), (0.14 * wide, 0.11, 0.25 * h), yaw, label, "cloth", cloth,
          vel=vel, instance=inst)
    b.add(ELLIPSOID, (x, y, z0 + 0.68 * h), (0.2 * wide, 0.13, 0.2 * h), yaw, label, "cloth", cloth * 1.2,
          vel=vel, instance=inst)
    b.add(ELLIPSOID, (x, y, z0 + 0.93 * h), (0.1, 0.1, 0.07 * h), yaw, label, "cloth", 0.3, vel=vel, instance=inst)
    if rng.random() < 0.3:
        bx, by = _rot(x, y, yaw, 0, 0.3)
        b.add(BOX, (bx, by, z0 + 0.45 * h), (0.18, 0.06, 0.15), yaw, label, "cloth", 0.2, vel=vel, instance=inst)


def add_tree(b: _Builder, x, y, z0=0.0, size=1.0, street=False):
    """A tree: trunk (cylinder) and one to three porous crown ellipsoids (vegetation). Street trees (`street`) are
    pruned: a tall clear trunk and a narrower crown, so they do not overhang the carriageway at sensor height."""
    rng = b.rng
    s = size * rng.uniform(0.6, 1.4)
    shape = rng.choice(["round", "tall", "wide", "multi", "conifer"], p=[0.25, 0.2, 0.2, 0.2, 0.15])
    if street:
        shape = rng.choice(["round", "tall"])
    trunk_h = (rng.uniform(0.6, 1.2) if shape == "conifer" else rng.uniform(1.2, 2.6)) * s
    if street:
        trunk_h = max(trunk_h, rng.uniform(2.8, 3.6))
        s = min(s, 1.0)
    tr = rng.uniform(0.08, 0.2) * np.sqrt(s)
    b.add(CYLINDER, (x, y, z0 + trunk_h / 2), (tr, tr, trunk_h / 2), 0.0, TRUNK, "bark", rng.uniform(0.15, 0.3))
    rem = rng.uniform(0.28, 0.5)
    if shape == "multi":
        for _ in range(3):
            dx, dy = rng.normal(0, 0.8 * s, 2)
            rr = rng.uniform(1.6, 2.8) * s
            b.add(ELLIPSOID, (x + dx, y + dy, z0 + trunk_h + rr * 0.8 + rng.uniform(0, 1.5)), (rr, rr, rr * 0.9),
                  0.0, VEGETATION, "foliage", rem, mfp=0.6, transmit=0.15)
    else:
        rx = {"round": 2.8, "tall": 2.0, "wide": 3.8, "conifer": 1.8}[shape] * s * rng.uniform(0.8, 1.2)
        rz = {"round": 2.6, "tall": 4.0, "wide": 2.4, "conifer": 4.5}[shape] * s * rng.uniform(0.8, 1.2)
        b.add(ELLIPSOID, (x, y, z0 + trunk_h + rz * 0.8), (rx, rx * rng.uniform(0.85, 1.15), rz), rng.uniform(0, 3),
              VEGETATION, "foliage", rem, mfp=0.7, transmit=0.12)
    return tr


def add_bush(b: _Builder, x, y, z0=0.0, scale=1.0):
    """A porous shrub (vegetation ellipsoid), radius about 0.4-1.3 m times `scale`."""
    rng = b.rng
    r = rng.uniform(0.4, 1.3) * scale
    b.add(ELLIPSOID, (x, y, z0 + r * 0.6), (r * rng.uniform(0.8, 1.6), r, r * 0.8), rng.uniform(0, 3), VEGETATION,
          "foliage", rng.uniform(0.3, 0.5), mfp=0.3, transmit=0.05)


def add_pole(b: _Builder, x, y, z0=0.0, kind="lamp", facing=0.0):
    """A street lamp, a sign pole with a traffic sign, or a utility pole."""
    rng = b.rng
    if kind == "lamp":
        h = rng.uniform(5.5, 9.0)
        r = rng.uniform(0.07, 0.14)
        b.add(CYLINDER, (x, y, z0 + h / 2), (r, r, h / 2), 0.0, POLE, "metal", rng.uniform(0.12, 0.3))
        ax, ay = _rot(x, y, facing, 0.0, 0.8)
        b.add(BOX, (ax, ay, z0 + h - 0.1), (0.06, 0.8, 0.05), facing, POLE, "metal", 0.45)
    elif kind == "sign":
        h = rng.uniform(2.2, 3.2)
        r = rng.uniform(0.03, 0.05)
        b.add(CYLINDER, (x, y, z0 + h / 2), (r, r, h / 2), 0.0, POLE, "metal", rng.uniform(0.15, 0.3))
        inst = b.instance()
        shape = rng.choice(["round", "square", "rect", "triangle"])
        size = rng.uniform(0.3, 0.45)
        if shape == "round":
            b.add(CYLINDER, (x + 0.05, y, z0 + h), (0.025, size, size), 0.0, TRAFFIC_SIGN, "sign", 0.9,
                  instance=inst)
        elif shape == "rect":
            b.add(BOX, (x + 0.05, y, z0 + h - 0.1), (0.02, size * 1.6, size * 0.8), 0.0, TRAFFIC_SIGN, "sign",
                  0.85, instance=inst)
        else:
            b.add(BOX, (x + 0.05, y, z0 + h), (0.02, size, size), np.pi / 4 * (shape == "triangle") * 0.0,
                  TRAFFIC_SIGN, "sign", 0.9, instance=inst)
        if rng.random() < 0.35:
            inst = b.instance()
            b.add(BOX, (x + 0.05, y, z0 + h - 0.75), (0.02, 0.3, 0.18), 0.0, TRAFFIC_SIGN, "sign", 0.85,
                  instance=inst)
    else:
        h = rng.uniform(7, 10)
        b.add(CYLINDER, (x, y, z0 + h / 2), (0.13, 0.13, h / 2), 0.0, POLE, "wood", 0.3)


def add_clutter(b: _Builder, x, y, z0=0.0):
    """An unlabeled object (raw id 0): a crate, a planter, a utility cabinet, a skip or a heap of rubble."""
    rng = b.rng
    kind = rng.choice(["crate", "cabinet", "skip", "heap"], p=[0.35, 0.25, 0.15, 0.25])
    yaw = rng.uniform(0, np.pi)
    if kind == "crate":
        hx, hy, hz = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.7)
        b.add(BOX, (x, y, z0 + hz), (hx, hy, hz), yaw, UNLABELED, "wood", rng.uniform(0.15, 0.45))
    elif kind == "cabinet":
        b.add(BOX, (x, y, z0 + 0.65), (0.5, 0.25, 0.65), yaw, UNLABELED, "metal", rng.uniform(0.2, 0.5))
    elif kind == "skip":
        b.add(BOX, (x, y, z0 + 0.7), (1.8, 1.0, 0.7), yaw, UNLABELED, "metal", rng.uniform(0.1, 0.4))
    else:
        r = rng.uniform(0.6, 1.6)
        b.add(ELLIPSOID, (x, y, z0), (r, r * rng.uniform(0.6, 1.2), r * 0.6), yaw, UNLABELED, "gravel",
              rng.uniform(0.15, 0.35))


# ------------------------------------------------------------------------------------------------------------------
# the street

BLOCK_TYPES = ("urban", "residential", "park", "lot", "country")


def build_scene(rng: np.random.Generator, x_min: float, x_max: float, drive_time: float, speed: float,
                sparse_movers: bool = False) -> Scene:
    """A straight street from x_min to x_max (metres) with a drive of `drive_time` seconds at about `speed` m/s."""
    b = _Builder(rng)
    lanes = 2 if rng.random() < 0.55 else 4
    lane_w = rng.uniform(3.3, 3.8)
    median = rng.uniform(2.0, 4.0) if lanes == 4 else 0.0
    road_half = lanes / 2 * lane_w + median / 2
    weights = rng.dirichlet([3.0, 2.5, 1.2, 0.4, 1.0])
    lane_y = -(median / 2 + lane_w / 2) if lanes == 2 or rng.random() < 0.7 else -(median / 2 + 1.5 * lane_w)
    if lanes == 2:
        lane_y += rng.uniform(0.0, 0.5)   # on quiet two-lane streets the car keeps towards the centre line

    # road markings: centre line (dashed) or median, edge lines, lane dividers
    seg = 12.0
    xs = np.arange(x_min, x_max, seg)
    if lanes == 2:
        for x in xs:
            b.box(x, x + 3.0, -0.07, 0.07, -0.1, 0.003, LANE_MARKING, "paint")
    else:
        for x0 in np.arange(x_min, x_max, 40.0):
            x1 = min(x0 + rng.uniform(25, 40), x_max)
            label, mat = (OTHER_GROUND, "concrete") if rng.random() < 0.3 else (TERRAIN, "grass")
            b.box(x0, x1, -median / 2, median / 2, -0.5, 0.15, label, mat)
            if label == TERRAIN:
                hedge = median / 2 - 1.0   # a low hedge keeps a metre of grass to the kerb on each side
                if hedge > 0.3 and rng.random() < 0.5:
                    b.box(x0 + 2, x1 - 2, -hedge, hedge, 0.1, rng.uniform(0.8, 1.5), VEGETATION,
                          "foliage", mfp=0.25, transmit=0.03)
                else:
                    for tx in np.arange(x0 + 4, x1 - 2, rng.uniform(7, 12)):
                        add_tree(b, tx, 0.0, 0.15, size=0.8, street=True)
            b.box(x0, x0 + 0.3, -median / 2, median / 2, 0.15, 0.3, OTHER_STRUCTURE, "concrete")
        for side in (-1, 1):
            yc = side * (median / 2 + lane_w)
            for x in xs:
                b.box(x, x + 3.0, yc - 0.07, yc + 0.07, -0.1, 0.003, LANE_MARKING, "paint")

    for side in (-1, 1):
        x = x_min
        while x < x_max:
            length = rng.uniform(25.0, 60.0)
            x1 = min(x + length, x_max)
            if x_max - x1 < 15.0:
                x1 = x_max
            kind = BLOCK_TYPES[rng.choice(len(BLOCK_TYPES), p=weights)]
            _roadside_block(b, side, x, x1, road_half, kind)
            x = x1 + (rng.uniform(8, 14) if rng.random() < 0.15 else 0.0)  # occasional cross street gap
            if x > x1:
                _cross_street(b, side, x1, x, road_half)

    _movers(b, rng, x_min, x_max, drive_time, speed, lanes, lane_w, median, road_half, lane_y, sparse_movers)
    static, moving = b.build()
    return Scene(static, moving, 0.0, road_half, lane_y, speed, rng.uniform(0.0, 0.3), rng.uniform(8.0, 20.0))


def _cross_street(b: _Builder, side, x0, x1, road_half):
    """A side street joining at [x0, x1]: asphalt continues (road plane), with a wall of buildings far behind."""
    rng = b.rng
    far = road_half + rng.uniform(25, 45)
    h = rng.uniform(8, 20)
    y0, y1 = sorted((side * far, side * (far + 10)))
    b.box(x0 - 5, x1 + 5, y0, y1, 0, h, BUILDING, "facade", rng.uniform(0.2, 0.45), window=(3.0, 2.5, 0.5))
    # the carriageway of the side street is road: extend a road-level patch so the ground is labelled road
    ya, yb = sorted((side * road_half, side * far))
    b.box(x0, x1, ya, yb, -0.5, 0.001, ROAD, "asphalt")
    add_pole(b, x0 - 0.5, side * (road_half + 1.0), 0.0, "sign")


def _roadside_block(b: _Builder, side, x0, x1, road_half, kind):
    """One side of the street between x0 and x1 (metres): parking bay, kerb and sidewalk, street furniture, and the
    lots behind (buildings, gardens, parks, yards)."""
    rng = b.rng

    def ys(a, c):  # lateral distances from the road centre -> world y range
        return tuple(sorted((side * a, side * c)))

    y = road_half
    # parking bay at road level with parallel-parked cars
    if kind in ("urban", "residential") and rng.random() < 0.4:
        w = rng.uniform(2.2, 2.6)
        gutter = rng.uniform(1.2, 2.2)  # a cycle lane or a painted buffer before the bay
        b.box(x0, x1, *ys(y, y + gutter), -0.5, 0.002, ROAD, "asphalt")
        b.box(x0, x1, *ys(y + gutter, y + gutter + w), -0.5, 0.004, PARKING, "asphalt", 0.26)
        cx = x0 + rng.uniform(1, 6)
        while cx < x1 - 3:
            r = rng.random()
            if r < 0.45:
                add_car(b, cx + 2.3, side * (y + gutter + w / 2), rng.choice([0.0, np.pi]) + rng.normal(0, 0.03))
            elif r < 0.465:
                add_other_vehicle(b, cx + 2.3, side * (y + gutter + w / 2), 0.0)
            elif r < 0.5:
                add_two_wheeler(b, cx + 1.0, side * (y + gutter + w * 0.6), np.pi / 2 + rng.normal(0, 0.2),
                                motor=True)
            cx += rng.uniform(5.0, 7.5)
        y += w + gutter

    # kerb + sidewalk (country roads: a terrain shoulder instead, sometimes)
    kerb_h = rng.uniform(0.1, 0.17)
    if kind == "country" and rng.random() < 0.5:
        sw = 0.0
        b.box(x0, x1, *ys(y, y + rng.uniform(1.0, 3.0)), -0.5, 0.05, OTHER_GROUND, "gravel")
    else:
        sw = rng.uniform(1.8, 4.5) if kind in ("urban", "lot") else rng.uniform(1.5, 3.0)
        b.box(x0, x1, *ys(y, y + sw), -0.5, kerb_h, SIDEWALK, "concrete", rng.uniform(0.22, 0.36))
    ys_in = y + 0.6
    y += sw

    # street furniture on the sidewalk; often a row of street trees
    facing = np.pi / 2 if side < 0 else -np.pi / 2
    if sw > 2.0 and kind in ("urban", "residential", "park") and rng.random() < 0.75:
        for tx in np.arange(x0 + rng.uniform(2, 6), x1 - 1, rng.uniform(5, 9)):
            add_tree(b, tx, side * (ys_in + 0.7), kerb_h, size=rng.uniform(0.8, 1.3), street=True)
            b.box(tx - 0.6, tx + 0.6, *ys(ys_in + 0.1, ys_in + 1.3), kerb_h - 0.05, kerb_h + 0.02, TERRAIN, "grass")
    if sw > 0:
        x = x0 + rng.uniform(0, 10)
        while x < x1:
            r = rng.random()
            fy = side * (ys_in + rng.uniform(0.2, 0.6))
            if r < 0.22:
                add_pole(b, x, fy, kerb_h, "lamp", facing=-facing)
            elif r < 0.38:
                add_pole(b, x, fy, kerb_h, "sign")
            elif r < 0.72 and sw > 2.0 and kind != "lot":
                add_tree(b, x, side * (ys_in + 0.6), kerb_h, size=rng.uniform(0.8, 1.2), street=True)
                b.box(x - 0.6, x + 0.6, *ys(ys_in, ys_in + 1.2), kerb_h - 0.05, kerb_h + 0.02, TERRAIN, "grass")
            elif r < 0.8:
                oy = side * (y - rng.uniform(0.3, 0.8))
                b.add(CYLINDER, (x, oy, kerb_h + 0.5), (0.3, 0.3, 0.5), 0.0, OTHER_OBJECT, "metal",
                      rng.uniform(0.1, 0.5))  # bin
            elif r < 0.86:
                b.box(x, x + 3.5, *ys(y - 0.25, y - 0.15), kerb_h, kerb_h + 2.4, OTHER_STRUCTURE, "glass")
                b.box(x, x + 3.5, *ys(y - min(sw, 1.7), y - 0.1), kerb_h + 2.4, kerb_h + 2.55, OTHER_STRUCTURE,
                      "metal")  # a bus shelter at the back of the sidewalk
            elif r < 0.93:
                n = rng.integers(1, 5)
                for i in range(n):  # a bicycle rack
                    add_two_wheeler(b, x + 0.7 * i, side * (y - 0.8), facing + rng.normal(0, 0.15),
                                    kerb_h, motor=False)
            else:
                b.box(x, x + rng.uniform(1.2, 2.0), *ys(y - 0.9, y - 0.4), kerb_h, kerb_h + 0.45, OTHER_OBJECT,
                      "wood")  # bench
            x += rng.uniform(4.0, 14.0)

    # a planted verge of shrubs at the back of the sidewalk
    if kind in ("residential", "park", "country", "urban") and rng.random() < (0.3 if kind == "urban" else 0.6):
        sx = x0 + rng.uniform(0, 3)
        while sx < x1 - 1:
            add_bush(b, sx, side * (y + rng.uniform(0.4, 1.2)), kerb_h, scale=rng.uniform(0.8, 1.5))
            sx += rng.uniform(1.2, 3.5)

    # clutter that annotators leave unlabeled: boxes, planters, cabinets, rubble, skips, on the sidewalk and behind
    for _ in range(rng.poisson((x1 - x0) * (0.35 if kind in ("urban", "lot") else 0.2))):
        add_clutter(b, rng.uniform(x0, x1), side * (y + rng.uniform(-0.6, 14.0)), kerb_h if sw > 0 else 0.05)

    # the lots behind the sidewalk
    depth = 30.0
    if kind == "urban":
        x = x0
        while x < x1 - 2:
            wd = min(rng.uniform(8, 28), x1 - x)
            setback = rng.uniform(0, 1.5) if rng.random() < 0.8 else rng.uniform(3, 8)
            h = rng.uniform(8, 28)
            if setback > 2:
                b.box(x, x + wd, *ys(y, y + setback), -0.5, kerb_h + 0.05, TERRAIN if rng.random() < 0.6
                      else OTHER_GROUND, "grass")
                if rng.random() < 0.8:
                    b.box(x, x + wd, *ys(y + 0.05, y + 0.12), kerb_h, kerb_h + rng.uniform(0.8, 1.6), FENCE, "metal",
                          transmit=rng.uniform(0.0, 0.5))
            b.box(x, x + wd, *ys(y + setback, y + setback + rng.uniform(10, 18)), 0, h, BUILDING, "facade",
                  rng.uniform(0.15, 0.5), window=(rng.uniform(2.8, 3.6), rng.uniform(1.8, 3.5), rng.uniform(0.3, 0.6)))
            x += wd
            gap = rng.uniform(0, 5) if rng.random() < 0.4 else 0.0
            if gap > 1.0:
                if rng.random() < 0.5:
                    b.box(x, x + gap, *ys(y + 0.5, y + 0.6), kerb_h, kerb_h + rng.uniform(1.5, 2.5), FENCE, "wood")
                else:
                    add_tree(b, x + gap / 2, side * (y + 6), kerb_h)
            x += gap
        for tx in np.arange(x0, x1, rng.uniform(6, 10)):  # courtyard trees, seen above low roofs and in gaps
            add_tree(b, tx + rng.uniform(0, 3), side * (y + rng.uniform(20, 26)), kerb_h, size=1.5)
    elif kind == "residential":
        garden = rng.uniform(2, 8)
        b.box(x0, x1, *ys(y, y + depth), -0.5, kerb_h + rng.uniform(0.0, 0.15), TERRAIN, "grass",
              rng.uniform(0.18, 0.3))
        edge = rng.choice(["fence", "hedge", "none", "wall"], p=[0.45, 0.45, 0.04, 0.06])
        if edge == "fence":
            fh = rng.uniform(0.8, 1.8)
            b.box(x0, x1, *ys(y + 0.1, y + 0.16), kerb_h, kerb_h + fh, FENCE, rng.choice(["wood", "metal"]),
                  transmit=rng.choice([0.0, 0.3, 0.6]))
        elif edge == "hedge":
            hw = rng.uniform(0.6, 1.2)
            b.box(x0, x1, *ys(y + 0.1, y + 0.1 + hw), kerb_h, kerb_h + rng.uniform(0.9, 2.0), VEGETATION, "foliage",
                  rng.uniform(0.3, 0.45), mfp=0.25, transmit=0.03)
        elif edge == "wall":
            b.box(x0, x1, *ys(y + 0.1, y + 0.35), kerb_h, kerb_h + rng.uniform(0.5, 1.2), OTHER_STRUCTURE, "concrete")
        x = x0 + rng.uniform(0, 4)
        while x < x1 - 6:
            wd = min(rng.uniform(8, 14), x1 - x)
            hd = rng.uniform(8, 12)
            b.box(x, x + wd, *ys(y + garden, y + garden + hd), 0, rng.uniform(6, 11), BUILDING, "facade",
                  rng.uniform(0.2, 0.5), window=(rng.uniform(2.7, 3.2), rng.uniform(2.5, 4.0), rng.uniform(0.25, 0.5)))
            x += wd
            gap = rng.uniform(3, 9)
            if rng.random() < 0.6:
                b.box(x + gap / 2 - 0.03, x + gap / 2 + 0.03, *ys(y + 0.5, y + garden + hd), kerb_h,
                      kerb_h + rng.uniform(1.0, 1.8), FENCE, "wood")
            for _ in range(rng.integers(0, 3)):
                add_tree(b, x + rng.uniform(0, gap), side * (y + rng.uniform(2, garden + hd)), kerb_h)
            x += gap
        for _ in range(int((x1 - x0) / 10)):
            add_bush(b, rng.uniform(x0, x1), side * (y + rng.uniform(1.5, garden)), kerb_h)
        for tx in np.arange(x0, x1, rng.uniform(5, 9)):  # trees behind the houses (backdrop)
            add_tree(b, tx + rng.uniform(0, 3), side * (y + garden + rng.uniform(13, 22)), kerb_h, size=1.2)
    elif kind == "park":
        b.box(x0, x1, *ys(y, y + depth), -0.5, kerb_h + rng.uniform(-0.05, 0.2), TERRAIN, "grass",
              rng.uniform(0.18, 0.3))
        if rng.random() < 0.7:
            b.box(x0, x1, *ys(y + 0.2, y + 0.26), kerb_h, kerb_h + rng.uniform(0.9, 2.0), FENCE, "metal",
                  transmit=rng.uniform(0.3, 0.7))
        n = int((x1 - x0) * rng.uniform(0.3, 0.5))
        for _ in range(n):
            add_tree(b, rng.uniform(x0, x1), side * (y + rng.uniform(2, depth - 2)), kerb_h, size=rng.uniform(0.8, 1.5))
        for _ in range(int((x1 - x0) * 0.2)):
            add_bush(b, rng.uniform(x0, x1), side * (y + rng.uniform(1, 12)), kerb_h)
        if rng.random() < 0.5 and x1 - x0 > 6:  # a gravel path
            px = rng.uniform(x0, x1 - 3)
            b.box(px, px + 2.5, *ys(y, y + depth), kerb_h - 0.1, kerb_h + 0.22, OTHER_GROUND, "gravel")
        for tx in np.arange(x0, x1, 4.0):
            add_tree(b, tx + rng.uniform(0, 2), side * (y + depth - rng.uniform(0, 4)), kerb_h, size=1.3)
    elif kind == "lot":
        lot_label = PARKING if rng.random() < 0.6 else OTHER_GROUND
        ld = rng.uniform(12, 22)
        b.box(x0, x1, *ys(y, y + ld), -0.5, 0.01, lot_label, "asphalt" if lot_label == PARKING else "gravel")
        cx = x0 + 1.5
        while cx < x1 - 2.5:
            r = rng.random()
            if r < 0.55:
                add_car(b, cx, side * (y + 3.0), np.pi / 2 + rng.choice([0, np.pi]) + rng.normal(0, 0.05))
            elif r < 0.58:
                add_truck(b, cx + 2, side * (y + 6), np.pi / 2 * side)
                cx += 2.5
            elif r < 0.6:
                add_other_vehicle(b, cx, side * (y + 4), np.pi / 2 + rng.normal(0, 0.3))
            cx += rng.uniform(2.6, 3.5)
        b.box(x0, x1, *ys(y + ld, y + ld + 0.06), 0.0, rng.uniform(1.8, 2.5), FENCE, "metal",
              transmit=rng.uniform(0.2, 0.6))
        b.box(x0 + rng.uniform(0, 5), x1 - rng.uniform(0, 5), *ys(y + ld + 3, y + ld + 25), 0, rng.uniform(7, 13),
              BUILDING, "metal", rng.uniform(0.25, 0.5), window=(4.0, 6.0, 0.2))
    else:  # country: terrain and forest edge
        b.box(x0, x1, *ys(y, y + depth), -0.5, rng.uniform(0.0, 0.3), TERRAIN, "grass", rng.uniform(0.18, 0.3))
        edge = y + rng.uniform(4, 12)
        b.box(x0, x1, *ys(edge - 1.5, edge + 6), 0.0, rng.uniform(1.5, 3.5), VEGETATION, "foliage",
              rng.uniform(0.3, 0.45), mfp=0.5, transmit=0.02)  # undergrowth along the forest edge
        for tx in np.arange(x0, x1, rng.uniform(2.5, 5.0)):
            add_tree(b, tx + rng.uniform(0, 2), side * (edge + rng.uniform(0, 8)), 0.1, size=rng.uniform(1.0, 1.6))
        for _ in range(int((x1 - x0) * 0.3)):
            add_bush(b, rng.uniform(x0, x1), side * (edge - rng.uniform(0, 3)), 0.1)
        if rng.random() < 0.4:
            b.box(x0, x1, *ys(y + 1.0, y + 1.05), 0.0, rng.uniform(0.8, 1.3), FENCE, "wood", transmit=0.5)
        for px in np.arange(x0 + rng.uniform(0, 20), x1, 35.0):
            add_pole(b, px, side * (y + 0.6), 0.1, "utility")


def _movers(b: _Builder, rng, x_min, x_max, T, speed, lanes, lane_w, median, road_half, lane_y, sparse):
    """Traffic and pedestrians; each mover keeps a constant velocity over the drive (m/s). Roughly half of the
    vehicles and most riders use the moving-* ids; some persons and riders stand still."""
    drive = speed * T
    n_scale = 0.5 if sparse else 1.0
    oncoming_y = median / 2 + lane_w / 2 + 0.6
    # oncoming traffic
    for _ in range(int(rng.integers(3, 7) * n_scale) + 1):
        v = rng.uniform(8, 14)
        x = rng.uniform(0, drive + v * T) + 20
        r = rng.random()
        vel = (-v, 0.0)
        if r < 0.85:
            add_car(b, x, oncoming_y, np.pi, label=MOVING[CAR], vel=vel)
        elif r < 0.91:
            add_truck(b, x, oncoming_y, np.pi, label=MOVING[TRUCK], vel=vel)
        elif r < 0.94:
            add_bus(b, x, oncoming_y, np.pi, label=MOVING[BUS], vel=vel)
        elif r < 0.96:
            add_other_vehicle(b, x, oncoming_y, np.pi, label=MOVING[OTHER_VEHICLE], vel=vel)
        else:
            add_two_wheeler(b, x, oncoming_y, np.pi, motor=True, rider=True, moving=True, vel=vel)
    # a lead vehicle ahead of the ego car and one behind, in the ego lane, at the ego's mean speed
    for gap in (rng.uniform(14, 35), -rng.uniform(12, 30)):
        if rng.random() < 0.4:
            add_car(b, gap, lane_y, 0.0, label=MOVING[CAR], vel=(speed, 0.0))
    # guaranteed rare classes somewhere along the drive (each sequence gets them)
    def along():
        return rng.uniform(5, drive + 30)
    add_two_wheeler(b, along(), road_half - 0.8, np.pi, motor=False, rider=True, moving=True,
                    vel=(-rng.uniform(4, 7), 0.0))
    add_two_wheeler(b, along(), oncoming_y, np.pi, motor=True, rider=True, moving=True, vel=(-rng.uniform(9, 13), 0))
    add_two_wheeler(b, along(), -road_half - 0.9, rng.normal(np.pi / 2, 0.2), motor=False, rider=True)
    add_two_wheeler(b, along(), road_half + 0.9, rng.normal(0, 0.2), motor=True, rider=True)
    add_two_wheeler(b, along(), -(road_half + 1.0), 0.0, 0.12, motor=True)
    add_two_wheeler(b, along(), road_half + 1.0, np.pi / 2, 0.12, motor=False)
    r = rng.random()
    if r < 0.15:
        add_bus(b, along(), road_half + rng.uniform(1.2, 1.6), np.pi)  # at a stop
    elif r < 0.4:
        add_bus(b, along() + 40, oncoming_y, np.pi, label=MOVING[BUS], vel=(-rng.uniform(6, 9), 0.0))
    add_truck(b, along() + 60, oncoming_y, np.pi, label=MOVING[TRUCK], vel=(-rng.uniform(7, 10), 0.0))
    add_other_vehicle(b, along(), road_half + 1.2, np.pi, kind="trailer")
    # pedestrians on the sidewalks: walking (moving-person) or standing
    for _ in range(int(rng.integers(6, 16) * n_scale) + 2):
        side = rng.choice([-1, 1])
        py = side * (road_half + rng.uniform(1.0, 3.5))
        x = rng.uniform(-20, drive + 40)
        if rng.random() < 0.6:
            v = rng.choice([-1, 1]) * rng.uniform(0.8, 1.7)
            add_person(b, x, py, 0.0 if v > 0 else np.pi, 0.12, label=MOVING[PERSON], vel=(v, 0.0))
        else:
            add_person(b, x, py, rng.uniform(0, 2 * np.pi), 0.12)
