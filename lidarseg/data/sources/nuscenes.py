"""nuScenes-lidarseg (`nuscenes`): the devkit's layout under the root,

    <version>/{scene,sample,sample_data,lidarseg,category}.json      (version: v1.0-trainval, v1.0-mini, v1.0-test)
    samples/LIDAR_TOP/<name>.pcd.bin                                  float32 [N,5]: x, y, z, intensity (0-255), ring
    lidarseg/<version>/<sample_data token>_lidarseg.bin               uint8 [N]: category index (category.json)

One scan per sample (the key-frame LIDAR_TOP sample_data of each sample), grouped by scene (the sequence is the
scene name, the scan its sample_data token), in the order of the scene's samples. Splits name scenes (label config:
the official val split; train = every other scene of the tables; test = every scene). Raw label ids are the
category indices; the label config's `labels` must name the same categories as category.json.

Predictions are the lidarseg benchmark's: `PRED/lidarseg/<eval set>/<token>_lidarseg.bin`, one uint8 train id
(1..16) per point, and `PRED/<eval set>/submission.json` with the meta flags (`write_submission_meta`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ..io import atomic_write_bytes
from .base import ScanItem, ScanSource, register_source

TABLES = ("scene", "sample", "sample_data", "lidarseg", "category")
LIDAR_PREFIX = "samples/LIDAR_TOP/"
#: lidarseg benchmark set names of our split names
EVAL_SET = {"valid": "val", "val": "val", "train": "train", "test": "test", "mini_train": "mini_train",
            "mini_val": "mini_val"}
SUBMISSION_META = ("use_camera", "use_lidar", "use_radar", "use_map", "use_external")


def read_nuscenes_points(path, with_ring: bool = False) -> np.ndarray:
    """A `.pcd.bin` file -> float32 [N,4] (x, y, z, intensity), or [N,5] with the ring index."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"scan file not found: {path}")
    size = path.stat().st_size
    if size == 0 or size % 20:
        raise DataError(f"scan file {path}: size {size} bytes is not a positive multiple of 20 (5 float32 per point: "
                        "x, y, z, intensity, ring)")
    pts = np.fromfile(path, dtype="<f4").reshape(-1, 5)
    return pts if with_ring else np.ascontiguousarray(pts[:, :4])


@register_source("nuscenes")
class NuScenesSource(ScanSource):
    label_config = "labels/nuscenes.yaml"
    sensor = "hdl32"
    prediction_ids = "train"
    prediction_dtype = "u1"

    def __init__(self, root, label_map=None, version: str | None = None):
        super().__init__(root, label_map)
        self.version = version or self._find_version()
        self._tables = None

    @classmethod
    def write_synthetic(cls, out, sequences=None, scans=None, seed: int = 0, azimuth_steps=None,
                        log=print) -> dict:
        return write_synthetic(out, scenes=sequences, scans=scans, seed=seed, azimuth_steps=azimuth_steps, log=log)

    def _find_version(self) -> str:
        if not self.root.is_dir():
            raise DataError(f"nuScenes root not found: {self.root}")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / "sample_data.json").is_file())
        if len(found) > 1 and "v1.0-trainval" in found:
            return "v1.0-trainval"  # v1.0-test beside it: pass version="v1.0-test" for the test scenes
        if len(found) != 1:
            raise DataError(f"nuScenes root {self.root}: expected one version folder holding sample_data.json "
                            f"(e.g. v1.0-trainval), found {found or 'none'}")
        return found[0]

    # ------------------------------------------------------------------------------------------- tables
    def _load(self, name: str) -> list:
        path = self.root / self.version / f"{name}.json"
        if not path.is_file():
            raise DataError(f"nuScenes table missing: {path} (expected the {name} table of {self.version})")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise DataError(f"nuScenes table {path}: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise DataError(f"nuScenes table {path}: expected a JSON list of records")
        return data

    @property
    def tables(self) -> dict:
        if self._tables is None:
            t = {}
            categories = self._load("category")
            for c in categories:
                if "index" not in c or "name" not in c:
                    raise DataError(f"{self.root / self.version / 'category.json'}: record without 'index'/'name' "
                                    "(use the category.json of nuScenes-lidarseg)")
                known = self.label_map.raw_names.get(int(c["index"]))
                if known != c["name"]:
                    raise DataError(f"{self.root / self.version / 'category.json'}: category {c['name']!r} has index "
                                    f"{c['index']}, which the label config {self.label_map.source} names {known!r}")
            t["scenes"] = sorted(self._load("scene"), key=lambda s: s["name"])
            samples = self._load("sample")
            t["sample"] = {s["token"]: s for s in samples}
            lidar = {}
            for sd in self._load("sample_data"):
                if sd.get("is_key_frame") and str(sd.get("filename", "")).startswith(LIDAR_PREFIX):
                    lidar[sd["sample_token"]] = sd
            t["lidar"] = lidar
            seg_path = self.root / self.version / "lidarseg.json"
            t["lidarseg"] = ({r["sample_data_token"]: r for r in self._load("lidarseg")} if seg_path.is_file()
                             else None)
            by_scene: dict[str, list] = {}
            for s in samples:
                by_scene.setdefault(s["scene_token"], []).append(s)
            t["scene_samples"] = {k: sorted(v, key=lambda s: s["timestamp"]) for k, v in by_scene.items()}
            self._tables = t
        return self._tables

    def scene_names(self) -> list[str]:
        return [s["name"] for s in self.tables["scenes"]]

    # ------------------------------------------------------------------------------------------- splits
    def split_sequences(self, split: str) -> list[str]:
        lm = self.label_map
        if split in lm.split:
            wanted = set(lm.split[split])
            return [s for s in self.scene_names() if s in wanted]
        if split == "train":
            val = set(lm.split.get("valid", []))
            return [s for s in self.scene_names() if s not in val]
        if split == "test":
            return self.scene_names()
        raise ConfigError(f"split {split!r}: not a nuScenes split; valid: train, test, {', '.join(sorted(lm.split))}")

    def resolve(self, split=None, sequences=None):
        names = super().resolve(split, sequences)
        if not names:
            raise DataError(f"nuScenes {self.root / self.version}: no scene of split {split!r} in scene.json")
        return names

    def split_has_labels(self, split: str) -> bool:
        return split != "test"

    # ------------------------------------------------------------------------------------------- scans
    def list_scans(self, sequences, with_labels: bool) -> list[ScanItem]:
        t = self.tables
        if with_labels and t["lidarseg"] is None:
            raise DataError(f"nuScenes table missing: {self.root / self.version / 'lidarseg.json'} (labels were "
                            "asked for)")
        scenes = {s["name"]: s for s in t["scenes"]}
        names = list(scenes) if sequences is None else list(sequences)
        items = []
        for name in names:
            if name not in scenes:
                raise DataError(f"scene {name!r} not in {self.root / self.version / 'scene.json'}")
            for sample in t["scene_samples"].get(scenes[name]["token"], []):
                sd = t["lidar"].get(sample["token"])
                if sd is None:
                    raise DataError(f"sample {sample['token']} of {name}: no key-frame LIDAR_TOP record in "
                                    f"{self.root / self.version / 'sample_data.json'}")
                label = None
                if with_labels:
                    rec = t["lidarseg"].get(sd["token"])
                    if rec is None:
                        raise DataError(f"sample_data {sd['token']} ({name}): no record in "
                                        f"{self.root / self.version / 'lidarseg.json'}")
                    label = self.root / rec["filename"]
                items.append(ScanItem(name, sd["token"], self.root / sd["filename"], label, sd["token"]))
        return items

    def read_points(self, item: ScanItem) -> np.ndarray:
        return read_nuscenes_points(item.points)

    def read_ring(self, item: ScanItem) -> np.ndarray:
        """The ring (laser) index of every point, int64 [N]."""
        return read_nuscenes_points(item.points, with_ring=True)[:, 4].astype(np.int64)

    def num_points(self, item: ScanItem) -> int:
        return item.points.stat().st_size // 20

    def read_rows(self, item: ScanItem, height: int) -> np.ndarray:
        """Row = 31 - ring: the HDL-32E's lasers are numbered from the lowest elevation up (its two lowest lasers
        are interleaved), so the top row holds ring 31. Needs a 32-row image."""
        if height != 32:
            raise ConfigError(f"data.rows: ring gives one row per HDL-32E laser: data.sensor.height must be 32, "
                              f"got {height}")
        ring = self.read_ring(item)
        bad = (ring < 0) | (ring > 31)
        if bad.any():
            raise DataError(f"scan file {item.points}: ring values {np.unique(ring[bad])[:5].tolist()} outside "
                            "0..31")
        return 31 - ring

    def read_raw_labels(self, item: ScanItem, num_points: int | None = None) -> np.ndarray:
        path = Path(item.labels)
        if not path.is_file():
            raise DataError(f"label file not found: {path} (listed in lidarseg.json for {item.token})")
        labels = np.fromfile(path, dtype=np.uint8)
        if num_points is not None and labels.shape[0] != num_points:
            raise DataError(f"label file {path} has {labels.shape[0]} labels but its scan {item.points} has "
                            f"{num_points} points")
        return labels.astype(np.uint32)

    # ------------------------------------------------------------------------------------------- predictions
    @staticmethod
    def eval_set(split: str | None) -> str:
        return EVAL_SET.get(split or "valid", split)

    def prediction_path(self, pred_root, item: ScanItem) -> Path:
        """PRED/lidarseg/<eval set of the item's split; val when listed by scenes>/<token>_lidarseg.bin"""
        return Path(pred_root) / "lidarseg" / self.eval_set(item.split) / f"{item.token or item.scan}_lidarseg.bin"

    def prediction_files(self, pred_root, sequences=None, split=None) -> dict[str, list[str]]:
        folder = Path(pred_root) / "lidarseg" / self.eval_set(split)
        tokens = {p.name[:-len("_lidarseg.bin")] for p in folder.glob("*_lidarseg.bin")}
        out: dict[str, list[str]] = {}
        if not tokens:
            return out
        for item in self.list_scans(sequences, with_labels=False):
            if item.scan in tokens:
                out.setdefault(item.sequence, []).append(item.scan)
        return {k: sorted(v) for k, v in out.items()}

    def extra_files(self, item: ScanItem, pred_path: Path) -> dict:
        return {"uncert": pred_path.with_name(pred_path.name.replace("_lidarseg.bin", "_uncert.bin"))}


def write_submission_meta(pred_root, split: str, use_camera=False, use_lidar=True, use_radar=False, use_map=False,
                          use_external=False) -> Path:
    """`PRED/<eval set>/submission.json` of the lidarseg benchmark (the five boolean meta flags)."""
    meta = dict(use_camera=use_camera, use_lidar=use_lidar, use_radar=use_radar, use_map=use_map,
                use_external=use_external)
    path = Path(pred_root) / NuScenesSource.eval_set(split) / "submission.json"
    atomic_write_bytes(path, (json.dumps({"meta": {k: bool(v) for k, v in meta.items()}}, indent=1) + "\n").encode())
    return path


def check_submission(pred_root, source: NuScenesSource, split: str) -> list[str]:
    """The lidarseg benchmark's checks of a submission folder: submission.json with the five boolean flags, one
    `<token>_lidarseg.bin` per sample of the split with one uint8 per point, every value in 1..C-1. Returns the
    passed checks; DataError naming the first failure."""
    pred_root = Path(pred_root)
    eval_set = source.eval_set(split)
    meta_path = pred_root / eval_set / "submission.json"
    if not meta_path.is_file():
        raise DataError(f"submission meta missing: {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())["meta"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{meta_path}: expected {{\"meta\": {{...}}}}") from None
    if set(meta) != set(SUBMISSION_META) or not all(isinstance(v, bool) for v in meta.values()):
        raise DataError(f"{meta_path}: meta must hold exactly the booleans {list(SUBMISSION_META)}")
    passed = [f"{meta_path.name}: meta flags"]
    c = source.label_map.num_classes
    items = source.items(split, labels=False)
    for item in items:
        path = source.prediction_path(pred_root, item)
        if not path.is_file():
            raise DataError(f"prediction {path} missing (sample_data {item.token}, scene {item.sequence})")
        pred = np.fromfile(path, dtype=np.uint8)
        n = source.num_points(item)
        if pred.shape[0] != n:
            raise DataError(f"prediction {path} has {pred.shape[0]} values but scan {item.points} has {n} points")
        if pred.size and (pred.min() < 1 or pred.max() >= c):
            raise DataError(f"prediction {path} holds values outside 1..{c - 1} (0 is the ignored class)")
    passed.append(f"{eval_set}: {len(items)} predictions, one uint8 in 1..{c - 1} per point")
    return passed


# ------------------------------------------------------------------------------------------------ synthetic data
def _token(*parts) -> str:
    """A deterministic 32-hex token (nuScenes tokens are 32 lowercase hex digits)."""
    import hashlib
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


#: default synthetic scenes: one of the official train split, one of the official val split
SYNTHETIC_SCENES = ("scene-0001", "scene-0003")


def write_synthetic(out, scenes=None, scans=None, seed: int = 0, azimuth_steps=None, version: str = "v1.0-trainval",
                    log=print) -> dict:
    """Simulated HDL-32E sweeps in nuScenes-lidarseg's layout (see the module docstring): `scenes` (names, default
    scene-0001 (train) and scene-0003 (val)) of `scans` key frames each (default 3), 0.5 s apart. Points are turned
    into the LIDAR_TOP frame (x right, y forward), intensity scaled to 0-255, the ring channel is the beam's rank
    by elevation (0 = lowest); labels are category indices. The JSON tables are written last. Returns
    {scene: scans}."""
    from ..io import atomic_write_bytes
    from .synthetic import TO_NUSCENES, class_lut, simulate
    from ..labels import LabelMap
    from ... import CONFIG_DIR
    if (Path(out) / version).exists() or (Path(out) / "samples").exists():
        raise ConfigError(f"{out} already holds a nuScenes dataset ({version} or samples/): writing into it would mix "
                          "two generations; choose another --out or delete it")
    lm = LabelMap.from_yaml(CONFIG_DIR / NuScenesSource.label_config)
    lut = class_lut(TO_NUSCENES)
    scenes = list(scenes or SYNTHETIC_SCENES)
    n = int(scans or 3)
    out = Path(out)
    tables = {k: [] for k in TABLES}
    for idx, name in sorted(lm.raw_names.items()):
        tables["category"].append({"token": _token("category", name), "name": name, "description": name,
                                   "index": idx})
    fov_up, fov_down = 10.67, -30.67
    for s_i, scene in enumerate(scenes):
        scene_token = _token("scene", scene)
        samples = [_token("sample", scene, i) for i in range(n)]
        sds = [_token("sample_data", scene, i) for i in range(n)]
        t0 = 1_533_151_603_547_590 + 1_000_000_000 * s_i
        for i in range(n):
            points, sem = simulate(100 + s_i, i, n, seed, "hdl32", azimuth_steps)
            x, y, z = points[:, 0], points[:, 1], points[:, 2]
            elev = np.degrees(np.arctan2(z, np.hypot(x, y)))
            ring = np.clip(np.round((elev - fov_down) / (fov_up - fov_down) * 31), 0, 31)
            data = np.stack([-y, x, z, np.round(points[:, 3] * 255.0), ring], 1).astype("<f4")
            ts = t0 + 500_000 * i
            fname = f"samples/LIDAR_TOP/n015-synthetic-{scene}__LIDAR_TOP__{ts}.pcd.bin"
            atomic_write_bytes(out / fname, data.tobytes())
            seg = f"lidarseg/{version}/{sds[i]}_lidarseg.bin"
            atomic_write_bytes(out / seg, lut[sem].astype(np.uint8).tobytes())
            tables["sample"].append({"token": samples[i], "timestamp": ts, "prev": samples[i - 1] if i else "",
                                     "next": samples[i + 1] if i + 1 < n else "", "scene_token": scene_token})
            tables["sample_data"].append({
                "token": sds[i], "sample_token": samples[i], "ego_pose_token": _token("ego_pose", scene, i),
                "calibrated_sensor_token": _token("calibrated_sensor", "LIDAR_TOP"), "timestamp": ts,
                "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0, "filename": fname,
                "prev": sds[i - 1] if i else "", "next": sds[i + 1] if i + 1 < n else ""})
            tables["lidarseg"].append({"token": sds[i], "sample_data_token": sds[i],  # as nuScenes: the same token
                                       "filename": seg})
        tables["scene"].append({"token": scene_token, "log_token": _token("log", scene), "nbr_samples": n,
                                "first_sample_token": samples[0], "last_sample_token": samples[-1], "name": scene,
                                "description": "synthetic drive (lidarseg.data.synthetic)"})
        if log:
            log(f"wrote {scene}: {n} samples")
    _devkit_tables(out, version, tables, scenes)
    for name, records in tables.items():
        atomic_write_bytes(out / version / f"{name}.json", (json.dumps(records, indent=1) + "\n").encode())
    return {s: n for s in scenes}


def _devkit_tables(out: Path, version: str, tables: dict, scenes) -> None:
    """The tables our reader does not need but the devkit's `NuScenes` loads (sensor, calibrated sensor, ego poses,
    logs, one map with a 1x1 mask, and empty annotation tables), so that it opens the synthetic dataset too."""
    from ...visualize import png_bytes
    from ..io import atomic_write_bytes
    sensor = _token("sensor", "LIDAR_TOP")
    tables["sensor"] = [{"token": sensor, "channel": "LIDAR_TOP", "modality": "lidar"}]
    tables["calibrated_sensor"] = [{"token": _token("calibrated_sensor", "LIDAR_TOP"), "sensor_token": sensor,
                                    "translation": [0.94, 0.0, 1.84], "rotation": [0.7071, 0.0, 0.0, 0.7071],
                                    "camera_intrinsic": []}]
    tables["ego_pose"] = [{"token": sd["ego_pose_token"], "timestamp": sd["timestamp"], "rotation": [1.0, 0, 0, 0],
                           "translation": [0.0, 0.0, 0.0]} for sd in tables["sample_data"]]
    tables["log"] = [{"token": _token("log", s), "logfile": f"synthetic-{s}", "vehicle": "synthetic",
                      "date_captured": "2018-08-01", "location": "synthetic"} for s in scenes]
    map_token = _token("map", "synthetic")
    tables["map"] = [{"token": map_token, "log_tokens": [r["token"] for r in tables["log"]],
                      "category": "semantic_prior", "filename": f"maps/{map_token}.png"}]
    atomic_write_bytes(out / "maps" / f"{map_token}.png", png_bytes(np.zeros((1, 1, 3), np.uint8)))
    for name in ("attribute", "visibility", "instance", "sample_annotation"):
        tables[name] = []
