"""Network comparison on the synthetic dataset at equal CPU time: the demo's RangeNet21 against a small CENet, each
with CE + Lovasz and with the subclassified loss + Lovasz, for each seed.

    python3 scripts/compare_networks.py --out runs/compare-networks --seeds 0 1 --parallel 8 --threads 2 \
        --budget-seconds 300 --report runs/compare-networks/report.md

Every run starts from configs/demo.yaml (data, optimizer, schedule, batch, augmentation) and changes only the
model and the loss section. Equal CPU time: each variant's step time (forward, loss over every head, backward,
optimizer step, `--threads` torch threads, one batch of the training split) is measured first, one variant after
the other in this process; the demo recipe (RangeNet21 with the demo's own loss) defines the budget, the demo's
epochs x its step time, capped by `--budget-seconds` (0: no cap); each variant gets the number of epochs that its
step time fits in that budget (at least 1). The runs then train in parallel (`--parallel` processes, no
DataLoader workers, no validation), are predicted with KNN (`lidarseg infer`) and scored (`lidarseg evaluate`).
Output: OUT/<variant>/seed<S>/{train.log, eval.json, meta.json}, OUT/calibration.json and the Markdown report.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = "configs/demo.yaml"
CENET_SMALL = ["model={name: cenet, width: 0.125, layers: [1, 1, 1, 1], act: hardswish, aux_heads: true}",
               "train.head_weights=[1.0, 1.0, 1.0, 1.0]"]
RANGENET_DEMO: list[str] = []          # the demo's model section as it is
LOSSES = {
    "ce_lovasz": ["loss=[{name: ce}, {name: lovasz}]"],
    # the demo's subclassified options (eps 1, power 1), Lovasz added as for the CE variant
    "subclassified_lovasz": ["loss=[{name: subclassified, eps: 1.0, power: 1.0}, {name: lovasz}]"],
}
NETWORKS = {"rangenet21": RANGENET_DEMO, "cenet": CENET_SMALL}
LABELS = {"rangenet21": "RangeNet21 (demo)", "cenet": "CENet small", "ce_lovasz": "CE + Lovasz",
          "subclassified_lovasz": "subclassified + Lovasz"}


def variants() -> dict[str, list[str]]:
    return {f"{net}-{loss}": NETWORKS[net] + LOSSES[loss] for net in NETWORKS for loss in LOSSES}


def step_seconds(overrides: list[str], threads: int, data: Path, steps: int = 5) -> tuple[float, int, int]:
    """(median seconds per optimizer step, steps per epoch, configured epochs) of the demo config + overrides."""
    import tempfile

    import torch

    from lidarseg.engine.config import load_config
    from lidarseg.engine.trainer import Trainer
    cfg = load_config(ROOT / DEMO, [*overrides, f"data.root={data}", f"train.threads={threads}", "data.workers=0",
                                    "val.every=0", "train.progress=false"])
    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(cfg, Path(tmp) / "run", log=lambda *a, **k: None)
        loader = t._loader(t.train_set, t.sampler, t.batch, drop_last=True)
        batch = next(iter(loader))
        t.model.train()
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            logits, target = t.forward(batch)
            loss = t.loss_fn(logits, target)
            loss.backward()
            t.optimizer_step()
            if i:                                           # the first step is warm-up
                times.append(time.perf_counter() - t0)
        torch.set_num_threads(threads)
        return statistics.median(times), t.steps_per_epoch, int(cfg["train"]["epochs"])


def commands(py: str, run: Path, seed: int, data: Path, threads: int, overrides: list[str]) -> list[list[str]]:
    """The train, infer and evaluate command lines of one run."""
    train = [py, "-m", "lidarseg", "train", "--config", str(ROOT / DEMO), "--out", str(run), "--seed", str(seed),
             "--quiet", "--data", str(data)]
    for s in [*overrides, f"train.threads={threads}", "data.workers=0", "val.every=0"]:
        train += ["--set", s]
    pred = run / "predictions"
    infer = [py, "-m", "lidarseg", "infer", "--checkpoint", str(run / "last.pt"), "--split", "valid", "--out",
             str(pred), "--knn", "--no-progress", "--overwrite", "--threads", str(threads)]
    evaluate = [py, "-m", "lidarseg", "evaluate", "--data", str(data), "--predictions", str(pred), "--split", "valid",
                "--no-progress", "--json", str(run / "eval.json")]
    return [train, infer, evaluate]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/compare-networks")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--parallel", type=int, default=1, help="training processes at a time")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per process")
    ap.add_argument("--budget-seconds", type=float, default=0.0,
                    help="cap on the training budget per run in seconds of calibrated step time (0: the demo's)")
    ap.add_argument("--only", nargs="*", help="variant names (default: all)")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra override for every run")
    ap.add_argument("--report", help="write the Markdown report here (default: OUT/report.md)")
    args = ap.parse_args(argv)
    from lidarseg.data.synthetic import ensure_dataset
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ensure_dataset(log=lambda *a, **k: None)
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    chosen = {k: v for k, v in variants().items() if not args.only or k in args.only}
    t_demo, spe, demo_epochs = step_seconds(args.extra, args.threads, data)
    budget = demo_epochs * spe * t_demo
    if args.budget_seconds:
        budget = min(budget, args.budget_seconds)
    calib = {"demo": {"step_s": t_demo, "steps_per_epoch": spe, "epochs": demo_epochs}, "budget_s": budget,
             "threads": args.threads, "parallel": args.parallel, "variants": {}}
    for name, ov in chosen.items():
        t_v, spe_v, _ = step_seconds([*ov, *args.extra], args.threads, data)
        epochs = max(1, round(budget / (t_v * spe_v)))
        calib["variants"][name] = {"step_s": t_v, "epochs": epochs, "steps": epochs * spe_v}
        print(f"[compare-networks] {name}: {t_v:.3f} s/step -> {epochs} epochs", flush=True)
    (out / "calibration.json").write_text(json.dumps(calib, indent=1) + "\n")

    jobs = [(name, seed) for name in chosen for seed in args.seeds]
    running: list = []
    while jobs or running:
        while jobs and len(running) < args.parallel:
            name, seed = jobs.pop(0)
            run = out / name / f"seed{seed}"
            run.mkdir(parents=True, exist_ok=True)
            cmds = commands(py, run, seed, data, args.threads,
                            [*chosen[name], *args.extra, f"train.epochs={calib['variants'][name]['epochs']}"])
            log = open(run / "train.log", "w")
            # train, then predict and score, in one background chain per run
            proc = subprocess.Popen(["bash", "-c", " && ".join(shlex.join(c) for c in cmds)], stdout=log,
                                    stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            running.append((name, seed, run, cmds, proc, log, time.perf_counter()))
        time.sleep(2)
        for item in list(running):
            name, seed, run, cmds, proc, log, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            if proc.returncode != 0:
                print(f"[compare-networks] {name} seed {seed} failed; see {run / 'train.log'}", flush=True)
                continue
            meta = {"variant": name, "seed": seed, "seconds_train_infer_eval": round(time.perf_counter() - t0, 1),
                    "epochs": calib["variants"][name]["epochs"], "commands": [shlex.join(c) for c in cmds]}
            (run / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            miou = json.loads((run / "eval.json").read_text()).get("miou")
            print(f"[compare-networks] {name} seed {seed}: {meta['seconds_train_infer_eval']:.0f} s, mIoU {miou}",
                  flush=True)
    report = Path(args.report) if args.report else out / "report.md"
    report.write_text(render(out, calib))
    print(f"[compare-networks] report: {report}")
    return 0


def render(out: Path, calib: dict) -> str:
    """Markdown: per variant the epochs, step time, wall time, mIoU (mean and per seed) and per-class IoU."""
    runs: dict[str, list[dict]] = {}
    for f in sorted(out.glob("*/seed*/eval.json")):
        meta = json.loads((f.parent / "meta.json").read_text())
        runs.setdefault(meta["variant"], []).append({"eval": json.loads(f.read_text()), "meta": meta})
    d = calib["demo"]
    demo_s = d["epochs"] * d["steps_per_epoch"] * d["step_s"]
    lines = [f"Budget: {calib['budget_s']:.0f} s of step time per run (the demo: {d['epochs']} epochs x "
             f"{d['steps_per_epoch']} steps x {d['step_s']:.3f} s = {demo_s:.0f} s); "
             f"{calib['threads']} torch threads per run, {calib['parallel']} runs in parallel.", "",
             "| network | loss | epochs | s/step (calibrated) | wall s, train+infer+eval (mean) "
             "| mIoU % (mean; per seed) |",
             "|---|---|---|---|---|---|"]
    classes: list[str] = []
    for name, rs in runs.items():
        net, loss = name.split("-", 1)
        v = calib["variants"][name]
        mious = [100 * r["eval"]["miou"] for r in rs]
        wall = statistics.fmean(r["meta"]["seconds_train_infer_eval"] for r in rs)
        lines.append(f"| {LABELS.get(net, net)} | {LABELS.get(loss, loss)} | {v['epochs']} | {v['step_s']:.3f} | "
                     f"{wall:.0f} | {statistics.fmean(mious):.1f}; {', '.join(f'{m:.1f}' for m in mious)} |")
        for c in rs[0]["eval"].get("iou", {}):
            if c not in classes:
                classes.append(c)
    lines += ["", "Per-class point IoU % (KNN on, mean over seeds):", "",
              "| class | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for c in classes:
        vals = []
        for rs in runs.values():
            xs = [r["eval"]["iou"].get(c) for r in rs if r["eval"]["iou"].get(c) is not None]
            vals.append(f"{100 * statistics.fmean(xs):.1f}" if xs else "-")
        lines.append(f"| {c} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
