"""Config sections -> objects of the other packages (label map, scan source, model, loss, datasets). This is the
one place that knows their constructors, so the loop and inference stay independent of them; what depends on the
model's input family is asked of its representation (`lidarseg.data.representation`)."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import DEFAULT_DATA_ROOT, PROJECT_ROOT
from ..data.labels import LabelMap
from ..errors import ConfigError


def _path(p) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() or p.exists() else PROJECT_ROOT / p


def data_root(cfg: dict) -> Path:
    root = cfg["data"]["root"]
    return _path(root) if root else DEFAULT_DATA_ROOT


def label_map(cfg: dict) -> LabelMap:
    """data.labels, else the label config of data.format."""
    from .. import CONFIG_DIR
    from ..data.sources import source_class
    labels = cfg["data"]["labels"]
    return LabelMap.from_yaml(_path(labels) if labels else CONFIG_DIR / source_class(data_format(cfg)).label_config)


def data_format(cfg: dict) -> str:
    return cfg["data"].get("format") or "semantic-kitti"


def scan_source(cfg: dict, lm: LabelMap, root=None):
    """The ScanSource of data.format over `root` (default data.root)."""
    from ..data.sources import build_source
    return build_source(data_format(cfg), root if root is not None else data_root(cfg), label_map=lm)


def model(cfg: dict, lm: LabelMap) -> torch.nn.Module:
    from ..models import build_model_from_config
    return build_model_from_config(cfg["model"], num_classes=lm.num_classes)


def loss(cfg: dict, lm: LabelMap) -> torch.nn.Module:
    from ..losses import build_loss
    return build_loss(cfg["loss"], lm)


def knn_params(cfg: dict) -> dict:
    p = cfg["postproc"]
    return {"k": int(p["k"]), "search": int(p["search"]), "sigma": float(p["sigma"]), "cutoff": float(p["cutoff"])}


def dataset(cfg: dict, which: str, representation, lm: LabelMap, split: str | None = None,
            train: bool | None = None, sequences=None, source=None):
    """which: "train" (augmented, data.train_split, limit_train), "val" (data.val_split, limit_val) or "infer"
    (`split` given, or None for a source without splits; no augmentation, no limit). `representation`: a
    Representation or its name (a model's `input_mode`); `source`: a ScanSource (default: data.format over
    data.root); `sequences` overrides the config's data.sequences of the split."""
    from ..data.representation import Representation, get_representation
    rep = representation if isinstance(representation, Representation) else get_representation(representation)
    d = cfg["data"]
    if split is None and which != "infer":
        split = d["train_split"] if which == "train" else d["val_split"]
    if train is None:
        train = which == "train"
    src = source if source is not None else scan_source(cfg, lm)
    if which != "infer" and not src.has_splits:
        raise ConfigError(f"data.format {src.name}: training and validation need labelled splits; a folder of "
                          "scans is for `lidarseg infer --scans`")
    if sequences is None and split is not None and src.has_splits and isinstance(d["sequences"], dict):
        sequences = d["sequences"].get(split)
    ds = rep.dataset(cfg, src, split, sequences, train)
    limit = d["limit_train"] if which == "train" else d["limit_val"] if which == "val" else None
    if limit:
        ds = torch.utils.data.Subset(ds, range(min(int(limit), len(ds))))
    return ds


def _unwrapped(ds):
    return ds.dataset if isinstance(ds, torch.utils.data.Subset) else ds


def epoch_reaches_workers(ds) -> bool:
    """True when DataLoader workers started once still follow `set_epoch`: datasets without epochs, and those that
    keep the epoch in shared memory (`epoch_shared`, as `lidarseg.data.augment.EpochStream` datasets do)."""
    inner = _unwrapped(ds)
    return not hasattr(inner, "set_epoch") or bool(getattr(inner, "epoch_shared", False))


def set_epoch(ds, epoch: int) -> None:
    """Datasets that draw augmentation from (seed, epoch, index) get the epoch (KPRNetDataset, SemanticKITTI)."""
    inner = _unwrapped(ds)
    if hasattr(inner, "set_epoch"):
        inner.set_epoch(epoch)
