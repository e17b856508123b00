"""`lidarseg bench gpu`: the measurements of one prepared GPU run (scripts/gpu_check.sh), as JSON and Markdown.

Sections (each skipped with a note where the device or the time budget does not allow it):
  loss       the subclassified loss forward+backward (every path, the published dense form, plain CE) at 64x2048 and
             64x512 batch 8, 20 classes, and at a Cityscapes-size [8,19,512,1024]; CUDA events, medians of >= 10,
             peak memory from torch.cuda.max_memory_allocated (`lidarseg bench loss` per shape)
  crossover  weight computation alone, windowed against dense (and, on CUDA, dense under torch.compile), over
             image sizes: where path="auto" should switch
  step       a training step (forward, CE on every head, backward, SGD) of every registered network at its paper
             resolution, batch 8: fp32, bf16 autocast, bf16 + channels_last, bf16 + torch.compile; scans/s, peak memory
`--report DIR` instead merges the files a gpu_check run leaves in DIR (this benchmark's JSON, the pytest summary,
the training log and the inference JSON) into DIR/gpu.json and DIR/gpu.md.
Runs on CPU too (small sizes, no compile), so the script can be checked without a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import statistics
import time
from pathlib import Path

import torch

from .common import median_ms, time_on

LOSS_SHAPES = ((8, 20, 64, 2048), (8, 20, 64, 512), (8, 19, 512, 1024))
CPU_LOSS_SHAPES = ((2, 20, 64, 512),)
CROSSOVER_SIZES = ((64, 512), (64, 1024), (64, 2048), (128, 2048), (256, 1024), (512, 1024))
CPU_CROSSOVER_SIZES = ((32, 256), (64, 512))
#: paper training input (H, W) of the range networks; KPRNet uses its own crop (its representation's example_inputs)
PAPER_INPUT = {"rangenet21": (64, 2048), "rangenet53": (64, 2048), "cenet": (64, 2048), "salsanext": (64, 2048)}
STEP_MODES = ("fp32", "bf16", "bf16_channels_last", "bf16_compile")


def add_arguments(parser):
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--sections", default="loss,crossover,step", help="comma-separated: loss, crossover, step")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds for all sections; a section or compile starting after that is skipped")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per measurement (median)")
    parser.add_argument("--models", default="", help="comma-separated registered networks (default: all)")
    parser.add_argument("--report", metavar="DIR", help="merge a gpu_check run's files in DIR into gpu.json/gpu.md")


# ---------------------------------------------------------------- sections
def loss_section(device, repeat: int, log) -> list[dict]:
    from . import loss as loss_bench
    shapes = LOSS_SHAPES if device.type == "cuda" else CPU_LOSS_SHAPES
    out = []
    for B, C, H, W in shapes:
        ns = argparse.Namespace(batch=B, classes=C, height=H, width=W, repeat=repeat, logits="clustered",
                                device=str(device), no_dense=False, no_memory=False, seed=0,
                                methods="", memory_of=None)
        r = loss_bench.measure(ns)
        loss_bench.print_result(r)
        out.append(r)
        log(f"loss {B}x{C}x{H}x{W} done")
    return out


def crossover_section(device, repeat: int, log) -> dict:
    """Weight-map time of the two pair searches over image sizes (batch 8, 20 classes) and the largest size
    (pairs per image) up to which dense was faster at every size measured."""
    from lidarseg.losses.subclassified import SubclassifiedLoss
    from .loss import make_logits, range_labels
    sizes = CROSSOVER_SIZES if device.type == "cuda" else CPU_CROSSOVER_SIZES
    rows = []
    for H, W in sizes:
        y = range_labels(8 if device.type == "cuda" else 2, H, W, 20)
        s = make_logits(y, 20).to(device)
        y = y.to(device)
        row = {"size": [H, W], "pairs_per_image": (H // 4) * (W // 4) * (H // 8) * (W // 8)}
        paths = [("windowed", SubclassifiedLoss(path="windowed")), ("dense", SubclassifiedLoss(path="dense"))]
        if device.type == "cuda":
            paths.append(("dense_compiled", SubclassifiedLoss(path="dense", compile_dense=True)))
        for key, L in paths:
            row[f"{key}_ms"] = median_ms(time_on(device, lambda: L.weights(s, y), repeat=repeat, warmup=2))
        rows.append(row)
        log(f"crossover {H}x{W}: " + ", ".join(f"{k[:-3]} {v:.2f} ms" for k, v in row.items() if k.endswith("_ms")))
    compiled = _compiled_dense_counts(device, repeat, log) if device.type == "cuda" else None
    limit = 0
    for row in sorted(rows, key=lambda r: r["pairs_per_image"]):
        if row["dense_ms"] >= row["windowed_ms"]:
            break
        limit = row["pairs_per_image"]
    return {"rows": rows, "dense_faster_up_to_pairs": limit, "pair_counting_64x2048": compiled}


def _compiled_dense_counts(device, repeat: int, log) -> dict:
    """The pair counting alone at 64x2048 batch 8: windowed, dense, and dense with `compiled=True` (the loss's
    compile_dense option: is fusing the comparisons worth it, and are the counts still exact?)."""
    import torch.nn.functional as F
    from lidarseg.losses.subclassified import dense_counts, subclass_counts
    from .loss import make_logits, range_labels
    y = range_labels(8, 64, 2048, 20)
    s = make_logits(y, 20).to(device)
    y = y.to(device)
    q = F.interpolate(s, (16, 512), mode="bilinear").reshape(8, 20, -1)
    r = F.interpolate(s, (8, 256), mode="bilinear").reshape(8, 20, -1)
    yq, yr = y[:, ::4, ::4].reshape(8, -1), y[:, ::8, ::8].reshape(8, -1)
    aq, ar = yq != 0, yr != 0
    out = {}
    ref = subclass_counts(q, yq, aq, r, yr, ar, 0.98)
    for name, fn in (("windowed", subclass_counts), ("dense", dense_counts),
                     ("dense_compiled", lambda *a: dense_counts(*a, compiled=True))):
        t0 = time.perf_counter()
        try:
            same = bool(torch.equal(fn(q, yq, aq, r, yr, ar, 0.98), ref))
            out[name] = {"median_ms": median_ms(time_on(device, lambda: fn(q, yq, aq, r, yr, ar, 0.98),
                                                        repeat=repeat, warmup=2)),
                         "equal_to_windowed": same, "first_call_s": time.perf_counter() - t0}
        except Exception as exc:  # noqa: BLE001 - compile may fail on a machine; report it
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        log(f"pair counting 64x2048 {name}: {out[name]}")
    return out


def _step_setup(name: str, mode: str, batch: int, device):
    """(step function, input label) for one network and mode."""
    from .. import models
    from ..data.representation import representation_of
    channels_last = mode == "bf16_channels_last"
    # RangeNet keeps its own channels_last option (on by default): set it to the mode's layout
    opts = {"channels_last": channels_last} if "channels_last" in models.model_options(name) else {}
    model = models.build_model(name, 20, None, **opts).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run_model = torch.compile(model) if mode == "bf16_compile" else model
    size = PAPER_INPUT.get(name, (64, 2048))
    if device.type != "cuda":
        size = (size[0] // 2, size[1] // 8)
    inputs, y, label = representation_of(model).example_inputs(batch, size, 30000 if device.type == "cuda" else 3000,
                                                               device, train=True)
    if channels_last:
        inputs = (inputs[0].contiguous(memory_format=torch.channels_last),) + inputs[1:]
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    amp = mode != "fp32"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = run_model(*inputs)
        heads = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(torch.nn.functional.cross_entropy(h.float(), y, ignore_index=0) for h in heads)
        loss.backward()
        opt.step()
    return step, label


def step_section(device, batch: int, repeat: int, names, deadline: float, log) -> list[dict]:
    rows = []
    if device.type != "cuda":
        batch = min(batch, 2)
    for name in names:
        for mode in STEP_MODES:
            row = {"model": name, "mode": mode, "batch": batch}
            if mode == "bf16_compile" and (device.type != "cuda" or time.perf_counter() > deadline - 60):
                row["skipped"] = "no CUDA" if device.type != "cuda" else "time budget"
                rows.append(row)
                continue
            if time.perf_counter() > deadline:
                row["skipped"] = "time budget"
                rows.append(row)
                continue
            try:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                step, label = _step_setup(name, mode, batch, device)
                times = time_on(device, step, repeat=repeat, warmup=3 if mode != "bf16_compile" else 2)
                ms = median_ms(times)
                row.update(input=label, median_ms=ms, scans_per_s=1000.0 * batch / ms,
                           spread_ms=[1000 * min(times), 1000 * max(times)],
                           setup_and_warmup_s=time.perf_counter() - t0 - sum(times),
                           peak_mb=torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None)
            except Exception as exc:  # noqa: BLE001 - a mode that fails is reported, the others still run
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            rows.append(row)
            log(f"step {name} {mode}: " + (f"{row['median_ms']:.1f} ms, {row['scans_per_s']:.1f} scans/s"
                                           if "median_ms" in row else row.get("skipped") or row.get("error")))
    return rows


# ---------------------------------------------------------------- report
def _train_log(path: Path) -> dict | None:
    """Epoch lines of `lidarseg train` -> data-wait shares (steady state: epochs after the first)."""
    if not path.is_file():
        return None
    pat = re.compile(r"epoch (\d+)/(\d+)\s+step (\d+).*?([\d.]+) scans/s\s+(\d+) s\s+waiting for data ([\d.]+) % "
                     r"\(first batch (\d+) ms, ([\d.]+) % after it\)")
    keys = ("epoch", "epochs", "step", "scans_per_s", "seconds", "data_wait_pct", "first_batch_ms",
            "steady_data_wait_pct")
    epochs = [dict(zip(keys, (float(v) for v in m.groups())))
              for m in pat.finditer(path.read_text(errors="replace"))]
    if not epochs:
        return {"epochs": [], "note": "no epoch lines found"}
    later = epochs[1:] or epochs
    return {"epochs": epochs, "steps": int(epochs[-1]["step"]),
            "median_scans_per_s": statistics.median(e["scans_per_s"] for e in later),
            "median_data_wait_pct": statistics.median(e["data_wait_pct"] for e in later),
            "median_steady_data_wait_pct": statistics.median(e["steady_data_wait_pct"] for e in later),
            "median_first_batch_ms": statistics.median(e["first_batch_ms"] for e in later)}


def report(out_dir: Path) -> dict:
    out_dir = Path(out_dir)

    def load(name):
        p = out_dir / name
        return json.loads(p.read_text()) if p.is_file() else None
    data = {"bench": load("bench.json"), "infer": load("infer.json"), "train": _train_log(out_dir / "train.log"),
            "train_bf16": _train_log(out_dir / "train-bf16.log"), "env": load("env.json")}
    pytest_txt = out_dir / "pytest.txt"
    data["pytest"] = pytest_txt.read_text(errors="replace").strip().splitlines()[-1:] if pytest_txt.is_file() else None
    from lidarseg.data.io import atomic_write_bytes
    atomic_write_bytes(out_dir / "gpu.json", (json.dumps(data, indent=1) + "\n").encode())
    atomic_write_bytes(out_dir / "gpu.md", markdown(data).encode())
    return data


def markdown(data: dict) -> str:
    lines = []
    env = data.get("env") or {}
    lines.append(f"GPU run of {env.get('date', '?')}: {env.get('device', '?')}, driver {env.get('driver', '?')}, "
                 f"torch {env.get('torch', '?')} (CUDA {env.get('cuda', '?')}), {env.get('cpus', '?')} CPUs.")
    lines.append("")
    lines.append(f"CUDA-marked tests: {' '.join(data.get('pytest') or ['not run'])}")
    bench = data.get("bench") or {}
    for r in bench.get("loss", []):
        B, C, H, W = r["shape"]
        lines += ["", f"Loss forward+backward [{B},{C},{H},{W}] (auto path: {r['auto_path']}; "
                      f"checks: {r['checks']})", "",
                  "| method | median ms | min ms | extra peak MB | time / CE |", "|---|---|---|---|---|"]
        for m in r["methods"].values():
            mem = "-" if m["peak_extra_mb"] is None else f"{m['peak_extra_mb']:.0f}"
            lines.append(f"| {m['label']} | {m['median_ms']:.2f} | {m['min_ms']:.2f} | {mem} | "
                         f"{m['time_over_ce']:.2f}x |")
    cross = bench.get("crossover")
    if cross:
        lines += ["", "Weight map alone, windowed vs dense (batch 8, 20 classes):", "",
                  "| size | pairs per image | windowed ms | dense ms | dense compiled ms |", "|---|---|---|---|---|"]
        for row in cross["rows"]:
            comp = f"{row['dense_compiled_ms']:.2f}" if "dense_compiled_ms" in row else "-"
            lines.append(f"| {row['size'][0]}x{row['size'][1]} | {row['pairs_per_image']} | "
                         f"{row['windowed_ms']:.2f} | {row['dense_ms']:.2f} | {comp} |")
        lines.append(f"\nDense faster up to {cross['dense_faster_up_to_pairs']} pairs per image.")
        for name, r in (cross.get("pair_counting_64x2048") or {}).items():
            lines.append(f"- pair counting alone at 64x2048 batch 8, {name}: {r}")
    steps = bench.get("step")
    if steps:
        lines += ["", "Training step (forward, CE on every head, backward, SGD), batch per row:", "",
                  "| network | input | mode | median ms | scans/s | peak MB |", "|---|---|---|---|---|---|"]
        for row in steps:
            if "median_ms" in row:
                peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.0f}"
                lines.append(f"| {row['model']} | {row['input']} b{row['batch']} | {row['mode']} | "
                             f"{row['median_ms']:.1f} | {row['scans_per_s']:.1f} | {peak} |")
            else:
                lines.append(f"| {row['model']} | - | {row['mode']} | {row.get('skipped') or row.get('error')} "
                             "| - | - |")
    for key, what in (("train", "fp32"), ("train_bf16", "bf16 autocast + channels_last")):
        tr = data.get(key)
        if tr and tr.get("epochs"):
            lines += ["", f"`lidarseg train` end to end ({what}): {tr['steps']} steps, median "
                          f"{tr['median_scans_per_s']:.1f} scans/s; waiting for data {tr['median_data_wait_pct']:.1f} % "
                          f"of an epoch, of which the first batch (worker start) {tr['median_first_batch_ms']:.0f} ms; "
                          f"{tr['median_steady_data_wait_pct']:.1f} % after it (medians over the epochs after the "
                          "first)."]
    inf = data.get("infer")
    if inf and inf.get("seconds_per_scan"):
        parts = []
        for stage, v in inf["seconds_per_scan"].items():
            v = v[1:] if len(v) > 1 else v
            parts.append(f"{stage} {1000 * statistics.median(v):.1f} ms")
        lines += ["", f"`lidarseg infer` per scan on {env.get('device', '?')} (median, first scan left out): "
                  + ", ".join(parts) + "."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main
def run(args) -> int:
    if args.report:
        data = report(Path(args.report))
        print(markdown(data))
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    deadline = start + args.budget
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    from .. import models
    names = [n.strip() for n in args.models.split(",") if n.strip()] or models.list_models()
    result = {"date": str(datetime.date.today()), "torch": torch.__version__, "device": str(device),
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
              "sections": sections}

    def log(msg):
        print(f"[bench gpu {time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    def save():
        if args.json:
            from lidarseg.data.io import atomic_write_bytes
            atomic_write_bytes(args.json, (json.dumps(result, indent=1) + "\n").encode())
    for section in sections:
        if time.perf_counter() > deadline:
            result[section] = {"skipped": "time budget"}
            continue
        try:
            if section == "loss":
                result["loss"] = loss_section(device, args.repeat, log)
            elif section == "crossover":
                result["crossover"] = crossover_section(device, args.repeat, log)
            elif section == "step":
                result["step"] = step_section(device, args.batch, args.repeat, names, deadline, log)
            else:
                log(f"unknown section {section!r}")
                return 2
        except Exception as exc:  # noqa: BLE001 - keep what the other sections measured
            result[section] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{section} failed: {type(exc).__name__}: {exc}")
        save()
    log("done")
    return 0
