"""Aggregate the loss comparison of scripts/compare_losses.sh into a Markdown report and a Fig.-3-style PNG.

Input: RUNS/<variant>/seed<S>/eval.json (written by `lidarseg evaluate --json`) and meta.json (written by
compare_losses.sh: variant, seed, train_seconds, commands). Output: the report (per-class point IoU per variant as
mean over seeds with min..max spread, mIoU, accuracy, training time) and, when matplotlib is importable, a PNG of the
per-class IoU gain of each subclassified variant over each baseline, classes ordered by frequency, with the class
frequency curve on a log axis.

    python3 scripts/compare_report.py --runs runs/compare --out docs/results-synthetic.md --figure docs/figures/gain.png
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BASELINES = ("ce", "wce")
SUBCLASS = ("subclassified", "subclassified_wce")
LABELS = {"ce": "CE", "wce": "class-weighted CE", "subclassified": "subclassified",
          "subclassified_wce": "subclassified + class weights"}


def load_runs(runs: Path) -> dict:
    """-> {variant: [run dict with 'eval' and 'meta'], ...}, variants in a fixed order."""
    out = {}
    for eval_file in sorted(runs.glob("*/seed*/eval.json")):
        run_dir = eval_file.parent
        meta_file = run_dir / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        meta.setdefault("variant", run_dir.parent.name)
        meta.setdefault("seed", run_dir.name[4:])
        out.setdefault(meta["variant"], []).append({"eval": json.loads(eval_file.read_text()), "meta": meta})
    order = [v for v in BASELINES + SUBCLASS if v in out] + sorted(v for v in out if v not in BASELINES + SUBCLASS)
    return {v: out[v] for v in order}


def summarise(values: list[float]) -> tuple[float, float, float]:
    return statistics.fmean(values), min(values), max(values)


def fmt(values: list[float], scale: float = 100.0) -> str:
    mean, lo, hi = summarise([scale * v for v in values])
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({lo:.1f}..{hi:.1f})"


def class_order(runs: dict) -> tuple[list[str], dict]:
    """Class names ordered by decreasing number of ground-truth points (the same in every run), and the counts."""
    first = next(iter(runs.values()))[0]["eval"]
    points = {name: first["points"][name] for name in first["iou"]}
    return sorted(points, key=lambda n: -points[n]), points


def per_class_means(runs: dict, names: list[str]) -> dict:
    return {v: {n: statistics.fmean(r["eval"]["iou"][n] for r in rs) for n in names} for v, rs in runs.items()}


def markdown(runs: dict) -> str:
    names, points = class_order(runs)
    total = sum(points.values())
    variants = list(runs)
    lines = ["| class | share of val points | " + " | ".join(LABELS.get(v, v) for v in variants) + " |",
             "|---|---:|" + "---:|" * len(variants)]
    for n in names:
        cells = [fmt([r["eval"]["iou"][n] for r in runs[v]]) for v in variants]
        lines.append(f"| {n} | {points[n] / total:.4f} | " + " | ".join(cells) + " |")
    lines.append("| **mIoU** | | " + " | ".join(fmt([r["eval"]["miou"] for r in runs[v]]) for v in variants) + " |")
    lines.append("| accuracy | | " + " | ".join(fmt([r["eval"]["accuracy"] for r in runs[v]]) for v in variants)
                 + " |")
    times = []
    for v in variants:
        secs = [r["meta"]["train_seconds"] for r in runs[v] if "train_seconds" in r["meta"]]
        times.append(f"{statistics.fmean(secs) / 60:.1f} min" if secs else "n/a")
    lines.append("| training time (mean per run) | | " + " | ".join(times) + " |")
    seeds = {v: sorted(str(r["meta"]["seed"]) for r in rs) for v, rs in runs.items()}
    lines.append("")
    lines.append("Seeds per variant: " + "; ".join(f"{LABELS.get(v, v)}: {', '.join(s)}" for v, s in seeds.items())
                 + ". Cells: mean over seeds (min..max). IoU in %, point level, with KNN post-processing.")
    return "\n".join(lines)


def gains(runs: dict) -> list[tuple[str, str, dict]]:
    """(subclass variant, baseline, {class: mean IoU gain}) for every pair present."""
    names, _ = class_order(runs)
    means = per_class_means(runs, names)
    return [(s, b, {n: means[s][n] - means[b][n] for n in names})
            for s in SUBCLASS if s in runs for b in BASELINES if b in runs]


def gain_table(runs: dict) -> str:
    names, _ = class_order(runs)
    pairs = gains(runs)
    if not pairs:
        return ""
    lines = ["| class | " + " | ".join(f"{LABELS[s]} vs {LABELS[b]}" for s, b, _ in pairs) + " |",
             "|---|" + "---:|" * len(pairs)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{100 * g[n]:+.1f}" for _, _, g in pairs) + " |")
    return "\n".join(lines)


def plot_gains(runs: dict, out: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names, points = class_order(runs)
    total = sum(points.values())
    pairs = gains(runs)
    if not pairs:
        return False
    fig, axes = plt.subplots(len(pairs), 1, figsize=(12, 2.6 * len(pairs)), sharex=True, squeeze=False)
    for ax, (s, b, g) in zip(axes[:, 0], pairs):
        vals = [100 * g[n] for n in names]
        ax.bar(range(len(names)), vals, color=["tab:green" if v >= 0 else "tab:red" for v in vals])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("IoU gain (points)")
        ax.set_title(f"{LABELS[s]} over {LABELS[b]} (mean over seeds)", fontsize=10)
        freq = ax.twinx()
        freq.plot(range(len(names)), [points[n] / total for n in names], color="tab:blue", marker=".")
        freq.set_yscale("log")
        freq.set_ylabel("class frequency", color="tab:blue")
    axes[-1, 0].set_xticks(range(len(names)))
    axes[-1, 0].set_xticklabels(names, rotation=45, ha="right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/compare", type=Path)
    p.add_argument("--out", default=None, type=Path, help="write the tables here (Markdown); default: print")
    p.add_argument("--figure", default=None, type=Path, help="PNG of per-class gains")
    args = p.parse_args(argv)
    runs = load_runs(args.runs)
    if not runs:
        print(f"no runs with eval.json under {args.runs}", file=sys.stderr)
        return 1
    text = "## Per-class point IoU (%)\n\n" + markdown(runs) + "\n\n## Per-class gain (IoU points)\n\n" + gain_table(runs)
    if args.figure:
        plot_gains(runs, args.figure)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
