"""`LabelMap`: a SemanticKITTI-style label YAML (labels, color_map, content, learning_map, learning_map_inv,
learning_ignore, split) with vectorised raw <-> train id mapping, names, colours and class weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from .. import DEFAULT_LABEL_CONFIG
from ..errors import ConfigError, DataError

REQUIRED_KEYS = ("labels", "color_map", "content", "learning_map", "learning_map_inv", "learning_ignore")


class LabelMap:
    """Raw SemanticKITTI ids (0..65535) <-> train ids (0..C-1, 0 = ignored 'unlabeled').

    Attributes: `num_classes` (C), `names` [C], `ignore` (train ids with learning_ignore), `split` (dict of lists
    of ints), `colors_bgr`/`colors_rgb` uint8 [C,3] per train id, `content` float64 [C] (summed fraction of points).
    """

    def __init__(self, cfg: dict, source: str = "<dict>"):
        missing = [k for k in REQUIRED_KEYS if k not in cfg]
        if missing:
            raise ConfigError(f"label config {source}: missing keys {missing}; expected {list(REQUIRED_KEYS)}")
        self.source = source
        self.raw_names = {int(k): str(v) for k, v in cfg["labels"].items()}
        self.learning_map = {int(k): int(v) for k, v in cfg["learning_map"].items()}
        self.learning_map_inv = {int(k): int(v) for k, v in cfg["learning_map_inv"].items()}
        self.num_classes = len(self.learning_map_inv)
        if sorted(self.learning_map_inv) != list(range(self.num_classes)):
            raise ConfigError(f"label config {source}: learning_map_inv keys must be 0..C-1")
        bad = sorted({v for v in self.learning_map.values() if not 0 <= v < self.num_classes})
        if bad:
            raise ConfigError(f"label config {source}: learning_map targets {bad} outside 0..{self.num_classes - 1}")
        self.ignore = [int(k) for k, v in cfg["learning_ignore"].items() if v]
        # sequence ids (SemanticKITTI: ints) or names (nuScenes: scene names)
        self.split = {k: [s if isinstance(s, str) else int(s) for s in (v or [])]
                      for k, v in cfg.get("split", {}).items()}
        names = cfg.get("class_names")
        if names is not None and len(names) != self.num_classes:
            raise ConfigError(f"label config {source}: class_names has {len(names)} entries for "
                              f"{self.num_classes} classes")
        self.names = ([str(n) for n in names] if names is not None else
                      [self.raw_names.get(self.learning_map_inv[c], str(c)) for c in range(self.num_classes)])

        # raw -> train LUT over the whole 16-bit range; -1 marks ids the config does not know.
        self._to_train = np.full(1 << 16, -1, dtype=np.int64)
        for raw, train in self.learning_map.items():
            self._to_train[raw] = train
        self._to_raw = np.array([self.learning_map_inv[c] for c in range(self.num_classes)], dtype=np.uint32)

        color_map = {int(k): v for k, v in cfg["color_map"].items()}
        self.colors_bgr = np.array([color_map.get(self.learning_map_inv[c], [0, 0, 0])
                                    for c in range(self.num_classes)], dtype=np.uint8)
        self.colors_rgb = self.colors_bgr[:, ::-1].copy()
        content = np.zeros(self.num_classes, dtype=np.float64)
        for raw, frac in cfg["content"].items():
            train = self.learning_map.get(int(raw))
            if train is not None:
                content[train] += float(frac)
        self.content = content

    @classmethod
    def from_yaml(cls, path=None) -> "LabelMap":
        path = Path(path) if path is not None else DEFAULT_LABEL_CONFIG
        if not path.is_file():
            raise ConfigError(f"label config not found: {path}")
        try:
            with open(path) as f:
                cfg = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ConfigError(f"label config {path}: not valid YAML ({exc})") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"label config {path}: expected a mapping at the top level")
        return cls(cfg, source=str(path))

    def to_train(self, raw: np.ndarray, source: str = "", unknown: str = "error") -> np.ndarray:
        """Raw labels (full uint32 or semantic-only) -> int64 train ids. The instance bits are dropped.

        unknown="error" raises naming the unknown ids and `source`; unknown="zero" maps them to 0 (use
        `count_unknown` to report how many)."""
        sem = np.asarray(raw).astype(np.uint32, copy=False) & np.uint32(0xFFFF)
        out = self._to_train[sem]
        if unknown not in ("error", "zero"):
            raise ValueError(f"unknown must be 'error' or 'zero', got {unknown!r}")
        bad = out < 0
        if bad.any():
            if unknown == "error":
                ids = np.unique(sem[bad])
                where = f" in {source}" if source else ""
                raise DataError(f"raw label ids {ids.tolist()[:20]} ({int(bad.sum())} points){where} are not in "
                                f"the learning_map of {self.source}")
            out = np.where(bad, 0, out)
        return out

    def count_unknown(self, raw: np.ndarray) -> int:
        sem = np.asarray(raw).astype(np.uint32, copy=False) & np.uint32(0xFFFF)
        return int((self._to_train[sem] < 0).sum())

    def to_raw(self, train: np.ndarray) -> np.ndarray:
        """Train ids -> raw ids (uint32), via learning_map_inv."""
        train = np.asarray(train)
        if train.size and (train.min() < 0 or train.max() >= self.num_classes):
            raise DataError(f"train ids must lie in 0..{self.num_classes - 1}, got {train.min()}..{train.max()}")
        return self._to_raw[train]

    def colorize(self, train: np.ndarray) -> np.ndarray:
        """Train ids [...] -> RGB uint8 [...,3] in SemanticKITTI colours."""
        return self.colors_rgb[np.asarray(train)]

    def class_weights(self, eps: float = 0.001) -> np.ndarray:
        """RangeNet++'s loss weights 1/(content + eps) per train id, 0 for ignored classes; float64 [C]."""
        w = 1.0 / (self.content + eps)
        w[self.ignore] = 0.0
        return w

    def sequences(self, split: str) -> list:
        if split not in self.split:
            raise ConfigError(f"split {split!r} not in label config {self.source}; valid: {sorted(self.split)}")
        return self.split[split]
