"""Inference: a checkpoint -> SemanticKITTI prediction files for a split, timed per stage, scored where labels exist.

The model is rebuilt from the config stored in the checkpoint and loaded strictly. Scans are processed one at a
time (batch 1, in the main process, so the timings are what one scan costs):
  load+project  read the .bin (and .label), project and normalise (the dataset's __getitem__), collate
  network       host-to-device copy, forward pass, argmax (CUDA synchronised before the clock stops)
  KNN           back-projection to every point: RangeNet++'s KNN, or each point's own pixel with --no-knn
  write         raw SemanticKITTI ids, one uint32 per point, sequences/NN/predictions/NNNNNN.label
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from . import builders
from .checkpoint import load_checkpoint
from .evaluator import Evaluator, point_labels

STAGES = ("load+project", "network", "knn", "write")


def load_model(checkpoint, device) -> tuple[torch.nn.Module, dict, object]:
    """(model in eval mode on `device`, resolved config, LabelMap) of a training checkpoint."""
    from models import load_state_dict_strict
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    label_map = builders.label_map(cfg)
    model = builders.model(cfg, label_map)
    load_state_dict_strict(model, state["model"], source=f"checkpoint {checkpoint}")
    return model.to(device).eval(), cfg, label_map


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def writer_info(checkpoint, state_or_cfg: dict, knn: bool, mode: str) -> dict:
    """What identifies the predictions of a run (for the prediction folder's manifest): the checkpoint (path,
    SHA-256), the dataset root and the options that change the labels (KNN and its parameters)."""
    from ..submission import file_sha256
    cfg = state_or_cfg.get("config", state_or_cfg)
    p = cfg["postproc"]
    knn = bool(knn) and mode == "range"
    return {"checkpoint": str(Path(checkpoint).resolve()), "sha256": file_sha256(checkpoint),
            "data": str(builders.data_root(cfg)),
            "knn": ({k: p[k] for k in ("k", "search", "sigma", "cutoff")} if knn else False)}


@torch.no_grad()
def predict_split(model, cfg: dict, label_map, split: str, out_root, knn: bool = True, device="cpu",
                  limit: int | None = None, progress: bool = True, writer: dict | None = None,
                  overwrite: bool = False, mc_samples: int = 0) -> dict:
    """Predict every scan of `split` (data root = cfg data.root), write the prediction files under `out_root`.
    With `writer` (see `writer_info`), the folder's manifest is checked first (no mixing with predictions of
    another writer or limit; `overwrite` deletes them) and marked complete last.
    `mc_samples` >= 2: MC-dropout (`uncertainty.mc_dropout_probs`): the prediction is the argmax of the mean softmax
    over that many passes, and each point's variance (its pixel's, 0 without a pixel) is written as float32 to
    sequences/NN/uncert/NNNNNN.label beside predictions/ (SalsaNext's layout).
    Returns {"scans", "times" {stage: [seconds per scan]}, "evaluator" (None without labels), "knn"}."""
    from ..errors import ConfigError
    from ..submission import finish_folder, prepare_folder
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"--limit must be >= 1 (a number of scans; omit it for all), got {limit}")
    device = torch.device(device)
    mode = getattr(model, "input_mode", "range")
    knn = bool(knn) and mode == "range"  # KPRNet predicts every point itself
    if mc_samples:
        from .uncertainty import check_mc_samples
        if mode != "range":
            raise ConfigError(f"--mc-samples: MC-dropout is implemented for range-image networks, not input_mode "
                              f"{mode!r}")
        check_mc_samples(model, mc_samples)
    ds = builders.dataset(cfg, "infer", mode, label_map, split=split, train=False)
    collate = builders.collate_fn(mode)
    n = len(ds) if not limit else min(len(ds), int(limit))
    knn_cfg = builders.knn_params(cfg) if knn else None
    manifest = prepare_folder(out_root, split, writer, limit, overwrite) if writer is not None else None
    written: dict[str, list[str]] = {}
    ev = Evaluator(label_map.num_classes, label_map.ignore, device, pixel=False, knn=knn)
    times = {s: [] for s in STAGES}
    labelled = False
    from ..submission import write_prediction
    from models import main_logits
    from tqdm import tqdm
    for i in tqdm(range(n), desc=f"infer {split}", disable=not progress, leave=False, dynamic_ncols=True):
        t0 = time.perf_counter()
        batch = collate([ds[i]])
        t1 = time.perf_counter()
        if mode == "range" and mc_samples:
            from .uncertainty import mc_dropout_probs
            logits, variance = mc_dropout_probs(model, batch["input"].to(device), mc_samples)
        elif mode == "range":
            logits = model(batch["input"].to(device))
        else:
            args = [batch[k].to(device) for k in builders.KPRNET_INPUTS]
            logits = model(*args, point_mask=batch["point_mask"].to(device))
        pred = main_logits(logits).argmax(1)
        _sync(device)
        t2 = time.perf_counter()
        labelled |= bool(batch["has_labels"][0])
        nb = int(batch["num_points"][0])
        if mode == "range":
            px, py = batch["px"][0, :nb].to(device), batch["py"][0, :nb].to(device)
            if knn:
                from .evaluator import knn_labels
                points = knn_labels(pred[0], batch["proj_range"][0].to(device),
                                    batch["unproj_range"][0, :nb].to(device), px, py, knn_cfg, label_map.num_classes)
            else:
                points = point_labels(pred[0], px, py)
        else:
            points = torch.zeros(nb, dtype=torch.int64, device=device)
            points[batch["point_index"][0, :nb].to(device)] = pred[0, :nb]
        _sync(device)
        t3 = time.perf_counter()
        path = write_prediction(out_root, batch["sequence"][0], batch["scan"][0], points.cpu(), label_map)
        written.setdefault(path.parent.parent.name, []).append(path.stem)
        if mc_samples:
            from ..data.io import atomic_write_bytes
            var = torch.zeros(nb, dtype=torch.float32, device=device)
            has_pixel = px >= 0
            var[has_pixel] = variance[0][py[has_pixel], px[has_pixel]]
            atomic_write_bytes(path.parent.parent / "uncert" / path.name, var.cpu().numpy().tobytes())
        t4 = time.perf_counter()
        if batch["has_labels"][0]:
            from .evaluator import confusion_add
            gt = batch["points_label"][0, :nb].to(device)
            if mode != "range":
                gt = torch.zeros_like(points).index_put_((batch["point_index"][0, :nb].to(device),), gt)
            confusion_add(ev.conf["point_knn" if knn else "point"], points, gt)
        for s, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[s].append(dt)
    if manifest is not None:
        finish_folder(out_root, manifest, split, written)
    return {"scans": n, "times": times, "evaluator": ev if labelled else None, "knn": knn, "mode": mode}


def timing_lines(times: dict, knn: bool) -> list[str]:
    """Mean and median per stage, milliseconds per scan; the first scan (numba compilation, allocator warm-up)
    is left out when there are more."""
    n = len(times["network"])
    skip = 1 if n > 1 else 0
    rows = []
    total = [0.0] * (n - skip)
    for s in STAGES:
        v = times[s][skip:]
        total = [a + b for a, b in zip(total, v)]
        label = s if s != "knn" else ("KNN" if knn else "back-projection")
        rows.append(f"  {label:<16} mean {1000 * statistics.fmean(v):8.1f} ms   median {1000 * statistics.median(v):8.1f} ms")
    rows.append(f"  {'total':<16} mean {1000 * statistics.fmean(total):8.1f} ms   "
                f"({1 / max(statistics.fmean(total), 1e-9):.1f} scans/s)")
    head = f"time per scan over {n - skip} scan(s)" + (" (first scan left out as warm-up)" if skip else "")
    return [head] + rows
