"""Inference: a checkpoint -> prediction files for a split (or sequences, or a folder of scans) of any scan source,
timed per stage, scored where labels exist.

The model is rebuilt from the config stored in the checkpoint and loaded strictly. Scans are processed one at a
time (batch 1, in the main process, so the timings are what one scan costs):
  load+project  read the .bin (and .label), project and normalise (the dataset's __getitem__), collate
  network       host-to-device copy, forward pass, argmax (CUDA synchronised before the clock stops)
  KNN           back-projection to every point: RangeNet++'s KNN, or each point's own pixel with --no-knn
  write         the source's prediction format (SemanticKITTI: raw ids, one uint32 per point,
                sequences/NN/predictions/NNNNNN.label)
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from . import builders
from .checkpoint import load_checkpoint
from .evaluator import Evaluator

STAGES = ("load+project", "network", "knn", "write")


def load_model(checkpoint, device) -> tuple[torch.nn.Module, dict, object]:
    """(model in eval mode on `device`, resolved config, LabelMap) of a training checkpoint."""
    from ..models import load_state_dict_strict
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    label_map = builders.label_map(cfg)
    model = builders.model(cfg, label_map)
    load_state_dict_strict(model, state["model"], source=f"checkpoint {checkpoint}")
    return model.to(device).eval(), cfg, label_map


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def writer_info(checkpoint, state_or_cfg: dict, knn: bool, mode: str, tta=None) -> dict:
    """What identifies the predictions of a run (for the prediction folder's manifest): the checkpoint (path,
    SHA-256), the dataset root and the options that change the labels (KNN and its parameters, TTA votes)."""
    from ..submission import file_sha256
    cfg = state_or_cfg.get("config", state_or_cfg)
    p = cfg["postproc"]
    from ..data.representation import get_representation
    knn = bool(knn) and get_representation(mode).image_output
    return {"checkpoint": str(Path(checkpoint).resolve()), "sha256": file_sha256(checkpoint),
            "data": str(builders.data_root(cfg)),
            "knn": ({k: p[k] for k in ("k", "search", "sigma", "cutoff")} if knn else False),
            **({"tta": tta.to_dict()} if tta is not None and tta.active else {})}


@torch.no_grad()
def predict_split(model, cfg: dict, label_map, split: str | None, out_root, knn: bool = True, device="cpu",
                  limit: int | None = None, progress: bool = True, writer: dict | None = None,
                  overwrite: bool = False, mc_samples: int = 0, sequences=None, source=None, tta=None) -> dict:
    """Predict every scan of `split` (or of `sequences`) of `source` (a ScanSource; default data.format over
    data.root) and write the prediction files under `out_root`, in the source's prediction format.
    With `writer` (see `writer_info`), the folder's manifest is checked first (no mixing with predictions of
    another writer or limit; `overwrite` deletes them) and marked complete last.
    `mc_samples` >= 2: MC-dropout (`uncertainty.mc_dropout_probs`): the prediction is the argmax of the mean softmax
    over that many passes, and each point's variance (its pixel's, 0 without a pixel) is written as float32 beside
    the prediction (SemanticKITTI: sequences/NN/uncert/NNNNNN.label, SalsaNext's layout).
    `tta`: a `tta.TTA` or its text ("flip,shift:4"): the argmax of the mean softmax over its votes (the
    representation's `tta_probs`: range images lidarseg.engine.tta, KPRNet flip votes).
    Returns {"scans", "times" {stage: [seconds per scan]}, "evaluator" (None without labels), "knn", "tta"}."""
    from ..data.io import atomic_write_bytes
    from ..data.representation import representation_of
    from ..errors import ConfigError
    from .. import submission
    from ..submission import finish_folder, prepare_folder
    from ..models import main_logits
    from tqdm import tqdm
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"--limit must be >= 1 (a number of scans; omit it for all), got {limit}")
    device = torch.device(device)
    rep = representation_of(model)
    knn = bool(knn) and rep.image_output  # point-predicting networks label every point themselves
    if mc_samples:
        from .uncertainty import check_mc_samples
        if not rep.image_output:
            raise ConfigError(f"--mc-samples: MC-dropout is implemented for range-image networks, not input_mode "
                              f"{rep.name!r}")
        check_mc_samples(model, mc_samples)
    from .tta import TTA
    tta = TTA.parse(tta)
    rep.check_tta(tta)
    if tta.active and mc_samples:
        raise ConfigError("--tta and --mc-samples cannot be combined (both average softmax over several passes)")
    src = source if source is not None else builders.scan_source(cfg, label_map)
    ds = builders.dataset(cfg, "infer", rep, label_map, split=split, train=False, sequences=sequences, source=src)
    n = len(ds) if not limit else min(len(ds), int(limit))
    knn_cfg = builders.knn_params(cfg) if knn else None
    run_name = split or "scans"
    manifest = prepare_folder(out_root, run_name, writer, limit, overwrite, src) if writer is not None else None
    written: dict[str, list[str]] = {}
    ev = Evaluator(label_map.num_classes, label_map.ignore, device, pixel=False, knn=knn)
    kind = "point_knn" if knn else "point"
    times = {s: [] for s in STAGES}
    labelled = False
    for i in tqdm(range(n), desc=f"infer {run_name}", disable=not progress, leave=False, dynamic_ncols=True):
        t0 = time.perf_counter()
        batch = rep.collate([ds[i]])
        t1 = time.perf_counter()
        if mc_samples:
            from .uncertainty import mc_dropout_probs
            logits, variance = mc_dropout_probs(model, batch["input"].to(device), mc_samples)
        elif tta.active:
            logits = rep.tta_probs(model, batch, device, tta, ds)
        else:
            logits = rep.forward(model, batch, device)
        pred = main_logits(logits).argmax(1)
        _sync(device)
        t2 = time.perf_counter()
        labelled |= bool(batch["has_labels"][0])
        points, gt = rep.point_predictions(pred, batch, 0, knn_cfg, label_map.num_classes)
        _sync(device)
        t3 = time.perf_counter()
        item = ds.items[i]
        path = submission.write_prediction(out_root, item.sequence, item.scan, points.cpu(), label_map, src, item)
        written.setdefault(item.sequence, []).append(item.scan)
        if mc_samples:
            nb = int(batch["num_points"][0])
            px, py = batch["px"][0, :nb].to(device), batch["py"][0, :nb].to(device)
            var = torch.zeros(nb, dtype=torch.float32, device=device)
            has_pixel = px >= 0
            var[has_pixel] = variance[0][py[has_pixel], px[has_pixel]]
            atomic_write_bytes(src.extra_files(item, path)["uncert"], var.cpu().numpy().tobytes())
        t4 = time.perf_counter()
        if batch["has_labels"][0]:
            ev.add_points(kind, points, gt)
        for s, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[s].append(dt)
    if manifest is not None:
        finish_folder(out_root, manifest, run_name, written)
    return {"scans": n, "times": times, "evaluator": ev if labelled else None, "knn": knn, "mode": rep.name,
            "source": src, "tta": tta}


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
        rows.append(f"  {label:<16} mean {1000 * statistics.fmean(v):8.1f} ms   "
                    f"median {1000 * statistics.median(v):8.1f} ms")
    rows.append(f"  {'total':<16} mean {1000 * statistics.fmean(total):8.1f} ms   "
                f"({1 / max(statistics.fmean(total), 1e-9):.1f} scans/s)")
    head = f"time per scan over {n - skip} scan(s)" + (" (first scan left out as warm-up)" if skip else "")
    return [head] + rows
