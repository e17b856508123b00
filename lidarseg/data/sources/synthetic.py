"""The synthetic generator's scans (`lidarseg.data.synthetic.generate_scan`, SemanticKITTI classes) in other
datasets' classes: each format's writer (`ScanSource.write_synthetic`) maps the simulator's SemanticKITTI train
classes to its own raw ids with the tables here, so every reader is tested end to end on realistic scans."""
from __future__ import annotations

import numpy as np

from ..labels import LabelMap

#: SemanticKITTI train class -> SemanticPOSS raw id
TO_POSS = {"unlabeled": 0, "car": 7, "bicycle": 21, "motorcycle": 21, "truck": 7, "other-vehicle": 7, "person": 4,
           "bicyclist": 6, "motorcyclist": 6, "road": 22, "parking": 22, "sidewalk": 22, "other-ground": 22,
           "building": 15, "fence": 17, "vegetation": 9, "trunk": 8, "terrain": 22, "pole": 13,
           "traffic-sign": 10}
#: SemanticKITTI train class -> nuScenes-lidarseg category index (a rider belongs to its bicycle/motorcycle in
#: nuScenes' annotation, so bicyclist -> vehicle.bicycle)
TO_NUSCENES = {"unlabeled": 0, "car": 17, "bicycle": 14, "motorcycle": 21, "truck": 23, "other-vehicle": 16,
               "person": 2, "bicyclist": 14, "motorcyclist": 21, "road": 24, "parking": 25, "sidewalk": 26,
               "other-ground": 25, "building": 28, "fence": 9, "vegetation": 30, "trunk": 30, "terrain": 27,
               "pole": 28, "traffic-sign": 28}


def class_lut(table: dict) -> np.ndarray:
    """uint32 [65536]: SemanticKITTI raw semantic id -> the other dataset's raw id, via the SemanticKITTI train
    classes (ids the SemanticKITTI learning_map does not know map to 0)."""
    kitti = LabelMap.from_yaml()
    missing = sorted(set(kitti.names) - set(table))
    if missing:
        raise ValueError(f"class table lacks SemanticKITTI classes {missing}")
    per_train = np.array([table[name] for name in kitti.names], dtype=np.uint32)
    train = kitti.to_train(np.arange(1 << 16, dtype=np.uint32), unknown="zero")
    return per_train[train]


def simulate(sequence: int, index: int, num_scans: int, seed: int, sensor: str, azimuth_steps=None):
    """One simulated scan: (points float32 [N,4], SemanticKITTI raw semantic ids uint32 [N])."""
    from ..synthetic import generate_scan
    points, labels = generate_scan(sequence=sequence, index=index, seed=seed, num_scans=num_scans, sensor=sensor,
                                   azimuth_steps=azimuth_steps)
    return points, labels & np.uint32(0xFFFF)
