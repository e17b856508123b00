"""Config sections -> objects of the other packages (label map, model, loss, datasets, collate). This is the one
place that knows their constructors, so the loop and inference stay independent of them."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import DEFAULT_DATA_ROOT, PROJECT_ROOT
from ..data.labels import LabelMap
from ..errors import ConfigError

#: batch keys passed positionally to a model whose input_mode is "kprnet"
KPRNET_INPUTS = ("image", "px", "py", "xyz", "knn")


def _path(p) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() or p.exists() else PROJECT_ROOT / p


def data_root(cfg: dict) -> Path:
    root = cfg["data"]["root"]
    return _path(root) if root else DEFAULT_DATA_ROOT


def label_map(cfg: dict) -> LabelMap:
    labels = cfg["data"]["labels"]
    return LabelMap.from_yaml(_path(labels) if labels else None)


def model(cfg: dict, lm: LabelMap) -> torch.nn.Module:
    from models import build_model_from_config
    return build_model_from_config(cfg["model"], num_classes=lm.num_classes)


def loss(cfg: dict, lm: LabelMap) -> torch.nn.Module:
    from ..losses import build_loss
    return build_loss(cfg["loss"], lm)


def knn_params(cfg: dict) -> dict:
    p = cfg["postproc"]
    return {"k": int(p["k"]), "search": int(p["search"]), "sigma": float(p["sigma"]), "cutoff": float(p["cutoff"])}


def dataset(cfg: dict, which: str, mode: str, lm: LabelMap, split: str | None = None, train: bool | None = None):
    """which: "train" (augmented, data.train_split, limit_train), "val" (data.val_split, limit_val) or "infer"
    (`split` given, no augmentation, no limit)."""
    d = cfg["data"]
    root = data_root(cfg)
    if split is None:
        split = d["train_split"] if which == "train" else d["val_split"]
    if train is None:
        train = which == "train"
    sequences = d["sequences"].get(split) if isinstance(d["sequences"], dict) else None
    if mode == "range":
        from ..data.dataset import SemanticKITTI
        augment = None
        if train and d["augment"]:
            # a fixed seed makes each scan's augmentation a function of (seed, epoch, index): the same with any
            # number of workers or processes, and after a resume
            augment = {"seed": int(cfg["train"]["seed"]), **d["augment"]}
        ds = SemanticKITTI(root, split, label_map=lm, sequences=sequences, sensor=d["sensor"],
                           normalization={"mean": d["mean"], "std": d["std"]}, augmentation=augment)
    elif mode == "kprnet":
        from ..data.kprnet import KPRNetDataset, KPRNetGeometry
        geom = KPRNetGeometry.from_config(d["kprnet"] or None)
        ds = KPRNetDataset(root, split, label_map=lm, train=train, seed=int(cfg["train"]["seed"]), geometry=geom,
                           sequences=sequences)
    else:
        raise ConfigError(f"model input_mode {mode!r} is not supported; expected 'range' or 'kprnet'")
    limit = d["limit_train"] if which == "train" else d["limit_val"] if which == "val" else None
    if limit:
        ds = torch.utils.data.Subset(ds, range(min(int(limit), len(ds))))
    return ds


def collate_fn(mode: str):
    if mode == "kprnet":
        from ..data.kprnet import collate_kprnet
        return collate_kprnet
    from ..data.dataset import collate
    return collate


def set_epoch(ds, epoch: int) -> None:
    """Datasets that draw augmentation from (seed, epoch, index) get the epoch (KPRNetDataset, SemanticKITTI)."""
    inner = ds.dataset if isinstance(ds, torch.utils.data.Subset) else ds
    if hasattr(inner, "set_epoch"):
        inner.set_epoch(epoch)
