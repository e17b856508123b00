"""`ScanSource`: the one home of a dataset format's on-disk layout (scans per split, point and label readers, label
config, sequence naming, where predictions go and in what format), and the registry of sources by name."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ... import CONFIG_DIR
from ...errors import ConfigError, DataError
from ..io import atomic_write_bytes
from ..labels import LabelMap

#: name -> ScanSource subclass; filled by `register_source` where each source is defined
SOURCES: dict[str, type] = {}


def register_source(name: str):
    """Class decorator: make a ScanSource subclass available under `name` (`lidarseg.data.sources.build_source`)."""
    def add(cls):
        if name in SOURCES and SOURCES[name] is not cls:
            raise ValueError(f"scan source {name!r} is already registered by {SOURCES[name].__name__}")
        cls.name = name
        SOURCES[name] = cls
        return cls
    return add


@dataclass(frozen=True)
class ScanItem:
    """One scan of a source: `sequence` (sequence or scene name, e.g. "08", "scene-0003"), `scan` (its name within
    the sequence: "000123", a token, a file stem), the scan file, its label file (None without labels), the
    source's own id (`token`: nuScenes' sample_data token; None elsewhere) and the split it was listed for (None
    when listed by sequences)."""
    sequence: str
    scan: str
    points: Path
    labels: Path | None = None
    token: str | None = None
    split: str | None = None


class ScanSource:
    """Base class. A subclass sets the class attributes and implements `list_scans`, `read_points`,
    `read_raw_labels` and `prediction_path`; everything else has a default that fits SemanticKITTI-like formats.

    Class attributes: `label_config` (path under configs/ of the label config used when none is given), `sensor` (default
    SensorGeometry preset of its range image), `normalization` ({mean, std} of (range, x, y, z, remission) or None
    for RangeNet++'s), `prediction_ids` ("raw": predictions hold raw ids of the label config, as SemanticKITTI;
    "train": train ids, as nuScenes-lidarseg), `prediction_dtype`, `has_splits` (False: every scan is one set).
    """
    name = "base"
    label_config = "semantic-kitti.yaml"
    sensor = "hdl64"
    normalization: dict | None = None
    prediction_ids = "raw"
    prediction_dtype = "<u4"
    has_splits = True

    def __init__(self, root, label_map=None):
        self.root = Path(root)
        if label_map is None:
            label_map = CONFIG_DIR / self.label_config
        self.label_map = label_map if isinstance(label_map, LabelMap) else LabelMap.from_yaml(label_map)

    def __repr__(self):
        return f"{type(self).__name__}({str(self.root)!r})"

    # ------------------------------------------------------------------------------------------- naming, splits
    def sequence_name(self, seq) -> str:
        """A sequence given in a config or on the command line -> its canonical name."""
        if isinstance(seq, bool) or not isinstance(seq, (str, int, np.integer)) or str(seq) == "":
            raise ConfigError(f"sequences: expected names or integers, got {seq!r}")
        return str(seq)

    def split_sequences(self, split: str) -> list[str]:
        """The sequence names of `split` (from the label config)."""
        return [self.sequence_name(s) for s in self.label_map.sequences(split)]

    def split_has_labels(self, split: str) -> bool:
        return split != "test"

    def resolve(self, split: str | None = None, sequences=None) -> list[str] | None:
        """`sequences` (names or ints) when given, else the split's list."""
        if sequences is not None:
            return [self.sequence_name(s) for s in sequences]
        if not self.has_splits:
            return None
        if split is None:
            raise ConfigError(f"{self.name}: give a split or sequences")
        return self.split_sequences(split)

    def items(self, split: str | None = None, sequences=None, labels: bool | None = None) -> list[ScanItem]:
        """The scans of `split` (or of `sequences`), each tagged with the split; `labels` None = whether the
        split has labels."""
        with_labels = self.split_has_labels(split) if labels is None else bool(labels)
        return [replace(it, split=split) for it in self.list_scans(self.resolve(split, sequences), with_labels)]

    # ------------------------------------------------------------------------------------------- reading
    def list_scans(self, sequences, with_labels: bool) -> list[ScanItem]:
        """Every scan of `sequences` (canonical names; None = all), sorted by sequence then scan; with
        `with_labels`, each with its label file (a missing one is a DataError naming it)."""
        raise NotImplementedError

    def label_items(self, sequences, split: str | None = None) -> list[ScanItem]:
        """The labelled scans of `sequences` for evaluating prediction files (the scans themselves need not be
        present where the format allows it, as SemanticKITTI's official evaluator)."""
        return [replace(it, split=split) for it in self.list_scans(sequences, with_labels=True)]

    def read_points(self, item: ScanItem) -> np.ndarray:
        """float32 [N,4]: x, y, z (metres, sensor frame), remission (on the source's own scale)."""
        raise NotImplementedError

    def read_raw_labels(self, item: ScanItem, num_points: int | None = None) -> np.ndarray:
        """Raw label ids [N] (ids of the label config's `labels`), checked against `num_points`."""
        raise NotImplementedError

    def read_train_labels(self, item: ScanItem, num_points: int | None = None, unknown: str = "error") -> np.ndarray:
        """Train ids int64 [N] of the scan's labels (0 for every point when it has none)."""
        if item.labels is None:
            if num_points is None:
                raise ValueError("read_train_labels: an unlabelled scan needs num_points")
            return np.zeros(num_points, np.int64)
        raw = self.read_raw_labels(item, num_points)
        return self.label_map.to_train(raw, source=str(item.labels), unknown=unknown)

    def num_points(self, item: ScanItem) -> int:
        return int(self.read_points(item).shape[0])

    def read_rows(self, item: ScanItem, height: int) -> np.ndarray:
        """Range-image row of every point from the sensor's laser index (for `data.rows: ring`), int64 [N]."""
        raise ConfigError(f"data.rows: ring needs a laser (ring) channel; the {self.name} format has none "
                          "(use data.rows: elevation)")

    # ------------------------------------------------------------------------------------------- predictions
    def prediction_path(self, pred_root, item: ScanItem) -> Path:
        raise NotImplementedError

    def encode_prediction(self, train_ids: np.ndarray) -> np.ndarray:
        """Train ids [N] -> the array written to a prediction file (raw ids or train ids)."""
        train_ids = np.asarray(train_ids)
        if self.prediction_ids == "raw":
            return self.label_map.to_raw(train_ids).astype(self.prediction_dtype)
        if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= self.label_map.num_classes):
            raise DataError(f"train ids must lie in 0..{self.label_map.num_classes - 1}")
        return train_ids.astype(self.prediction_dtype)

    def write_prediction(self, pred_root, item: ScanItem, train_ids) -> Path:
        """Write train ids [N] (numpy or torch) in the source's prediction format, atomically; returns the path."""
        if hasattr(train_ids, "detach"):
            train_ids = train_ids.detach().cpu().numpy()
        train_ids = np.asarray(train_ids)
        if train_ids.ndim != 1 or not np.issubdtype(train_ids.dtype, np.integer):
            raise DataError(f"prediction for {item.sequence}/{item.scan}: expected integer train ids [N], got "
                            f"{train_ids.dtype} {train_ids.shape}")
        path = self.prediction_path(pred_root, item)
        atomic_write_bytes(path, np.ascontiguousarray(self.encode_prediction(train_ids)).tobytes())
        return path

    def read_prediction(self, path) -> np.ndarray:
        """The ids stored in a prediction file (raw or train ids, see `prediction_ids`)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"prediction file not found: {path}")
        size = path.stat().st_size
        item = np.dtype(self.prediction_dtype).itemsize
        if size % item:
            raise DataError(f"prediction file {path}: size {size} bytes is not a multiple of {item}")
        return np.fromfile(path, dtype=self.prediction_dtype)

    def prediction_files(self, pred_root, sequences=None, split: str | None = None) -> dict[str, list[str]]:
        """{sequence: sorted scan names} of the prediction files present under `pred_root`."""
        raise NotImplementedError

    def extra_files(self, item: ScanItem, pred_path: Path) -> dict:
        """Files written beside a prediction by `infer` options (e.g. MC-dropout variances): {kind: path}."""
        return {"uncert": pred_path.parent.parent / "uncert" / pred_path.name}
