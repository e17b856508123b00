"""The return model: which returns are detected and the remission a KITTI-style HDL-64E reports for them.

A return's strength follows the lidar equation for an extended diffuse target: reflectivity x incidence term x
range loss. KITTI's remission is the sensor's range-compensated intensity: flat up to `knee` metres, then falling
(the compensation runs out), and a weak return reads exactly 0. Calibrated so that the remission-versus-range curve,
the share of zeros and the per-class means match real SemanticKITTI scans (docs/synthetic.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


#: Reflectivity gain per material (multiplies the scene's reflectivities), fitted so that the per-class remission
#: means match real SemanticKITTI scans (docs/synthetic.md).
MATERIAL_GAIN = {"asphalt": 1.7, "paint": 0.9, "concrete": 1.4, "grass": 1.75, "gravel": 1.5, "facade": 2.0,
                 "glass": 1.0, "foliage": 1.05, "bark": 1.75, "metal": 1.05, "sign": 1.0, "paint_car": 0.78,
                 "rubber": 1.0, "cloth": 1.0, "wood": 1.35}


def material_gains(names) -> np.ndarray:
    """float64 [len(names)]: MATERIAL_GAIN of each material name (1 for unknown names)."""
    return np.array([MATERIAL_GAIN.get(n, 1.0) for n in names], np.float64)


@dataclass(frozen=True)
class RemissionModel:
    """Constants of the return model (ranges in metres).

    incidence: weight of cos(incidence) in the diffuse term (1 - incidence + incidence * cos);
    knee, falloff: remission = ... * exp(-max(r - knee, 0) / falloff);
    zero_level: returns whose remission before quantisation is below this (times the laser's threshold factor)
    read 0; detection_range: range at which the received power of a target equals 1 / r^2 scaling reference;
    detection_threshold: returns weaker than this (signal below, see `detection_signal`) are lost.
    """

    incidence: float = 0.3
    knee: float = 14.0
    falloff: float = 25.0
    zero_level: float = 0.1
    detection_range: float = 25.0
    detection_threshold: float = 0.004


def detection_signal(refl, cosi, rng, model: RemissionModel):
    """Relative received power of a return: reflectivity x (0.2 + 0.8 cos incidence) x min(1, (r0 / r)^2)."""
    r = np.maximum(np.where(np.isfinite(rng), rng, 1e9), 1e-3)
    return refl * (0.2 + 0.8 * np.clip(cosi, 0.0, 1.0)) * np.minimum(1.0, (model.detection_range / r) ** 2)


def remission(refl, cosi, rng, noise, model: RemissionModel, threshold=1.0, step: float = 0.01):
    """KITTI-style remission in [0, 1], multiples of `step`: refl x incidence term x range fall-off + noise, set to
    exactly 0 below the zero level. Arrays broadcast; threshold: per-laser factor on the zero level."""
    inc = 1.0 - model.incidence + model.incidence * np.clip(cosi, 0.0, 1.0)
    fall = np.exp(-np.maximum(rng - model.knee, 0.0) / model.falloff)
    raw = refl * inc * fall + noise * np.sqrt(fall)
    raw = np.where(raw < model.zero_level * threshold, 0.0, raw)
    return np.clip(np.round(raw / step) * step, 0.0, 1.0)
